"""params.yaml `lifecycle`: the promotion gate, the monitor's thresholds and the schedule."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateParams(_Strict):
    metric_by_task: dict[str, str] = Field(
        default={
            "binary": "roc_auc",
            "classification": "roc_auc",
            "multiclass": "macro_f1",
            "regression": "normalized_gini",
        },
        description="the metric compared per task (higher is better)",
    )
    metric_by_model: dict[str, str] = Field(
        default_factory=dict, description="a model's own metric, over the task's (e.g. api_anomaly: event_f1)"
    )
    min_improvement: float = Field(
        default=0.002, description="the challenger must beat the champion by at least this much"
    )

    def metric(self, model: str, task: str) -> str:
        return self.metric_by_model.get(model) or self.metric_by_task[task]


class MonitorParams(_Strict):
    window_days: int = Field(default=7, ge=1, description="the live window compared with the reference")
    min_rows: int = Field(default=200, ge=1, description="fewer logged predictions in the window: no verdict")
    drift_share: float = Field(
        default=0.3, gt=0, le=1, description="retrain when at least this share of the features drifted"
    )
    prediction_drift: bool = Field(default=True, description="retrain when the prediction drifted")
    min_precision: float = Field(
        default=0.5, ge=0, le=1, description="retrain when a week's live precision of the flags is below"
    )
    min_recall: float = Field(
        default=0.5, ge=0, le=1, description="retrain when a week's live recall of the flags is below"
    )
    max_auc_drop: float = Field(
        default=0.03, ge=0, description="retrain when a week's live ROC-AUC is this far below the test's"
    )
    min_labelled: int = Field(
        default=30, ge=1, description="live quality needs this many labelled predictions in a week"
    )
    stattest_threshold: float | None = Field(
        default=None, description="Evidently's per-column drift threshold (None: its default per test)"
    )
    reference_rows: int = Field(default=5000, ge=100, description="rows of the training reference kept")


class ScheduleParams(_Strict):
    materialize_cron: str = "15 * * * *"
    monitor_cron: str = "0 6 * * *"
    online_check_s: int = Field(
        default=30, ge=5, description="how often the sensor checks the online store's receipt"
    )
    retries: int = Field(default=3, ge=0)
    retry_delay_s: float = Field(default=30, ge=0)


class LifecycleParams(_Strict):
    gate: GateParams = GateParams()
    monitor: MonitorParams = MonitorParams()
    schedule: ScheduleParams = ScheduleParams()


PARAMS = LifecycleParams
