"""The game_ltv section of params.yaml: the generator's and preparation's knobs (the model's are in
specs/game_ltv.yaml)."""

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


class PrepareParams(_P):
    raw_dir: str = Field(
        description="folder with users.csv|users.parquet and optionally activity.parquet|.csv"
    )
    counts_observed_hours: int = Field(gt=0, description="hours counted by the users file's event columns")
    prediction_hours: int = Field(gt=0, description="predict this many hours after install")
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


class GameLtvParams(_P):
    generate: GenerateParams
    prepare: PrepareParams


PARAMS = GameLtvParams  # the class of params.yaml's `game_ltv` section (pipelines/common/params.py)
