"""The api_anomaly section of params.yaml. Every knob of every api_anomaly stage is declared here."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from domain.api_anomaly import schema as S


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


WARMUP_DAYS = 14  # no anomaly starts in the first two weeks: every detector has some history first


class GenerateParams(_P):
    seed: int
    start: date = Field(description="first day of the log")
    end: date = Field(description="last day of the log (inclusive); later end = longer period")
    n_countries: int = Field(ge=10, le=230, description="countries in the log, Zipf-spread volumes")
    os: list[str] = Field(min_length=2, description="operating systems (canonical values, schema.OS_VALUES)")
    daily_requests: int = Field(gt=0, description="total requests per day over all segments at `start`")
    zipf_exponent: float = Field(gt=0, description="country volume ~ rank^-exponent")
    evaluation_days: int = Field(gt=0, description="the last N days: the window detection is evaluated on")
    earlier_anomalies_per_week: float = Field(
        ge=0, description="anomalies planted per week before the evaluation window (threshold tuning)"
    )
    evaluation_anomalies: int = Field(ge=0, description="anomalies planted in the evaluation window")
    hard_share: float = Field(
        ge=0, le=1, description="share of hard anomalies; the rest split obvious/moderate"
    )
    label_min_effect: float = Field(
        gt=0, lt=1, description="a point is labeled anomalous when the anomaly moves it by at least this much"
    )
    n_launches: int = Field(ge=0, description="segments that start mid-period and ramp up (not anomalies)")
    defect_rate: float = Field(ge=0, lt=0.2, description="share of rows spoiled on purpose (defects.csv)")
    bursty_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of the countries (beyond the top 5) whose traffic is bursty: heavy-tailed swings of"
        " tens of percent (social-media, marketing-driven); segments.csv says which",
    )

    @field_validator("os")
    @classmethod
    def _known_os(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(S.OS_VALUES))
        if unknown:
            raise ValueError(f"unknown os {unknown}: expected values of {list(S.OS_VALUES)}")
        if len(set(v)) != len(v):
            raise ValueError(f"os lists a value twice: {v}")
        if not {S.ANDROID, S.IOS} <= set(v):
            raise ValueError("os must include android and ios (every country has them)")
        return v

    @model_validator(mode="after")
    def _period_fits(self) -> GenerateParams:
        days = (self.end - self.start).days + 1
        if days < WARMUP_DAYS + 14 + self.evaluation_days:
            raise ValueError(
                f"the period ({days} days) must hold {WARMUP_DAYS} warm-up days, at least 14 earlier days "
                f"with anomalies and the {self.evaluation_days}-day evaluation window"
            )
        return self

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


class IngestParams(_P):
    raw_dir: str = Field(description="folder with api_counts.csv|.parquet")
    start: date | None = Field(description="first day of the export's period; earlier rows are quarantined")
    end: date | None = Field(description="last day of the export's period; later rows are quarantined")
    max_count: int = Field(
        gt=0, description="hard ceiling: no country/OS makes more requests in a day (absurd above)"
    )
    max_ratio_to_median: float = Field(
        gt=1, description="absurd: a count above this many times its segment's median day"
    )
    median_floor: float = Field(
        gt=0, description="a segment's median is taken as at least this (tiny segments jump a lot)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> IngestParams:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"ingest period: start {self.start} is after end {self.end}")
        return self


class DetectParams(_P):
    evaluation_days: int = Field(
        gt=0, description="the last days, where detectors are evaluated, never tuned"
    )
    warmup_days: int = Field(ge=7, description="history before the first tuning day (detectors need it)")
    alarms_per_series_month: float = Field(
        gt=0,
        lt=30,
        description="without labels: the threshold is calibrated so that ordinary days would raise this many"
        " false alarms per series per month (the scores' own tail; with labels the threshold is tuned)",
    )
    min_history_days: int = Field(
        ge=7, description="a series is scored once it has this many days of history"
    )
    short_history_days: int | None = Field(
        ge=28,
        description="with labels: also measure the detector on the counts cut to their last N days, labels"
        " hidden (metrics short_history_*; null: not measured)",
    )
    level_days: int = Field(ge=3, description="seasonal detector: recent level = median of these days")
    weeks: int = Field(ge=2, description="seasonal detector: weekday effects from these many weeks")
    mad_days: int = Field(ge=7, description="seasonal detector: residual scale from these days")
    holiday_min_effect: float = Field(
        ge=0, lt=1, description="calendar holidays with a smaller expected dip are ordinary days"
    )
    mask_z: float | None = Field(
        gt=0,
        description="seasonal detector: days scoring beyond this (the one-day score or the drift evidence,"
        " whichever is stronger) stop feeding the baseline (null: never)",
    )
    max_mask_days: int = Field(ge=1, description="... for at most this many days in a row (then: new normal)")
    memory_days: int | None = Field(
        ge=7,
        description="seasonal detector: a count the median level of these past days has seen is not anomalous"
        " (a return to normal after a learned shift; null: no memory)",
    )
    pool_own_weight: float | None = Field(
        ge=0,
        le=1,
        description="seasonal detector: weight of a segment's own weekday effects; the rest from its country's"
        " weekly pattern x its OS's sensitivity (null: own only)",
    )
    scale_prior_days: float | None = Field(
        gt=0,
        description="seasonal detector: a segment's residual scale is shrunk towards its volume's as if the"
        " prior were worth this many days of residuals (null: own scale only)",
    )
    broad_share: float | None = Field(
        gt=0,
        le=1,
        description="hierarchy: a country total lifts a segment only if the total without any one other OS"
        " still moved by this share of its move (null: always)",
    )
    max_boost: float = Field(
        ge=1,
        description="hierarchy: a parent total lifts a segment's score to at most this many times its own",
    )
    drift_days: int | None = Field(
        ge=2,
        description="seasonal detector: a sustained move is scored from the mean deviation of this many days"
        " from the memory level (null: one-day evidence only)",
    )
    drift_clip: float = Field(gt=0, description="... each day's deviation counting at most this many scales")
    group_holidays: bool = Field(
        description="seasonal detector: on a holiday a series is expected as deep as its country's other OS dip"
        " (false: only spikes and drops deeper than any holiday's are scored)"
    )


class ApiAnomalyParams(_P):
    generate: GenerateParams
    ingest: IngestParams
    detect: DetectParams


PARAMS = ApiAnomalyParams  # the class of params.yaml's `api_anomaly` section (pipelines/common/params.py)
