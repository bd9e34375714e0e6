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
from pipelines.api_anomaly.evaluation import (
    Calibration,
    calibrate_threshold,
    choose_threshold,
    detectability,
    event_metrics,
    point_metrics,
)
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
    the detectors need) and before the evaluation window. A history too short for any tuning day gives a
    first tuning date at or after the evaluation window's start (`has_tuning_days` says so): labels, if
    any, cannot tune a threshold then, and the threshold is calibrated (`choose`)."""
    last = dates.max()
    eval_start = last - pd.Timedelta(days=evaluation_days - 1)
    return eval_start, dates.min() + pd.Timedelta(days=warmup_days)


def has_tuning_days(eval_start: pd.Timestamp, tune_start: pd.Timestamp) -> bool:
    return bool(tune_start < eval_start)


def check_history(dates: pd.Series, cfg: SeasonalConfig) -> None:
    """Refuse only a history on which no day can be scored, saying what the minimum is and what is assumed
    below the usual length."""
    days = (dates.max() - dates.min()).days + 1
    if days <= cfg.min_history:
        raise ValueError(
            f"{days} days of counts ({dates.min().date()} to {dates.max().date()}): a series is scored from its "
            f"day {cfg.min_history + 1} on (min_history_days = {cfg.min_history}), so give at least "
            f"{cfg.min_history + 1} days; about 4 weeks score two weeks"
        )
    if days < 7 * cfg.weeks:
        log.info(
            "%d days of counts, fewer than the %d weeks of weekday effects: until a series has its own weeks "
            "its weekday effects are mostly its country's pattern x its OS's sensitivity (pool_own_weight), "
            "and its scale is shrunk towards its volume's (scale_prior_days)",
            days,
            cfg.weeks,
        )


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


def choose(
    seasonal: pd.DataFrame,
    eval_start: pd.Timestamp,
    tune_start: pd.Timestamp,
    labeled: bool,
    alarms_per_series_month: float,
) -> tuple[float, str, Calibration, list[str]]:
    """(threshold, how it was chosen, the calibration without labels, its window) for the seasonal scores:
    tuned on the tuning days with labels (`choose_threshold`); without labels, or without tuning days,
    calibrated from the scores (`calibrate_threshold`) at `alarms_per_series_month`, on the scored days
    before the evaluation window (all scored days when those are fewer than a week: a short history). The
    calibration is made in both cases, to be reported beside the tuned threshold."""
    scored = seasonal[seasonal["score"].notna()]
    before = scored[scored["date"] < eval_start]
    cal_rows = before if before["date"].nunique() >= 7 else scored
    cal = calibrate_threshold(cal_rows["score"], alarms_per_series_month)
    window = [str(cal_rows["date"].min().date()), str(cal_rows["date"].max().date())] if len(cal_rows) else []
    if labeled and has_tuning_days(eval_start, tune_start):
        threshold, _ = choose_threshold(seasonal[seasonal["date"] < eval_start], KEYS)
        return threshold, "tuned on the labeled tuning days", cal, window
    if labeled:
        log.warning("labels but no tuning days before the evaluation window: the threshold is calibrated")
    return (
        cal.threshold,
        f"calibrated at {alarms_per_series_month} false alarms per series-month",
        cal,
        window,
    )


TUKEY = 1.5  # the IQR rule without labels: Tukey's fences, 1.5 IQR beyond the quartiles


def _comparison(
    frames: dict[str, pd.DataFrame],
    eval_start: pd.Timestamp,
    threshold: float,
    iqr_tuned: float | None,
    prefix: str,
) -> dict[str, float]:
    """Event precision/recall/F1 in the evaluation window: the seasonal detector at `threshold`, the IQR
    rule at Tukey's 1.5 (`<prefix>iqr_event_*`) and at its tuned threshold (`<prefix>iqr_tuned_event_f1`)."""
    ev = {n: f[f["date"] >= eval_start] for n, f in frames.items()}
    out: dict[str, float] = {}
    e = event_metrics(ev["seasonal"], threshold, KEYS)
    out |= {f"{prefix}event_{k}": e[k] for k in ("f1", "precision", "recall")}
    e = event_metrics(ev["iqr"], TUKEY, KEYS)
    out |= {f"{prefix}iqr_event_{k}": e[k] for k in ("f1", "precision", "recall")}
    if iqr_tuned is not None:
        out[f"{prefix}iqr_tuned_event_f1"] = event_metrics(ev["iqr"], iqr_tuned, KEYS)["f1"]
    return out


def score_all(
    counts: pd.DataFrame,
    labels: pd.DataFrame | None,
    holidays: pd.DataFrame | None,
    cfg: SeasonalConfig,
    since: pd.Timestamp,
) -> dict[str, pd.DataFrame]:
    """Both detectors' scored rows from `since`, with the labels where there are any."""
    scored = {"iqr": iqr_scores(counts, KEYS), "seasonal": hierarchical_scores(counts, KEYS, cfg, holidays)}
    return {n: attach_labels(s[s["date"] >= since], labels) for n, s in scored.items()}


def run(
    counts: pd.DataFrame,
    labels: pd.DataFrame | None,
    holidays: pd.DataFrame | None,
    evaluation_days: int,
    warmup_days: int,
    cfg: SeasonalConfig,
    level_shift_days: int = 4,
    alarms_per_series_month: float = 0.1,
    short_history_days: int | None = None,
    bursty: pd.DataFrame | None = None,
) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """Score, choose the threshold (`choose`), evaluate where there are labels, list the anomalies of the
    evaluation window. With labels, the metrics also hold the threshold calibrated without them and its
    metrics (`unlabeled_*`), the same on the counts cut to their last `short_history_days` days
    (`short_history_*`, labels hidden from the detector), and on the series of `bursty` (country, os) rows
    (`bursty_*`), each beside the IQR rule's (`*iqr_event_f1`: Tukey's 1.5; `*iqr_tuned_event_f1`: tuned)."""
    check_history(counts["date"], cfg)
    eval_start, tune_start = windows(counts["date"], evaluation_days, warmup_days)
    tuning = has_tuning_days(eval_start, tune_start)
    frames = score_all(counts, labels, holidays, cfg, min(tune_start, eval_start))
    threshold, how, cal, cal_window = choose(
        frames["seasonal"], eval_start, tune_start, labels is not None, alarms_per_series_month
    )
    metrics: dict = {
        "evaluation_window": [str(eval_start.date()), str(counts["date"].max().date())],
        "tuning_window": [str(tune_start.date()), str((eval_start - pd.Timedelta(days=1)).date())]
        if tuning
        else None,
        "min_history_days": cfg.min_history,
        "threshold": threshold,
        "threshold_chosen": how,
        "calibration_window": cal_window,
        **cal.as_metrics("calibrated_"),
        "threshold_implied_alarms_per_series_month": round(cal.implied_rate(threshold), 4),
    }
    log.info(
        "threshold %.2f (%s); the scores' ordinary tail implies %.3f false alarms per series-month there",
        threshold,
        how,
        cal.implied_rate(threshold),
    )
    curves: dict[str, pd.DataFrame] = {}
    if labels is not None and tuning:
        for name, s in frames.items():
            t, e, pt, curves[name] = tuned_metrics(s, eval_start)
            prefix = "" if name == "seasonal" else f"{name}_"
            metrics.update(
                {f"{prefix}threshold": t}
                | {f"{prefix}event_{k}": v for k, v in e.items()}
                | {f"{prefix}point_{k}": v for k, v in pt.items()}
            )
            log.info(
                "%s: threshold %.2f (tuned), last %d days: event P %.3f R %.3f F1 %.3f; point F1 %.3f",
                name,
                t,
                evaluation_days,
                e["precision"],
                e["recall"],
                e["f1"],
                pt["f1"],
            )
    if labels is not None:
        iqr_tuned = metrics.get("iqr_threshold")
        metrics |= _comparison(frames, eval_start, cal.threshold, iqr_tuned, "unlabeled_")
        if bursty is not None and len(bursty):
            only = {n: f.merge(bursty[KEYS].drop_duplicates(), on=KEYS) for n, f in frames.items()}
            metrics |= _comparison(only, eval_start, cal.threshold, iqr_tuned, "bursty_")
        days = (counts["date"].max() - counts["date"].min()).days + 1
        if short_history_days and short_history_days < days:
            cut = counts[counts["date"] > counts["date"].max() - pd.Timedelta(days=short_history_days)]
            short_eval, short_tune = windows(cut["date"], evaluation_days, warmup_days)
            short = score_all(cut, labels, holidays, cfg, min(short_tune, short_eval))
            t, _, _, _ = choose(short["seasonal"], short_eval, short_tune, False, alarms_per_series_month)
            short_iqr = None
            if has_tuning_days(short_eval, short_tune):
                short_iqr, _ = choose_threshold(short["iqr"][short["iqr"]["date"] < short_eval], KEYS)
            metrics |= _comparison(short, short_eval, t, short_iqr, "short_history_")
            metrics["short_history_days"] = short_history_days
            metrics["short_history_threshold"] = round(t, 4)
        log.info(
            "without labels: threshold %.2f, event F1 %.3f (IQR rule %.3f)%s",
            cal.threshold,
            metrics["unlabeled_event_f1"],
            metrics["unlabeled_iqr_event_f1"],
            "".join(
                f"; {k}: {metrics[k + 'event_f1']:.3f} (IQR rule {metrics[k + 'iqr_event_f1']:.3f})"
                for k in ("short_history_", "bursty_")
                if k + "event_f1" in metrics
            ),
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
        min_history=p.min_history_days,
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
    threshold = float(metrics["threshold"])
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
    segments_path = args.raw / S.SEGMENTS_FILE if args.raw else None
    segments = (
        pd.read_csv(segments_path, keep_default_na=False)
        if segments_path and segments_path.exists()
        else None
    )
    bursty = (
        segments[segments["bursty"].astype(bool)] if segments is not None and "bursty" in segments else None
    )
    result = run(
        counts,
        labels,
        holidays,
        p.evaluation_days,
        p.warmup_days,
        cfg,
        alarms_per_series_month=p.alarms_per_series_month,
        short_history_days=p.short_history_days,
        bursty=bursty,
    )
    write_outputs(
        counts, holidays, cfg, args.counts, result, args.out, args.metrics, args.features, args.model
    )


if __name__ == "__main__":
    main()
