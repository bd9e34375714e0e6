"""The game_ltv section of params.yaml. Every knob of every game_ltv stage is declared here."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerateParams(_P):
    seed: int
    n_users: int = Field(gt=0)
    chunk_size: int = Field(gt=0)
    first_user_id: int
    start: str  # first install day (ISO date); the data's "now" is start + install_days
    install_days: int = Field(gt=7)
    activity_hours: int = Field(gt=0, description="hours of hourly activity logged after install")
    counts_observed_hours: int = Field(gt=0, description="event_1..3 in users.csv count this many hours")
    defect_rate: float = Field(ge=0, lt=0.5)


class IngestParams(_P):
    raw_dir: str = Field(
        description="folder with users.csv|users.parquet and optionally activity.parquet|.csv"
    )
    counts_observed_hours: int = Field(gt=0, description="hours counted by the users file's event columns")
    assumed_install_time: str | None = Field(
        default=None,
        description=(
            "used only when the users file has no install_time column: the one install time every user "
            "is given (ISO-8601, UTC if no offset), i.e. the export's time minus counts_observed_hours; "
            "null: schema.DEFAULT_ASSUMED_INSTALL_TIME"
        ),
    )

    @field_validator("assumed_install_time", mode="before")
    @classmethod
    def _iso_8601(cls, v: object) -> object:
        if isinstance(v, date):  # an unquoted YAML timestamp or date arrives parsed
            v = v.isoformat()
        if isinstance(v, str):
            try:
                datetime.fromisoformat(v)
            except ValueError as e:
                raise ValueError(f"assumed_install_time {v!r} is not an ISO-8601 timestamp") from e
        return v


class TrainingSetParams(_P):
    feature_service: str
    prediction_hours: int = Field(gt=0, description="predict this many hours after install")
    test_fraction: float = Field(
        gt=0,
        lt=1,
        description="latest install cohorts held out for testing (a seeded random share if install times are assumed)",
    )
    validation_fraction: float = Field(
        gt=0, lt=1, description="latest part of the train cohorts, early stopping"
    )


class TrainParams(_P):
    seed: int
    loss_function: str
    iterations: int
    learning_rate: float
    depth: int
    l2_leaf_reg: float
    early_stopping_rounds: int
    thread_count: int
    linear_alpha: float


class EvaluateParams(_P):
    n_bins: int = Field(ge=2)
    gini_target_vs_oracle: float


class GameLtvParams(_P):
    generate: GenerateParams
    ingest: IngestParams
    training_set: TrainingSetParams
    train: TrainParams
    evaluate: EvaluateParams


PARAMS = GameLtvParams  # the class of params.yaml's `game_ltv` section (pipelines/common/params.py)
