"""Run the detectors, choose each one's threshold on earlier weeks, evaluate on the last two weeks.

Windows (from the data's last date backwards): the evaluation window (`evaluation_days`, the brief's
"last two weeks"), and before it the tuning weeks where thresholds are chosen by event F1: every day after a
warm-up (`warmup_days`, the history the detectors need to score at all). Each detector scores a day from the days before it, so the scores in
both windows are what a daily job would have produced.

Outputs: the detector's state per segment and day (`--features`: the Feast view `segment_baseline`), the
band model (`--model`: metadata.json of kind "band" with the tuned threshold, served by the API),
`metrics/api_anomaly.json` (point- and event-level precision/recall/F1 for every detector side
by side; top-level `event_f1`, `event_precision`, `event_recall` of the stronger detector and
`iqr_event_f1`), `data/outputs/api_anomaly/anomalies.csv` (the stronger detector's anomalies in the
evaluation window: observed, expected, band, score, kind, wider event), `scores.parquet` (all scored rows of
both windows, for the report) and the threshold curves.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from core.band import STATE_FIELDS, band
from core.model_bundle import COMPOSITE_KEY_SEP, METADATA_FILE, FeatureSpec, ModelMetadata, file_sha256
from domain.api_anomaly import schema as S
from pipelines.api_anomaly.detectors import SeasonalConfig, hierarchical_scores, iqr_scores, state_frame
from pipelines.api_anomaly.evaluation import choose_threshold, detectability, event_metrics, point_metrics
from pipelines.api_anomaly.params import DetectParams
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser, write_metrics

log = logging.getLogger(__name__)
KEYS = ["country", "os"]
DETECTORS = ("iqr", "seasonal")  # baseline, stronger
# anomalies.csv (and GET /v1/anomalies): one row per anomalous (date, country, os) of the evaluated weeks;
# `lower`/`upper` is the one-day decision band, `score` the signed evidence (hierarchy and drift included),
# `segment_score` the series' own one-day score, `drift_score` its sustained-move evidence (empty: none); on generated data also whether a planted anomaly is there (`planted`, `planted_kind`)
ANOMALY_COLUMNS = [
    "date",
    "country",
    "os",
    "count",
    "expected",
    "lower",
    "upper",
    "score",
    "segment_score",
    "drift_score",
    "kind",
    "whole_country",
    "whole_os",
]


def windows(dates: pd.Series, evaluation_days: int, warmup_days: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(first evaluated date, first tuning date): tuning covers every day after the warm-up (the history
    the detectors need) and before the evaluation window."""
    last = dates.max()
    eval_start = last - pd.Timedelta(days=evaluation_days - 1)
    tune_start = dates.min() + pd.Timedelta(days=warmup_days)
    if tune_start >= eval_start:
        raise ValueError(
            f"no tuning weeks: the data start {dates.min().date()}, the warm-up needs {warmup_days} days and the "
            f"evaluation window starts {eval_start.date()}; give a longer history"
        )
    return eval_start, tune_start


def tuned_metrics(scored: pd.DataFrame, eval_start: pd.Timestamp) -> tuple[float, dict, dict, pd.DataFrame]:
    """(threshold, event metrics, point metrics, tuning curve) of labeled scores: the threshold is tuned on
    the days before `eval_start` (`choose_threshold`), the metrics are on the days from it."""
    threshold, curve = choose_threshold(scored[scored["date"] < eval_start], KEYS)
    ev = scored[scored["date"] >= eval_start]
    return threshold, event_metrics(ev, threshold, KEYS), point_metrics(ev, threshold), curve


def load_holidays(path: Path, min_effect: float = 0.1) -> pd.DataFrame:
    """A public-holiday calendar: `country`, `date` and optionally the expected traffic factor. Days whose
    expected dip is below `min_effect` (e.g. a month of Ramadan at -4%) are ordinary days to the detector;
    the others are neither scored nor used as baseline. A day without a factor is a holiday."""
    h = S.read_csv(path, parse_dates=["date"])
    h["date"] = h["date"].dt.tz_localize("UTC") if h["date"].dt.tz is None else h["date"]
    if "factor_mobile" in h:
        h = h[h["factor_mobile"].isna() | ((1 - h["factor_mobile"]).abs() >= min_effect)]
    return h


def attach_labels(scored: pd.DataFrame, labels: pd.DataFrame | None) -> pd.DataFrame:
    if labels is None:
        return scored.assign(is_anomaly=pd.NA, anomaly_id=pd.NA)
    cols = ["date", *KEYS, "is_anomaly", "anomaly_id", "kind"]
    out = scored.merge(labels[cols].rename(columns={"kind": "true_kind"}), on=["date", *KEYS], how="left")
    out["is_anomaly"] = out["is_anomaly"].fillna(False).astype(bool)
    return out


def describe(rows: pd.DataFrame, threshold: float, level_shift_days: int) -> pd.DataFrame:
    """Kind and extent of flagged rows: outage (near zero), spike/drop, level shift (a run that lasts, or a
    sustained move the drift evidence found: a ramp or a modest shift), and
    whether the whole country or the whole OS moved the same way that day."""
    out = rows.copy()
    ratio = out["count"] / out["expected"].clip(lower=1)
    out["kind"] = np.where(ratio < 0.1, "outage", np.where(out["score"] > 0, "spike", "drop"))
    out = out.sort_values([*KEYS, "date"])
    day = (out["date"] - out["date"].min()).dt.days
    new = (out[KEYS] != out[KEYS].shift()).any(axis=1) | (day.diff() != 1)
    run = new.cumsum()
    length = out.groupby(run)["date"].transform("size")
    # a run that lasts, or a day flagged by the drift evidence (a move sustained over the last days)
    sustained = ((length >= level_shift_days) | (out["drift_score"].abs() >= threshold)) & (
        out["kind"] != "outage"
    )
    out.loc[sustained, "kind"] = np.where(
        out.loc[sustained, "score"] > 0, "level_shift_up", "level_shift_down"
    )
    same_sign = np.sign(out["score"])
    out["whole_country"] = (
        (np.sign(out["country_score"]) == same_sign)
        & (out["country_score"].abs() >= threshold)
        & out["country_broad"]  # not a country total moved by one other OS
    )
    out["whole_os"] = (np.sign(out["os_score"]) == same_sign) & (out["os_score"].abs() >= threshold)
    return out


def run(
    counts: pd.DataFrame,
    labels: pd.DataFrame | None,
    holidays: pd.DataFrame | None,
    evaluation_days: int,
    warmup_days: int,
    cfg: SeasonalConfig,
    level_shift_days: int = 4,
) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    eval_start, tune_start = windows(counts["date"], evaluation_days, warmup_days)
    scored = {
        "iqr": iqr_scores(counts, KEYS),
        "seasonal": hierarchical_scores(counts, KEYS, cfg, holidays),
    }
    metrics: dict = {
        "evaluation_window": [str(eval_start.date()), str(counts["date"].max().date())],
        "tuning_window": [str(tune_start.date()), str((eval_start - pd.Timedelta(days=1)).date())],
    }
    curves, frames = {}, {}
    for name, s in scored.items():
        s = attach_labels(s[s["date"] >= tune_start], labels)
        frames[name] = s
        if labels is None:
            continue
        threshold, e, pt, curves[name] = tuned_metrics(s, eval_start)
        prefix = "" if name == "seasonal" else f"{name}_"
        metrics.update(
            {f"{prefix}threshold": threshold}
            | {f"{prefix}event_{k}": v for k, v in e.items()}
            | {f"{prefix}point_{k}": v for k, v in pt.items()}
        )
        log.info(
            "%s: threshold %.2f (tuned), last %d days: event P %.3f R %.3f F1 %.3f; point F1 %.3f",
            name,
            threshold,
            evaluation_days,
            e["precision"],
            e["recall"],
            e["f1"],
            pt["f1"],
        )
    if labels is not None and {"expected_count", "effect", "count_true"} <= set(labels.columns):
        sds = detectability(labels, KEYS, eval_start)
        metrics["evaluated_events_effect_in_noise_sd"] = {
            "under_3": int((sds < 3).sum()),
            "under_4": int((sds < 4).sum()),
            "median": round(float(sds.median()), 2),
            "events": len(sds),
        }
    strong = frames["seasonal"]
    threshold = metrics.get("threshold", 5.0)
    ev = strong[(strong["date"] >= eval_start) & (strong["score"].abs() >= threshold)].copy()
    # the interval reported is the decision band: outside it (at the segment level) is anomalous
    ev["lower"], ev["upper"] = band(ev["log_expected"], ev["log_scale"], threshold, ev["log_memory"])
    anomalies = describe(ev, threshold, level_shift_days)
    cols = [*ANOMALY_COLUMNS, *(c for c in ("is_anomaly", "true_kind") if labels is not None)]
    anomalies = (
        anomalies[cols]
        .rename(columns={"is_anomaly": "planted", "true_kind": "planted_kind"})
        .sort_values(
            ["date", "score"], key=lambda c: c.abs() if c.name == "score" else c, ascending=[True, False]
        )
        .reset_index(drop=True)
    )
    return metrics, anomalies, pd.concat([f.assign(detector=n) for n, f in frames.items()]), curves


def seasonal_config(p: DetectParams) -> SeasonalConfig:
    """The seasonal detector's settings from params.yaml (`api_anomaly.detect`)."""
    return SeasonalConfig(
        weeks=p.weeks,
        level_days=p.level_days,
        mad_days=p.mad_days,
        mask_z=p.mask_z,
        max_mask_days=p.max_mask_days,
        memory_days=p.memory_days,
        pool_own_weight=p.pool_own_weight,
        scale_prior_days=p.scale_prior_days,
        broad_share=p.broad_share,
        max_boost=p.max_boost,
        drift_days=p.drift_days,
        drift_clip=p.drift_clip,
        group_holidays=p.group_holidays,
    )


def feature_table(counts: pd.DataFrame, holidays: pd.DataFrame | None, cfg: SeasonalConfig) -> pd.DataFrame:
    """The Feast view `segment_baseline`: each segment's state as of each day, through the day after the
    data (what a real-time check of "today" reads once materialized)."""
    st = state_frame(counts, KEYS, cfg, holidays, extend_days=1)
    st.insert(0, S.SEGMENT_KEY, st[S.COUNTRY].str.cat(st[S.OS], sep=COMPOSITE_KEY_SEP))
    st["n_history"] = st["n_history"].astype("int64")
    return st.rename(columns={S.DATE: S.EVENT_TIMESTAMP})


def band_model(metrics: dict, cfg: SeasonalConfig, features_path: Path, counts_path: Path) -> ModelMetadata:
    """The real-time check's model folder: kind "band" (core/band.py), state from `api_anomaly_v1`."""
    threshold = float(metrics.get("threshold", 5.0))
    state_specs = [FeatureSpec(f, "Int64" if f == "n_history" else "Float64", False) for f in STATE_FIELDS]
    return ModelMetadata.trained(
        "api_anomaly",
        counts_path,
        {"state": file_sha256(features_path), "threshold": threshold, "cfg": asdict(cfg)},
        task="anomaly",
        label=S.COUNT,
        entity="traffic_segment",
        join_keys=[S.SEGMENT_KEY],
        join_key_types={S.SEGMENT_KEY: "str"},
        feature_service="api_anomaly_v1",
        features=[FeatureSpec(S.DATE, "String", True), FeatureSpec(S.COUNT, "Float64", False), *state_specs],
        prediction_type="AnomalyScore",  # signed: residual / scale on log counts; |score| >= threshold
        params=asdict(cfg),
        metrics={k: metrics[k] for k in ("event_f1", "event_precision", "event_recall") if k in metrics},
        extra={
            "threshold": threshold,  # also the band shown: outside it is anomalous
            "entity_parts": list(KEYS),  # requests may send country + os instead of "US:android"
            "request_features": [S.DATE, S.COUNT],
        },
        kind="band",
    )


def write_outputs(
    counts: pd.DataFrame,
    holidays: pd.DataFrame | None,
    cfg: SeasonalConfig,
    counts_path: Path,
    result: tuple[dict, pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]],
    out: Path,
    metrics_path: Path,
    features_path: Path,
    model_dir: Path,
) -> ModelMetadata:
    """Everything the stage writes, from `run`'s result: anomalies.csv, scores and threshold curves (in
    `out`), the metrics, the feature table, and the band model's folder."""
    metrics, anomalies, scores, curves = result
    out.mkdir(parents=True, exist_ok=True)
    anomalies.assign(date=anomalies["date"].dt.strftime("%Y-%m-%d")).to_csv(
        out / S.OUTPUT_ANOMALIES, index=False, float_format="%.6g"
    )
    scores.to_parquet(out / "scores.parquet", index=False)
    for name, c in curves.items():
        c.to_csv(out / f"threshold_curve_{name}.csv", index=False)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics_path, metrics)
    features_path.parent.mkdir(parents=True, exist_ok=True)
    feature_table(counts, holidays, cfg).to_parquet(features_path, index=False)
    meta = band_model(metrics, cfg, features_path, counts_path)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / METADATA_FILE).write_text(meta.to_json())
    log.info(
        "model %s (threshold %.2f) and feature table %s written",
        meta.version,
        meta.extra["threshold"],
        features_path,
    )
    return meta


@stage
def main() -> None:  # pragma: no cover - thin CLI, exercised by dvc repro
    ap = stage_parser(__doc__)
    ap.add_argument("--counts", type=Path, required=True, help="ingestion's clean api_counts.parquet")
    ap.add_argument(
        "--raw", type=Path, help="raw folder: labels.parquet (evaluation) and holidays.csv, if there"
    )
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--features", type=Path, required=True, help="feature table segment_baseline.parquet")
    ap.add_argument("--model", type=Path, required=True, help="model folder of the real-time band check")
    args = ap.parse_args()
    p = load_params(args.params).api_anomaly.detect
    counts = pd.read_parquet(args.counts)
    labels_path = args.raw / S.LABELS_FILE if args.raw else None
    holidays_path = args.raw / S.HOLIDAYS_FILE if args.raw else None
    labels = pd.read_parquet(labels_path) if labels_path and labels_path.exists() else None
    holidays = (
        load_holidays(holidays_path, p.holiday_min_effect)
        if holidays_path and holidays_path.exists()
        else None
    )
    cfg = seasonal_config(p)
    result = run(counts, labels, holidays, p.evaluation_days, p.warmup_days, cfg)
    write_outputs(
        counts, holidays, cfg, args.counts, result, args.out, args.metrics, args.features, args.model
    )


if __name__ == "__main__":
    main()
