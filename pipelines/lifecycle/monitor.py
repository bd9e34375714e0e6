"""The monitor: what the served champion sees and how well it does, against what it was trained on.

Signals (thresholds: params.yaml `lifecycle.monitor`), each computed by Evidently (its drift tests and its
classification metrics, not statistics of our own):
- **feature drift**: Evidently's DataDriftPreset over the model's features, the champion's training
  reference (logged with its MLflow run, pipelines/lifecycle/registry.py) against the features the API
  logged in the last `window_days`; the share of drifted features against `drift_share`;
- **prediction drift**: Evidently's ValueDrift of the logged predictions against the model's own
  predictions on the reference;
- **live quality** (binary models): precision and recall of the flags (prediction >= the model's threshold)
  and ROC-AUC of the scores, per week of the prediction, against the outcomes known so far: the latest label of the same entity in
  the model's clean label table (for spam: a confirmed verdict on the caller). A week needs
  `min_labelled` outcomes to count;
- **backtest on arriving labels** (spec'd binary models): the champion scored point-in-time on every
  label that arrived after its training data, per week of the prediction time: the same quality measures,
  for the weeks it has been serving, including callers the request log never saw.
  Quality signals cross when precision or recall falls below its floor, or ROC-AUC falls more than
  `max_auc_drop` below the champion's own test ROC-AUC.

A window with fewer than `min_rows` logged predictions gives no verdict. The result says which signal
crossed which threshold; `retrain` is true when any did. Per model and run, under
``data/monitoring/<model>/``: Evidently's drift report (`<time>.html`), its classification report of the
backtest rows (`<time>_backtest.html`) and the verdict as JSON (`<time>.json`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, inspect, select

from core import model_registry as mr
from core.model_bundle import ModelMetadata, load_metadata
from core.monitoring import monitoring_dir
from core.settings import Settings
from pipelines.lifecycle.params import MonitorParams
from pipelines.lifecycle.registry import PREDICTION, REFERENCE_FILE

log = logging.getLogger(__name__)
DRIFTED_SHARE = "DriftedColumnsCount"


@dataclass
class MonitorResult:
    model: str
    registry_version: str | None
    rows: int
    retrain: bool
    reasons: list[str] = field(default_factory=list)
    drift_share: float | None = None
    drifted_features: list[str] = field(default_factory=list)
    prediction_drift: bool | None = None
    # per column (features and the prediction): Evidently's test, its value, threshold and verdict (dashboard)
    feature_drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    weekly_quality: list[dict[str, Any]] = field(default_factory=list)  # the request log's predictions
    backtest: list[dict[str, Any]] = field(default_factory=list)  # the champion on labels that arrived since
    report: str | None = None  # Evidently's drift report (HTML)
    backtest_report: str | None = None  # Evidently's classification report of the backtest rows (HTML)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str) + "\n"


def logged_predictions(settings: Settings, name: str, since: datetime) -> pd.DataFrame:
    """The request log's rows of `name` since `since`: entity, features, prediction, time, version."""
    from serving.request_log import make_table

    t = make_table(settings.request_log_schema)
    engine = create_engine(settings.effective_request_log_url)
    cols = ["entity_key", "features", PREDICTION, "created_at", "registry_version"]
    try:
        if not inspect(engine).has_table(t.name, schema=t.schema):  # no request served yet
            return pd.DataFrame(columns=cols)
        q = select(t.c.entity_key, t.c.features, t.c.prediction, t.c.created_at, t.c.registry_version).where(
            t.c.model == name, t.c.created_at >= since
        )
        with engine.connect() as conn:
            rows = conn.execute(q).fetchall()
    finally:
        engine.dispose()
    return pd.DataFrame(
        rows, columns=["entity_key", "features", PREDICTION, "created_at", "registry_version"]
    )


def reference(settings: Settings, mv: Any) -> pd.DataFrame | None:
    import mlflow.artifacts

    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id,
            artifact_path=f"monitoring/{REFERENCE_FILE}",
            tracking_uri=settings.effective_mlflow_uri,
        )
    except Exception as e:
        log.warning("%s: no monitoring reference in run %s (%s)", mv.name, mv.run_id, e)
        return None
    return pd.read_parquet(path)


def _drifted(metric: dict[str, Any]) -> bool:
    """Evidently's ValueDrift value is a p-value (drift below the threshold) or a distance (drift at or above)."""
    cfg, value = metric["config"], float(metric["value"])
    threshold = float(cfg["threshold"])
    return value < threshold if "p_value" in str(cfg.get("method", "")) else value >= threshold


def drift(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    meta: ModelMetadata,
    p: MonitorParams,
    exclude: set[str] = frozenset(),
) -> tuple[Any, float, list[str], bool | None]:
    """(Evidently snapshot, share of drifted features, their names, prediction drifted?); the features in
    `exclude` are left out."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    feats = [f for f in meta.feature_names if f not in exclude]
    cats = [f for f in meta.categorical_features if f in ref and f in feats]
    nums = [f for f in feats if f not in cats]
    with_pred = PREDICTION in ref and PREDICTION in cur
    definition = DataDefinition(
        numerical_columns=nums + ([PREDICTION] if with_pred else []), categorical_columns=cats
    )
    cols = feats + ([PREDICTION] if with_pred else [])

    def ds(df: pd.DataFrame) -> Any:
        frame = df[cols].copy()
        for c in cats:
            frame[c] = frame[c].astype("string").fillna("")
        for c in nums + ([PREDICTION] if with_pred else []):
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype(float)
        return Dataset.from_pandas(frame, data_definition=definition)

    metrics: list[Any] = [
        DataDriftPreset(columns=feats, drift_share=p.drift_share, threshold=p.stattest_threshold)
    ]
    if with_pred:
        metrics.append(ValueDrift(column=PREDICTION, threshold=p.stattest_threshold))
    snap = Report(metrics).run(current_data=ds(cur), reference_data=ds(ref))
    out = snap.dict()["metrics"]
    drifted = [
        m["config"]["column"]
        for m in out
        if m["config"]["type"].endswith("ValueDrift") and m["config"]["column"] in feats and _drifted(m)
    ]
    share = next(float(m["value"]["share"]) for m in out if DRIFTED_SHARE in m["metric_name"])
    pred = next(
        (
            _drifted(m)
            for m in out
            if m["config"]["type"].endswith("ValueDrift") and m["config"]["column"] == PREDICTION
        ),
        None,
    )
    return snap, share, drifted, pred


def column_tests(snap: Any) -> dict[str, dict[str, Any]]:
    """Each column's drift test of an Evidently snapshot: method, value, threshold, drifted."""
    out = {}
    for m in snap.dict()["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            out[cfg["column"]] = {
                "method": str(cfg.get("method", "")),
                "value": float(m["value"]),
                "threshold": float(cfg["threshold"]),
                "drifted": _drifted(m),
            }
    return out


def backtest(
    settings: Settings, mv: Any, p: MonitorParams
) -> tuple[list[dict[str, Any]], pd.DataFrame | None]:
    """The champion on the labels that arrived after its training data (prediction times later than its
    run's ``labels_until`` tag), each row with the features as of its prediction time (Feast's
    point-in-time join on the champion's own FeatureService): its quality per week of the prediction time,
    i.e. how it did on the weeks it has been serving, as far as verdicts are known; and the scored rows.
    Spec'd binary models."""
    from core.layout import Layout
    from core.model_bundle import load_bundle
    from core.predict import predict
    from core.spec import find_spec
    from pipelines.tabular.ingest import PREDICTION_TIME
    from pipelines.tabular.training_set import point_in_time

    until = (mv.tags or {}).get("labels_until")
    try:
        layout = Layout.of(settings, mv.name, find_spec(settings.specs_dir, mv.name))
    except Exception:
        return [], None
    spec = layout.spec
    if until is None or spec.label.task != "binary" or not layout.labels.exists():
        return [], None
    lab = pd.read_parquet(layout.labels)
    lab = lab[lab[spec.label.column].notna() & (lab[PREDICTION_TIME] > pd.Timestamp(until))]
    if lab.empty:
        return [], None
    model, meta = load_bundle(mr.fetch_bundle(settings, mv))
    key = spec.entity.join_key
    rows = point_in_time(settings, meta.feature_service, lab[[key, PREDICTION_TIME]].reset_index(drop=True))
    df = pd.DataFrame(
        {PREDICTION: predict(model, meta, rows), "actual": lab[spec.label.column].astype(int).to_numpy()}
    )
    return weekly_quality(df, pd.Series(lab[PREDICTION_TIME].to_numpy()), meta, p), df


def growing_features(settings: Settings, name: str) -> set[str]:
    """A spec'd model's history features (running totals and counts): they grow with time by construction,
    so their distribution moves from the reference's without anything having changed. Left out of the
    drift test; a change of behaviour shows in the weekly values and in the live quality."""
    from core.spec import find_spec

    try:
        spec = find_spec(settings.specs_dir, name)
    except Exception:
        return set()
    out = set()
    for s in spec.sources:
        h = s.history
        if h is not None:
            out |= {c for c in s.derived_columns if c.endswith(("_total", "_rows"))} | ({h.rows} - {None})
    return out  # the shares and per-row rates stay in: they do not grow with time


def outcomes(settings: Settings, name: str) -> pd.DataFrame | None:
    """entity id -> the latest known label, from a spec'd model's clean label table (None otherwise)."""
    from core.layout import Layout
    from core.spec import find_spec
    from pipelines.tabular.ingest import PREDICTION_TIME

    try:
        layout = Layout.of(settings, name, find_spec(settings.specs_dir, name))
    except Exception:
        return None
    if not layout.labels.exists() or layout.spec.label.task != "binary":
        return None
    spec = layout.spec
    lab = pd.read_parquet(layout.labels)
    lab = lab[lab[spec.label.column].notna()].sort_values(PREDICTION_TIME)
    last = lab.groupby(spec.entity.join_key, sort=False).tail(1)
    return pd.DataFrame(
        {
            "entity": last[spec.entity.join_key].astype(str).to_numpy(),
            "actual": last[spec.label.column].astype(int),
        }
    )


def _quality(frame: pd.DataFrame, **columns: str) -> dict[str, float]:
    """Evidently's ClassificationQuality of one binary definition: {metric type: value}."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationQuality

    definition = DataDefinition(classification=[BinaryClassification(target="target", **columns)])
    snap = Report([ClassificationQuality()]).run(
        current_data=Dataset.from_pandas(frame, data_definition=definition)
    )
    return {m["config"]["type"].rsplit(":", 1)[-1]: float(m["value"]) for m in snap.dict()["metrics"]}


def quality_report(scored: pd.DataFrame) -> Any:
    """Evidently's ClassificationPreset (ROC and PR curves, calibration, confusion at 0.5) of scored rows."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    frame = pd.DataFrame({"target": scored["actual"].astype(int), "score": scored[PREDICTION].astype(float)})
    definition = DataDefinition(
        classification=[BinaryClassification(target="target", prediction_probas="score")]
    )
    return Report([ClassificationPreset()]).run(
        current_data=Dataset.from_pandas(frame, data_definition=definition)
    )


def live_quality(
    cur: pd.DataFrame, truth: pd.DataFrame, meta: ModelMetadata, p: MonitorParams
) -> list[dict[str, Any]]:
    """Per week of the prediction, against the known outcomes: precision and recall of the flags at the
    model's threshold, and ROC-AUC of the scores (Evidently's ClassificationQuality; two definitions,
    because given probabilities Evidently flags at its own 0.5)."""
    key = meta.join_keys[0]
    df = cur.assign(entity=cur["entity_key"].map(lambda k: str(k.get(key)))).merge(truth, on="entity")
    return weekly_quality(df, pd.to_datetime(df["created_at"], utc=True), meta, p)


def weekly_quality(
    df: pd.DataFrame, when: pd.Series, meta: ModelMetadata, p: MonitorParams
) -> list[dict[str, Any]]:
    """Per week of `when`: the quality of `df[PREDICTION]` against `df["actual"]`."""
    threshold = float(meta.extra.get("threshold", 0.5))
    df = df.assign(week=when.dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time.to_numpy())
    out = []
    for week, g in df.groupby("week"):
        row: dict[str, Any] = {"week": str(week.date()), "labelled": len(g)}
        if len(g) >= p.min_labelled and g["actual"].nunique() == 2:
            frame = pd.DataFrame(
                {
                    "target": g["actual"].astype(int).to_numpy(),
                    "flag": (g[PREDICTION] >= threshold).astype(int).to_numpy(),
                    "score": g[PREDICTION].astype(float).to_numpy(),
                }
            )
            flags = _quality(frame[["target", "flag"]], prediction_labels="flag")
            scores = _quality(frame[["target", "score"]], prediction_probas="score")
            row |= {
                "precision": round(flags["Precision"], 6),
                "recall": round(flags["Recall"], 6),
                "roc_auc": round(scores["RocAuc"], 6),
            }
        out.append(row)
    return out


def monitor(
    settings: Settings,
    name: str,
    p: MonitorParams | None = None,
    now: datetime | None = None,
    since: datetime | None = None,
) -> MonitorResult:
    """The verdict on `name`'s champion over the predictions logged from `since` (default: `window_days`
    before `now`)."""
    p = p or MonitorParams()
    now = now or datetime.now(UTC)
    mv = mr.version_by_alias(settings, name, mr.CHAMPION) if mr.store_exists(settings) else None
    if mv is None:
        return MonitorResult(name, None, 0, False, ["no champion in the registry: nothing to monitor"])
    meta = load_metadata(mr.fetch_bundle(settings, mv))
    cur = logged_predictions(settings, name, since or now - timedelta(days=p.window_days))
    res = MonitorResult(name, str(mv.version), len(cur), False)
    if len(cur) < p.min_rows:
        res.reasons.append(
            f"{len(cur)} logged predictions in {p.window_days} days (< {p.min_rows}): no verdict"
        )
        return res
    feats = pd.DataFrame(list(cur["features"]))
    for f in meta.feature_names:
        if f not in feats:
            feats[f] = np.nan
    live = feats[meta.feature_names].assign(**{PREDICTION: cur[PREDICTION].to_numpy()})
    ref = reference(settings, mv)
    snap = None
    if ref is not None:
        snap, res.drift_share, res.drifted_features, res.prediction_drift = drift(
            ref, live, meta, p, growing_features(settings, name)
        )
        res.feature_drift = column_tests(snap)
        if res.drift_share >= p.drift_share:
            res.reasons.append(
                f"feature drift: {res.drift_share:.0%} of the features drifted (>= {p.drift_share:.0%}): "
                f"{res.drifted_features}"
            )
        if p.prediction_drift and res.prediction_drift:
            res.reasons.append("prediction drift: the predictions' distribution moved from the reference's")
    truth, scored = outcomes(settings, name), None
    if truth is not None and meta.task in {"binary", "classification"}:
        res.weekly_quality = live_quality(cur, truth, meta, p)
        res.backtest, scored = backtest(settings, mv, p)
        tested = _run_metric(settings, mv, "roc_auc")
        floors = {"precision": p.min_precision, "recall": p.min_recall}
        if tested is not None:
            floors["roc_auc"] = tested - p.max_auc_drop
        for what, weeks in (("live", res.weekly_quality), ("backtest", res.backtest)):
            for k, low in floors.items():
                bad = [w for w in weeks if k in w and w[k] < low]
                if bad:
                    worst = min(bad, key=lambda w: w[k])
                    why = (
                        f" (the champion's test ROC-AUC {tested:.3f} - {p.max_auc_drop})"
                        if k == "roc_auc"
                        else ""
                    )
                    res.reasons.append(
                        f"{what} {k} below {low:.3f}{why} in {len(bad)} of {sum(k in w for w in weeks)} weeks, "
                        f"lowest {worst[k]:.3f} in the week of {worst['week']}"
                    )
    res.retrain = bool(res.reasons)
    out_dir = monitoring_dir(settings, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%S")
    if snap is not None:
        html = out_dir / f"{stamp}.html"
        snap.save_html(str(html))
        res.report = str(html)
    if scored is not None and scored["actual"].nunique() == 2:
        html = out_dir / f"{stamp}_backtest.html"
        quality_report(scored).save_html(str(html))
        res.backtest_report = str(html)
    (out_dir / f"{stamp}.json").write_text(res.to_json())
    log.info("%s monitor: retrain=%s %s", name, res.retrain, res.reasons or "all signals within thresholds")
    return res


def _run_metric(settings: Settings, mv: Any, key: str) -> float | None:
    value = mr.client(settings).get_run(mv.run_id).data.metrics.get(key)
    return None if value is None else float(value)
