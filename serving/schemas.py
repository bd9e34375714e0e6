"""Request and response bodies of the scoring API (separate from the request-log table)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

MAX_BATCH = 1000  # ids per /predict request
MAX_BODY_BYTES = {"batch": 256 * 2**20, "default": 2 * 2**20}  # request bodies: /batch, the others

Scalar = str | int | float | bool | None


def as_int64(v: object) -> int | None:
    """`v` as a 64-bit signed key, as the stores keep it: an integer, or a number without a fraction (JSON
    Schema calls 1151.0 an integer too); None for anything else, booleans included."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63:
        return v
    return None


class PredictRequest(BaseModel):
    """Columnar, like Feast's feature server: ids under their join key, optional feature values aligned."""

    model_config = ConfigDict(extra="forbid")

    entities: dict[str, list[StrictInt | StrictFloat | StrictStr]] = Field(  # strict: true is not the id 1
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
    prediction: float | None = Field(description="null when the model cannot score the id (e.g. no state)")
    found_in_online_store: bool = Field(description="any stored feature for this id")
    features_as_of: datetime | None = Field(description="latest event time among the stored features used")
    feature_age_seconds: float | None = Field(description="now - features_as_of")
    feature_timestamps: dict[str, datetime | None] = Field(description="feature view -> event time used")
    point_in_time: datetime | None = Field(
        default=None,
        description="set when the request asked about a time before the online store's row (e.g. a band "
        "check of a past date): the stored features are those as of this time, read point-in-time from "
        "the offline store (their event times are then unknown: null); null: the online store's latest",
    )
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
    """Every error the API answers, whatever its status."""

    detail: str = Field(description="what is wrong, in a sentence")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="a malformed request's problems, one per field (422 only)"
    )
