"""Request and response bodies of the scoring API (separate from the request-log table)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_BATCH = 1000

Scalar = str | int | float | bool | None


class PredictRequest(BaseModel):
    """Columnar, like Feast's feature server: ids under their join key, optional feature values aligned."""

    model_config = ConfigDict(extra="forbid")

    entities: dict[str, list[int | str]] = Field(
        description='Join key -> ids to score, e.g. {"user_id": [10000001, 10000002]}',
        examples=[{"user_id": [10000001]}],
    )
    features: dict[str, list[Scalar]] | None = Field(
        default=None,
        description="Optional feature values, aligned with the ids (null = use the stored value). A sent "
        "value wins over the stored one; stored values fill what is not sent; a feature in neither is "
        "missing (the model treats it as missing).",
        examples=[{"country": ["US"], "platform": ["ios"], "event_1": [12]}],
    )


class Reason(BaseModel):
    feature: str
    value: Scalar
    contribution: float = Field(description="SHAP contribution to the raw score (log-odds for classifiers)")
    text: str


class Prediction(BaseModel):
    entity: dict[str, int | str]
    prediction: float
    found_in_online_store: bool = Field(description="any stored feature for this id")
    features_as_of: datetime | None = Field(description="latest event time among the stored features used")
    feature_age_seconds: float | None = Field(description="now - features_as_of")
    feature_timestamps: dict[str, datetime | None] = Field(description="feature view -> event time used")
    features_from_request: list[str] = Field(description="features whose value came from the request")
    missing_features: list[str] = Field(description="features in neither the request nor the store")
    segment: str | None = Field(
        default=None, description="the model's segment for this prediction (models that define segments)"
    )
    reasons: list[Reason] | None = Field(
        default=None, description="strongest risk-raising features, in words (models that explain)"
    )


class PredictResponse(BaseModel):
    request_id: str
    model: str
    model_version: str
    registry_version: str | None = Field(
        default=None, description="the model registry's version that answered (null: served from its folder)"
    )
    predictions: list[Prediction]


class ModelInfo(BaseModel):
    name: str
    version: str
    task: str
    label: str
    entity: str
    join_keys: list[str]
    feature_service: str
    features: list[dict[str, Any]]
    prediction_type: str
    created_at: str
    training_data_hash: str
    metrics: dict[str, Any]
    extra: dict[str, Any]
    served: dict[str, str] = Field(
        description="what is served: the registry's version, its run, alias and FeatureService, or the folder"
    )


class ErrorBody(BaseModel):
    detail: str
