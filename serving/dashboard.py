"""What the monitoring dashboard shows for one model, as JSON (``GET /v1/models/{name}/monitoring``):

- **traffic**: requests, latency percentiles and the predictions' percentiles per hour (per day beyond
  three days), from the request log;
- **drift**: the monitor's verdicts over time (share of drifted features, retrain asked) and the latest
  one's per-feature drift tests against the training reference (Evidently's, computed by the monitor:
  pipelines/lifecycle/monitor.py);
- **backtest**: the champion's hold-out predictions next to the outcomes (the ``score`` stage's file),
  by week of prediction time: predicted vs actual, and for a binary model precision, recall and false
  positives at the operating threshold, plus calibration; the monitor's live quality per week where labels
  have arrived for logged predictions;
- **kpis**: the spec's ``kpi`` section (e.g. offers made, accepted offers, the arrears balance they cover);
  for a hand-written model, its outcome table declared in ``OUTCOME_KPIS`` (customer_risk: reviews and
  confirmed off-boardings per week).

Everything is read from files and tables other parts write; nothing here trains or scores.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, inspect, select

from core.layout import Layout
from core.monitoring import monitoring_dir
from core.settings import Settings
from core.spec import Spec, SpecError, find_spec
from serving.models import LoadedModel
from serving.request_log import make_table

MAX_ROWS = 500_000  # request-log rows read per page view (the newest)
HISTORY = 60  # monitor verdicts shown


def _clean(values: Any) -> list[Any]:
    """JSON-safe list: NaN and infinities become null."""
    out = []
    for v in values:
        if isinstance(v, (float, np.floating)):
            out.append(float(v) if np.isfinite(v) else None)
        elif isinstance(v, np.integer):
            out.append(int(v))
        else:
            out.append(v)
    return out


def traffic(settings: Settings, name: str, days: int) -> dict[str, Any]:
    t = make_table(settings.request_log_schema)
    since = datetime.now(UTC) - timedelta(days=days)
    engine = create_engine(settings.effective_request_log_url)
    try:
        if not inspect(engine).has_table(t.name, schema=t.schema):
            return {"note": "no request logged yet"}
        q = (
            select(t.c.created_at, t.c.request_id, t.c.latency_ms, t.c.prediction)
            .where(t.c.model == name, t.c.created_at >= since)
            .order_by(t.c.created_at.desc())
            .limit(MAX_ROWS)
        )
        with engine.connect() as conn:
            rows = conn.execute(q).fetchall()
    finally:
        engine.dispose()
    if not rows:
        return {"note": f"no request for {name} in the last {days} days"}
    df = pd.DataFrame(rows, columns=["created_at", "request_id", "latency_ms", "prediction"])
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True)
    span = df["created_at"].max() - df["created_at"].min()
    bucket = "h" if span <= pd.Timedelta(days=3) else "D"
    df["t"] = df["created_at"].dt.floor(bucket)
    per_request = df.drop_duplicates("request_id")  # latency is per request, repeated on each of its rows
    g = per_request.groupby("t")["latency_ms"]
    p = df.groupby("t")["prediction"]
    out = pd.DataFrame(
        {
            "requests": g.size(),
            "latency_p50_ms": g.quantile(0.5),
            "latency_p99_ms": g.quantile(0.99),
            "rows": p.size(),
            "prediction_p10": p.quantile(0.1),
            "prediction_p50": p.quantile(0.5),
            "prediction_p90": p.quantile(0.9),
        }
    ).sort_index()
    return {
        "bucket": "hour" if bucket == "h" else "day",
        "t": [ts.isoformat() for ts in out.index],
        **{c: _clean(out[c]) for c in out.columns},
        "truncated": len(rows) == MAX_ROWS,
    }


def drift(settings: Settings, name: str) -> dict[str, Any]:
    files = sorted(monitoring_dir(settings, name).glob("*.json"))[-HISTORY:]
    history, latest = [], None
    for f in files:
        try:
            stamp = datetime.strptime(f.stem, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
            v = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # being written, or not a verdict
        history.append(
            {
                "time": stamp.isoformat(),
                "drift_share": v.get("drift_share"),
                "retrain": bool(v.get("retrain")),
                "prediction_drift": v.get("prediction_drift"),
                "rows": v.get("rows"),
            }
        )
        latest = {k: v.get(k) for k in ("reasons", "drift_share", "drifted_features", "feature_drift",
                                        "prediction_drift", "weekly_quality", "backtest", "rows",
                                        "registry_version")}  # fmt: skip
        latest["time"] = stamp.isoformat()
    if not history:
        return {"note": "no monitor run yet (make monitor, or the scheduler's daily monitor job)"}
    return {"history": history, "latest": latest}


def _spec(settings: Settings, name: str) -> Spec | None:
    try:
        return find_spec(settings.specs_dir, name)
    except SpecError:
        return None


def _weekly(df: pd.DataFrame, time_col: str) -> pd.Series:
    return pd.to_datetime(df[time_col], utc=True).dt.tz_localize(None).dt.to_period("W-SUN").dt.start_time


def backtest(settings: Settings, m: LoadedModel) -> tuple[dict[str, Any], pd.DataFrame | None, Spec | None]:
    """(the backtest, the hold-out rows with their week, the spec) of a spec'd model's hold-out file."""
    spec = _spec(settings, m.meta.name)
    if spec is None:
        return {"note": f"{m.meta.name} is not a spec'd model: its evaluation is in its report"}, None, None
    layout = Layout.of(settings, spec.name, spec)
    path = layout.holdout_path
    if not path.exists():
        return {"note": f"no hold-out predictions yet ({path.name}: run dvc repro)"}, None, spec
    df = pd.read_csv(path)
    time_col = spec.label.prediction_time
    if "actual" not in df or time_col not in df:
        return {"note": f"{path.name} has no actual or {time_col} column"}, None, spec
    df = df[df["actual"].notna()].copy()
    if df.empty:
        return {"note": f"no outcome known yet in {path.name}"}, None, spec
    if spec.label.task != "multiclass":
        df["actual"] = df["actual"].astype(float)  # binary outcomes are 0/1 in the file
    df["week"] = _weekly(df, time_col)
    out: dict[str, Any] = {"file": str(path.relative_to(layout.root)), "rows": len(df)}
    task = spec.label.task
    if task == "multiclass":
        out["note"] = "multiclass: see the model's report for the confusion matrix"
        return out, df, spec
    by_week = df.groupby("week")
    out["weeks"] = [w.date().isoformat() for w in by_week.size().index]
    out["n"] = _clean(by_week.size())
    out["predicted_mean"] = _clean(by_week["prediction"].mean())
    out["actual_mean"] = _clean(by_week["actual"].mean())
    if task == "binary":
        threshold = m.meta.extra.get("threshold")
        decision = (
            df["decision"]
            if "decision" in df
            else (df["prediction"] >= (0.5 if threshold is None else threshold)).astype(int)
        )
        df["flagged"] = decision.astype(int)
        df["tp"] = ((df["flagged"] == 1) & (df["actual"] == 1)).astype(int)
        df["fp"] = ((df["flagged"] == 1) & (df["actual"] == 0)).astype(int)
        df["pos"] = (df["actual"] == 1).astype(int)
        w = df.groupby("week")[["flagged", "tp", "fp", "pos"]].sum()
        out["threshold"] = threshold
        out["flagged"] = _clean(w["flagged"])
        out["false_positives"] = _clean(w["fp"])
        out["precision"] = _clean(w["tp"] / w["flagged"].replace(0, np.nan))
        out["recall"] = _clean(w["tp"] / w["pos"].replace(0, np.nan))
        bins = np.clip((df["prediction"] * 10).astype(int), 0, 9)
        cal = df.groupby(bins).agg(
            predicted=("prediction", "mean"), observed=("actual", "mean"), n=("actual", "size")
        )
    else:
        deciles = pd.qcut(df["prediction"].rank(method="first"), min(10, len(df)), labels=False)
        cal = df.groupby(deciles).agg(
            predicted=("prediction", "mean"), observed=("actual", "mean"), n=("actual", "size")
        )
    out["calibration"] = {c: _clean(cal[c]) for c in cal.columns}
    out["calibration_by"] = "probability tenth" if task == "binary" else "decile of the prediction"
    return out, df, spec


class OutcomeKpi(NamedTuple):
    """A hand-written model's business KPI, from its outcome table: rows per week and flagged rows per week."""

    path: str  # under the features directory
    time: str  # when the outcome was decided
    rows: str  # what a row is, per week
    flag: str  # 0/1 column
    flagged: str  # what a flagged row is, per week


# Hand-written models have no spec to declare a `kpi` in: their KPI source is declared here (data only; the
# dashboard never imports a model). customer_risk: the bank's reviews and the off-boardings they confirmed.
OUTCOME_KPIS = {
    "customer_risk": OutcomeKpi(
        "customer_risk/labels.parquet", "event_timestamp", "reviews", "suspended", "confirmed off-boardings"
    ),
}


def outcome_kpis(settings: Settings, name: str) -> list[dict[str, Any]]:
    k = OUTCOME_KPIS.get(name)
    if k is None or not (settings.features_dir / k.path).exists():
        return []
    path = settings.features_dir / k.path
    df = pd.read_parquet(path, columns=[k.time, k.flag])
    df["week"] = _weekly(df, k.time)
    by_week = df.groupby("week")
    weeks = [w.date().isoformat() for w in by_week.size().index]
    return [
        {"name": k.rows, "weeks": weeks, "values": _clean(by_week.size())},
        {"name": k.flagged, "weeks": weeks, "values": _clean(by_week[k.flag].sum())},
    ]


def kpis(settings: Settings, spec: Spec | None, df: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The spec's ``kpi`` section over the hold-out rows, by week."""
    if spec is None or spec.kpi is None or df is None or "flagged" not in df:
        return []
    k = spec.kpi
    by_week = df.groupby("week")
    weeks = [w.date().isoformat() for w in by_week.size().index]
    out = [
        {"name": k.flagged, "weeks": weeks, "values": _clean(by_week["flagged"].sum())},
        {"name": k.confirmed, "weeks": weeks, "values": _clean(by_week["tp"].sum())},
    ]
    if k.weight:
        layout = Layout.of(settings, spec.name, spec)
        key = spec.entity.join_key
        ts = pd.read_parquet(layout.training_set, columns=[key, "prediction_time", k.weight])
        ts["prediction_time"] = pd.to_datetime(ts["prediction_time"], utc=True)
        ts = ts.drop_duplicates([key, "prediction_time"])
        rows = df.assign(prediction_time=pd.to_datetime(df[spec.label.prediction_time], utc=True))
        rows = rows.merge(ts, on=[key, "prediction_time"], how="left")
        per_entity = rows.groupby(["week", key]).agg(weight=(k.weight, "max"), tp=("tp", "max"))
        total = per_entity.groupby("week")["weight"].sum()
        covered = (per_entity["weight"] * per_entity["tp"]).groupby("week").sum()
        out.append({"name": k.weight_label, "weeks": weeks, "values": _clean(covered / total.replace(0, np.nan)),
                    "unit": "share"})  # fmt: skip
    return out


def monitoring(settings: Settings, m: LoadedModel, days: int) -> dict[str, Any]:
    bt, rows, spec = backtest(settings, m)
    reg = m.registry
    return {
        "model": m.meta.name,
        "version": m.meta.version,
        "registry_version": reg.version if reg else None,
        "task": spec.label.task if spec else m.meta.extra.get("task"),
        "generated_at": datetime.now(UTC).isoformat(),
        "days": days,
        "traffic": traffic(settings, m.meta.name, days),
        "drift": drift(settings, m.meta.name),
        "backtest": bt,
        "kpis": kpis(settings, spec, rows) or outcome_kpis(settings, m.meta.name),
    }


STATIC = Path(__file__).parent / "static"
