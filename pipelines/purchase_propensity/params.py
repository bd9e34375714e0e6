"""The purchase_propensity section of params.yaml. Every knob of every purchase_propensity stage is here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerateParams(_P):
    seed: int
    n_customers: int = Field(gt=0)
    first_customer_id: int = Field(description="ids from here on (disjoint from the other models' customers)")
    start: str = Field(description="first day of the browsing period (ISO date); history is the year before")
    days: int = Field(gt=0, description="length of the browsing period")
    sessions_per_customer: float = Field(gt=0, description="mean sessions per customer in the period")
    purchases_per_month: float = Field(gt=0, description="mean purchase rate over customers")
    defect_rate: float = Field(ge=0, lt=0.2, description="share of events spoiled or re-sent on purpose")


class FeaturesParams(_P):
    raw_dir: str = Field(
        description="customers.parquet, purchases.parquet and events.jsonl (yours or generated)"
    )


class TrainingSetParams(_P):
    feature_service: str
    cuts_per_session: int = Field(ge=1, description="random cut points per session (distinct page views)")
    test_days: int = Field(gt=0, description="sessions starting in the period's last days: the hold-out")
    seed: int


class TrainParams(_P):
    seed: int
    iterations: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    depth: int = Field(ge=1, le=12)
    early_stopping_rounds: int = Field(gt=0)
    validation_fraction: float = Field(
        gt=0, lt=0.5, description="customers held out of fitting for early stopping"
    )
    thread_count: int = Field(ge=1)


class PurchasePropensityParams(_P):
    generate: GenerateParams
    features: FeaturesParams
    training_set: TrainingSetParams
    train: TrainParams


PARAMS = PurchasePropensityParams  # the class of params.yaml's `purchase_propensity` section (pipelines/common/params.py)
