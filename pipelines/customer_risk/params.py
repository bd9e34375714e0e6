"""The customer_risk section of params.yaml. Every knob of every customer_risk stage is declared here."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerateParams(_P):
    seed: int
    n_labeled: int = Field(gt=0, description="customers with a final account state (reviewed)")
    n_unlabeled: int = Field(ge=0, description="customers for inference, same structure, no label")
    chunk_size: int = Field(gt=0, description="customers generated per vectorized chunk")
    first_customer_id: int = Field(gt=0)
    start: date = Field(description="first day of the transaction history (midnight UTC)")
    history_days: int = Field(
        gt=120, description="the data's 'now' (extraction time) is start + history_days, midnight UTC"
    )
    review_weeks: int = Field(
        gt=0, description="labeled customers are reviewed on one of the last N weekly dates before now"
    )
    target_prevalence: float = Field(gt=0, lt=0.5, description="P(SUSPENDED) in the labeled cohort")
    calibration_customers: int = Field(
        gt=0, description="size of the separate sample the oracle's intercept is tuned on"
    )
    defect_rate: float = Field(ge=0, lt=0.2)

    @model_validator(mode="after")
    def _reviews_fit_history(self) -> GenerateParams:
        if self.review_weeks * 7 + 90 > self.history_days:
            raise ValueError("review_weeks * 7 + 90 must not exceed history_days (90 d of evidence)")
        return self


class IngestParams(_P):
    raw_dir: str = Field(description="folder with labeled/ and unlabeled/ customers + transactions")
    extracted_at: str | None = Field(
        default=None,
        description="when the export was taken (ISO-8601, UTC); null: read <raw_dir>/extract.json",
    )


class FeaturesParams(_P):
    snapshot_every_days: int = Field(gt=0, description="regular as-of snapshots, back from the extraction")


class TrainingSetParams(_P):
    feature_service: str
    test_fraction: float = Field(gt=0, lt=0.5)
    seed: int


class TunedParams(_P):
    """The hyperparameters the train stage uses, as the search (`train --tune`) found them."""

    depth: int = Field(ge=1, le=16)
    learning_rate: float = Field(gt=0, le=1)
    l2_leaf_reg: float = Field(ge=0)
    random_strength: float = Field(ge=0)
    bagging_temperature: float = Field(ge=0)
    auto_class_weights: Literal["None", "SqrtBalanced", "Balanced"]
    iterations: int = Field(gt=0, description="trees: the median best iteration over the search's folds")
    training_set_sha256: str | None = Field(
        default=None, description="the training set the search ran on (a warning when it is another one)"
    )
    trials: list[dict[str, Any]] = Field(
        default_factory=list, description="the search's trials (number, state, value, params), for the report"
    )

    def catboost(self) -> dict[str, Any]:
        """The searched CatBoost parameters, in the search's order (without the number of trees)."""
        return {
            "depth": self.depth,
            "learning_rate": self.learning_rate,
            "l2_leaf_reg": self.l2_leaf_reg,
            "random_strength": self.random_strength,
            "bagging_temperature": self.bagging_temperature,
            "auto_class_weights": self.auto_class_weights,
        }


class TrainParams(_P):
    seed: int
    n_trials: int = Field(gt=0, description="Optuna trials (the search, `train --tune`, only)")
    tune_folds: int = Field(ge=2, description="stratified folds per trial (the search only)")
    cv_folds: int = Field(ge=2)
    max_iterations: int = Field(gt=0, description="trees per trial fit, early-stopped (the search only)")
    early_stopping_rounds: int = Field(gt=0, description="(the search only)")
    thread_count: int
    max_reasons: int = Field(gt=0, description="reasons quoted per customer")
    tuned: TunedParams | None = Field(
        default=None,
        description="what the train stage fits with: no search in `make repro` (`make tune-customer-risk` writes it)",
    )


class SegmentParams(_P):
    medium: float = Field(gt=0, lt=1, description="calibrated probability from which a customer is Medium")
    high: float = Field(gt=0, lt=1, description="... and High")

    @model_validator(mode="after")
    def _ordered(self) -> SegmentParams:
        if not self.medium < self.high:
            raise ValueError(f"segments: medium ({self.medium}) must be below high ({self.high})")
        return self

    def as_list(self) -> list[dict[str, float | str]]:
        return [
            {"name": "Low", "min": 0.0},
            {"name": "Medium", "min": self.medium},
            {"name": "High", "min": self.high},
        ]


class EvidenceRule(_P):
    feature: str
    at_least: float
    text: str = Field(description="why this evidence matters, in words")


class OffboardingParams(_P):
    segment: str = Field(description="customers in this segment are candidates")
    evidence: list[EvidenceRule] = Field(description="transaction evidence that can back the model")
    min_evidence: int = Field(ge=1, description="a candidate is off-boarded when this many rules hold")
    always_above: float = Field(
        gt=0, le=1, description="off-boarded on the model alone from this probability"
    )
    review_capacity: int = Field(gt=0, description="cases the compliance team can review per cycle")
    loss_if_missed_eur: float = Field(gt=0, description="expected cost of keeping a customer who is risky")
    review_cost_eur: float = Field(gt=0, description="cost of one enhanced due-diligence review")


class CustomerRiskParams(_P):
    generate: GenerateParams
    ingest: IngestParams
    features: FeaturesParams
    training_set: TrainingSetParams
    train: TrainParams
    segments: SegmentParams
    offboarding: OffboardingParams


PARAMS = CustomerRiskParams  # the class of params.yaml's `customer_risk` section (pipelines/common/params.py)
