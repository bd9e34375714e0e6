"""How far one evaluation of the API-anomaly detector can be trusted: the same detector on other worlds.

The brief's evaluation is one generated world (params.yaml's seed) and its last two weeks: 45 planted
anomalies, so its event F1 moves by several points from one draw of the world to the next. This bench
generates `--worlds` other worlds (seeds 1..N, everything else as in params.yaml), ingests them, and runs
the detect stage's `run` on each (threshold tuned on each world's earlier weeks and calibrated without labels; a short-history cut and an all-bursty world of each seed), with `--history` also for the
current settings and for the settings before sessions 8 and 7 side by side. Design choices are made on these
worlds and on the tuning weeks, never on the evaluated weeks of the brief's world.

Two more rows are not detectors but a measure of headroom (`oracle_metrics`): the current detector's
scores with its one-day expectation replaced by the generator's noise-free expected count (which no
detector can know: it has no noise in it), on every day or only on the days without a planted anomaly;
the scale, the hierarchy's lift, the drift evidence and the threshold tuning stay the detector's.

Two more sections say how much a difference can be trusted: each older detector paired with the current one
world by world (`paired`: the mean difference and its standard error; one world's event F1 moves by several
points between draws, the paired difference of two similar detectors far less), and the current detector's
event F1 at fixed thresholds (`fixed_threshold_f1`), beside the thresholds tuned on each world's earlier
weeks: what the tuning itself costs.

    python -m bench.api_anomaly_worlds [--worlds 24] [--out docs/reports/api_anomaly_worlds.md]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from core.cli import configure_logging
from domain.api_anomaly import schema as S
from pipelines.api_anomaly import detect
from pipelines.api_anomaly.detectors import SeasonalConfig, lifted
from pipelines.api_anomaly.evaluation import event_metrics
from pipelines.common.params import load_params
from pipelines.common.progress import progress

log = logging.getLogger(__name__)
PARAMS = Path("params.yaml")


def before_session_8(cfg: SeasonalConfig) -> SeasonalConfig:
    """Without the drift evidence, without holiday depths from the country's other OS, parents lifting a
    segment to twice its own score."""
    return replace(cfg, drift_days=None, group_holidays=False, max_boost=2.0)


def before_session_7(cfg: SeasonalConfig) -> SeasonalConfig:
    """The detector as it was: own weekday effects over 4 weeks, a 5-day level, the raw MAD, every parent
    move lifting its segments."""
    return replace(
        before_session_8(cfg),
        level_days=5,
        weeks=4,
        pool_own_weight=None,
        scale_prior_days=None,
        broad_share=None,
    )


def world(
    seed: int, root: Path, generate: dict | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(clean counts, labels, holidays) of the world generated with `seed` (and `generate`'s overrides of
    params.yaml's `api_anomaly.generate`); segments.csv is in `root / "raw"`."""
    raw = yaml.safe_load(PARAMS.read_text())
    raw["api_anomaly"]["generate"] |= {"seed": seed, **(generate or {})}
    raw["api_anomaly"]["ingest"]["raw_dir"] = str(root / "raw")
    root.mkdir(parents=True, exist_ok=True)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    run = [sys.executable, "-m"]
    subprocess.run(
        [*run, "synthetic.api_anomaly", "--out", str(root / "raw"), "--params", str(params)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run,
            "pipelines.api_anomaly.ingest",
            *("--clean", str(root / "clean"), "--quarantine", str(root / "q")),
            *("--metrics", str(root / "ingest.json"), "--params", str(params)),
        ],
        check=True,
        capture_output=True,
    )
    p = load_params(params).api_anomaly.detect
    return (
        pd.read_parquet(root / "clean" / S.CLEAN_COUNTS),
        pd.read_parquet(root / "raw" / S.LABELS_FILE),
        detect.load_holidays(root / "raw" / S.HOLIDAYS_FILE, p.holiday_min_effect),
    )


ORACLES = {
    "oracle: true expectation": True,
    "oracle: true expectation on ordinary days": False,
}


def oracle_metrics(
    scored: pd.DataFrame,
    labels: pd.DataFrame,
    cfg: SeasonalConfig,
    eval_start: pd.Timestamp,
    on_anomalies_too: bool,
) -> dict:
    """The metrics of the seasonal detector's scored rows (`detect.run`'s frame for "seasonal") rescored
    against the generator's noise-free `expected_count` (labels.parquet) in the detector's own scale, on every
    day or (`on_anomalies_too` False) only on days without a planted anomaly (the detector's own one-day
    score elsewhere); lifted by the hierarchy and the drift evidence as the detector does; threshold tuned on
    the earlier weeks. How far a perfect expectation would take the same detector."""
    keys = ["date", *detect.KEYS]
    s = scored.merge(labels[[*keys, "expected_count", "effect"]], on=keys, how="left")
    z = (np.log1p(s["count"]) - np.log1p(s["expected_count"])) / s["log_scale"]
    if not on_anomalies_too:
        z = z.where(s["effect"] == 1, s["segment_score"])
    z = z.where(s["segment_score"].notna()).to_numpy(float)
    s["score"] = lifted(s, z, detect.KEYS, cfg)
    threshold, e, pt, _ = detect.tuned_metrics(s, eval_start)
    return {"threshold": threshold, **{f"event_{k}": e[k] for k in ("f1", "precision", "recall")}} | {
        "point_f1": pt["f1"]
    }


FIXED_THRESHOLDS = (2.75, 3.0, 3.25, 3.5, 3.75, 4.0, 4.25, 4.5)


def fixed_threshold_f1(
    scored: pd.DataFrame, eval_start: pd.Timestamp, thresholds: tuple[float, ...] = FIXED_THRESHOLDS
) -> dict[float, float]:
    """Event F1 on the days from `eval_start` at each of `thresholds` (labeled scored rows, `detect.run`'s
    frame): where the threshold tuned on the earlier weeks sits on the evaluated weeks' own curve."""
    ev = scored[scored["date"] >= eval_start]
    return {t: event_metrics(ev, t, detect.KEYS)["f1"] for t in thresholds}


def paired(f1: pd.DataFrame, base: str) -> pd.DataFrame:
    """`f1`: event F1 per world (rows) and detector (columns). For each other detector: the mean over the worlds
    of `base`'s F1 minus its F1, the standard error of that mean, and in how many worlds `base` is better,
    equal (within 1e-9) or worse. Paired by world: the worlds' own difficulty cancels out."""
    rows = {}
    for name in f1.columns.drop(base):
        d = f1[base] - f1[name]
        rows[name] = {
            f"{base} minus it": d.mean(),
            "se": d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan,
            f"{base} better": int((d > 1e-9).sum()),
            "equal": int((d.abs() <= 1e-9).sum()),
            f"{base} worse": int((d < -1e-9).sum()),
        }
    return pd.DataFrame(rows).T.rename_axis("detector")


BURSTY_WORLD = {"bursty_share": 1.0}  # every country beyond the top 5 bursty


def false_alarms_per_series_month(scored: pd.DataFrame, threshold: float, eval_start: pd.Timestamp) -> float:
    """Flagged days without a planted anomaly in the evaluated window, per series and month (30.44 days):
    the false-alarm rate the calibration is asked for, realized."""
    ev = scored[(scored["date"] >= eval_start) & scored["score"].notna()]
    false = (ev["score"].abs() >= threshold) & ~ev["is_anomaly"].astype(bool)
    series = ev.groupby(detect.KEYS).ngroups
    return float(false.sum() / max(series, 1) / ev["date"].nunique() * 30.44)


def short_history_ceiling(
    counts: pd.DataFrame, labels: pd.DataFrame, holidays: pd.DataFrame, days: int, alarms: float
) -> float:
    """Event F1 of the short-history cut (its last `days` days, threshold calibrated without labels) with
    every planted anomaly before its evaluated weeks removed from the counts: a perfect mask of the weeks a
    short history learns from, which no detector has (the first `min_history` days are not scored, so
    nothing masks their anomalies, and a young series' scores mask poorly). The gap to the short-history
    row is what cleaner early weeks could win."""
    p = load_params(PARAMS).api_anomaly.detect
    cfg = detect.seasonal_config(p)
    keys = ["date", *detect.KEYS]
    cut = counts[counts["date"] > counts["date"].max() - pd.Timedelta(days=days)]
    eval_start, tune_start = detect.windows(cut["date"], p.evaluation_days, p.warmup_days)
    planted = labels[labels["is_anomaly"].astype(bool) & (labels["date"] < eval_start)][keys]
    clean = cut.merge(planted.assign(_planted=True), on=keys, how="left")
    clean = clean[clean["_planted"].isna()].drop(columns="_planted")
    frames = detect.score_all(clean, labels, holidays, cfg, min(tune_start, eval_start))
    threshold, *_ = detect.choose(frames["seasonal"], eval_start, tune_start, False, alarms)
    return detect._comparison(frames, eval_start, threshold, None, "")["event_f1"]


def one_world(args: tuple[int, str, bool]) -> list[dict]:
    """The rows of one world: the brief-like world (params.yaml's, with its bursty share) scored by the
    current detector, its oracles and fixed-threshold curve (and with `history`, the older settings), and
    the bursty world of the same seed."""
    seed, tmp, history = args
    params = load_params(PARAMS).api_anomaly
    p = params.detect
    cfg = detect.seasonal_config(p)
    configs = {"current": cfg}
    if history:
        configs |= {"before session 8": before_session_8(cfg), "before session 7": before_session_7(cfg)}
    rows: list[dict] = []
    for suite, generate in (("brief", None), ("bursty", BURSTY_WORLD)):
        root = Path(tmp) / f"{suite}{seed}"
        counts, labels, holidays = world(seed, root, generate)
        segments = S.read_csv(root / "raw" / S.SEGMENTS_FILE)
        bursty = segments[segments["bursty"].astype(bool)]
        for name, c in configs.items() if suite == "brief" else [("current", cfg)]:
            m, _, frames, _ = detect.run(
                counts,
                labels,
                holidays,
                p.evaluation_days,
                p.warmup_days,
                c,
                alarms_per_series_month=p.alarms_per_series_month,
                short_history_days=p.short_history_days if suite == "brief" and name == "current" else None,
                bursty=bursty,
            )
            eval_start, _ = detect.windows(counts["date"], p.evaluation_days, p.warmup_days)
            seasonal = frames[frames["detector"] == "seasonal"]
            fa = false_alarms_per_series_month(seasonal, m["calibrated_threshold"], eval_start)
            rows.append({"seed": seed, "suite": suite, "detector": name, "false_alarms": fa, **m})
            if suite == "bursty":
                rows[-1]["oracle_event_f1"] = oracle_metrics(seasonal, labels, c, eval_start, True)[
                    "event_f1"
                ]
            if suite != "brief" or name != "current":
                continue
            rows[-1]["short_history_ceiling"] = short_history_ceiling(
                counts, labels, holidays, p.short_history_days, p.alarms_per_series_month
            )
            rows[-1]["fixed"] = fixed_threshold_f1(seasonal, eval_start)
            for oracle, everywhere in ORACLES.items():
                o = oracle_metrics(seasonal, labels, c, eval_start, everywhere)
                rows.append(
                    {"seed": seed, "suite": suite, "detector": oracle, "iqr_event_f1": m["iqr_event_f1"], **o}
                )
    return rows


def _mean_sd(df: pd.DataFrame, cols: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            label: {"mean": df[c].mean(), "sd": df[c].std(), "min": df[c].min(), "max": df[c].max()}
            for c, label in cols.items()
        }
    ).T


def main() -> None:  # pragma: no cover - a bench
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, default=24)
    ap.add_argument("--jobs", type=int, default=2, help="worlds scored at once (one process each)")
    ap.add_argument("--history", action="store_true", help="also the settings before sessions 8 and 7")
    ap.add_argument("--out", type=Path, default=Path("docs/reports/api_anomaly_worlds.md"))
    args = ap.parse_args()
    configure_logging()
    params = load_params(PARAMS).api_anomaly
    p, g = params.detect, params.generate
    # planted anomalies per week before the evaluated weeks, and in them
    rates = g.earlier_anomalies_per_week, g.evaluation_anomalies / g.evaluation_days * 7
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        jobs = [(seed, tmp, args.history) for seed in range(1, args.worlds + 1)]
        for r in progress(pool.imap_unordered(one_world, jobs), total=len(jobs), desc="worlds"):
            rows += r
    df = pd.DataFrame(rows).sort_values(["suite", "seed"])
    brief = df[df["suite"] == "brief"]
    cur = brief[brief["detector"] == "current"].set_index("seed")
    bursty = df[(df["suite"] == "bursty")].set_index("seed")
    wide = brief.pivot(index="seed", columns="detector", values="event_f1")
    detectors = list(dict.fromkeys(brief["detector"]))
    g_ = brief.groupby("detector", sort=False)
    summary = pd.DataFrame(
        {
            "event F1 mean": g_["event_f1"].mean(),
            "sd": g_["event_f1"].std(),
            "min": g_["event_f1"].min(),
            "max": g_["event_f1"].max(),
            "precision": g_["event_precision"].mean(),
            "recall": g_["event_recall"].mean(),
            "point F1": g_["point_f1"].mean(),
            "F1 - IQR F1": (brief["event_f1"] - brief["iqr_event_f1"])
            .groupby(brief["detector"], sort=False)
            .mean(),
        }
    ).loc[detectors]
    unlabeled = _mean_sd(
        cur,
        {
            "event_f1": "seasonal, threshold tuned with labels",
            "unlabeled_event_f1": "seasonal, threshold calibrated without labels",
            "iqr_event_f1": "IQR rule, threshold tuned with labels",
            "unlabeled_iqr_event_f1": "IQR rule, Tukey's 1.5",
            "short_history_event_f1": "short history (last 6 weeks), seasonal, calibrated",
            "short_history_iqr_tuned_event_f1": "short history, IQR rule, tuned with labels",
            "short_history_iqr_event_f1": "short history, IQR rule, Tukey's 1.5",
            "short_history_ceiling": "short history, ceiling: its earlier weeks' anomalies removed",
            "bursty_event_f1": "bursty series of these worlds, seasonal, calibrated",
            "bursty_iqr_event_f1": "bursty series of these worlds, IQR rule, Tukey's 1.5",
        },
    )
    bursty_table = _mean_sd(
        bursty,
        {
            "event_f1": "seasonal, threshold tuned with labels",
            "unlabeled_event_f1": "seasonal, calibrated without labels",
            "iqr_event_f1": "IQR rule, tuned with labels",
            "unlabeled_iqr_event_f1": "IQR rule, Tukey's 1.5",
            "oracle_event_f1": "ceiling: tuned, with the true expectation (oracle)",
        },
    )
    targets = pd.DataFrame(
        {
            "unlabeled minus tuned (target >= -0.03)": cur["unlabeled_event_f1"] - cur["event_f1"],
            "short history minus IQR rule (target >= 0.15)": cur["short_history_event_f1"]
            - cur[["short_history_iqr_event_f1", "short_history_iqr_tuned_event_f1"]].max(axis=1),
            "bursty worlds minus IQR rule (target >= 0.15)": bursty["unlabeled_event_f1"]
            - bursty[["unlabeled_iqr_event_f1", "iqr_event_f1"]].max(axis=1),
        }
    )
    target_summary = pd.DataFrame(
        {"mean": targets.mean(), "se": targets.std(ddof=1) / np.sqrt(len(targets)), "min": targets.min()}
    )
    alarms = pd.DataFrame(
        {
            "brief-like worlds": [
                p.alarms_per_series_month,
                cur["calibrated_threshold"].mean(),
                cur["false_alarms"].mean(),
            ],
            "bursty worlds": [
                p.alarms_per_series_month,
                bursty["calibrated_threshold"].mean(),
                bursty["false_alarms"].mean(),
            ],
        },
        index=[
            "false alarms per series-month asked",
            "calibrated threshold (mean)",
            "false alarms per series-month realized",
        ],
    ).T
    pairs = (
        paired(wide[[d for d in detectors if not d.startswith("oracle")]], "current")
        if args.history
        else None
    )
    curve = pd.DataFrame(list(cur["fixed"]), index=cur.index)
    tuned = cur["event_f1"]
    best = curve.mean().idxmax()
    per_world = pd.DataFrame(
        {
            "tuned": cur["event_f1"],
            "threshold": cur["threshold"],
            "unlabeled": cur["unlabeled_event_f1"],
            "calibrated": cur["calibrated_threshold"],
            "IQR tuned": cur["iqr_event_f1"],
            "short": cur["short_history_event_f1"],
            "short IQR": cur["short_history_iqr_event_f1"],
            "bursty world": bursty["unlabeled_event_f1"],
            "bursty IQR": bursty["unlabeled_iqr_event_f1"],
            **{f"oracle{'' if k.endswith('expectation') else ' (ordinary days)'}": wide[k] for k in ORACLES},
        }
    )
    lines = [
        "# API anomalies: the detector on other generated worlds",
        "",
        f"Generated by `python -m bench.api_anomaly_worlds --worlds {args.worlds}{' --history' if args.history else ''}`"
        " (bench/api_anomaly_worlds.py; not a DVC stage: about 20 minutes for 24 worlds on 2 cores). Each seed"
        " gives two worlds: params.yaml's (with its share of bursty countries, `generate.bursty_share`) and a"
        " bursty one (every country beyond the top 5 bursty). Tuned thresholds come from each world's earlier"
        " weeks, calibrated ones from its scores alone (no labels); the metrics are on its last two weeks, as"
        f" in `metrics/api_anomaly.json` ({g.evaluation_anomalies} planted anomalies per world).",
        "",
        "## Without labels, on short histories, on bursty series",
        "",
        f"Calibrated thresholds ask for {p.alarms_per_series_month} false alarms per series-month"
        " (`detect.alarms_per_series_month`, `evaluation.calibrate_threshold`). The short history is each"
        f" world cut to its last {p.short_history_days} days (4 weeks before the evaluated two), labels hidden."
        " The IQR rule is given its best case: the larger of Tukey's 1.5 and the threshold tuned with labels.",
        "",
        unlabeled.round(3).to_markdown(),
        "",
        "Bursty worlds:",
        "",
        bursty_table.round(3).to_markdown(),
        "",
        "The two ceiling rows are not detectors. The short-history one scores the cut with every planted anomaly"
        " before its evaluated weeks removed (`short_history_ceiling`): what a perfect mask of the weeks it"
        " learns from would give (a detector cannot score, so cannot mask, a series' first"
        f" {p.min_history_days} days). The bursty one rescores the tuned detector against the generator's"
        " noise-free expectation (`oracle_metrics`, as in the section below).",
        "",
        "The targets, world by world (mean, standard error of the mean, worst world):",
        "",
        target_summary.round(4).to_markdown(),
        "",
        "The calibration, asked and realized (flagged days without a planted anomaly in the evaluated weeks):",
        "",
        alarms.round(3).to_markdown(),
        "",
        "## The tuned detector over the worlds",
        "",
        summary.round(3).to_markdown(),
        "",
        "The oracle rows are not detectors: they rescore the current detector's rows against the generator's"
        " noise-free expected count (`oracle_metrics`), everywhere or only on days without a planted anomaly,"
        " with the detector's own scale, hierarchy, drift evidence and threshold tuning. The gap between them"
        " and the current row bounds what a better one-day expectation could win; it is not all winnable: the"
        " noise-free count also knows where a series' autocorrelated noise has wandered, which no forecast"
        " from the past can.",
        "",
    ]
    if pairs is not None:
        lines += [
            "## Paired with the current detector, world by world",
            "",
            "A difference is worth believing when it is well beyond two standard errors.",
            "",
            pairs.round(4).to_markdown(),
            "",
        ]
    lines += [
        "## What the threshold tuning costs",
        "",
        "The current detector's event F1 on the last two weeks at fixed thresholds, averaged over the worlds,"
        " beside the threshold each world tuned on its earlier weeks (mean"
        f" {cur['threshold'].mean():.2f}): tuned, {tuned.mean():.3f}; the best single threshold in"
        f" hindsight ({best}), {curve[best].mean():.3f}. The earlier weeks hold {rates[0]:.0f} planted anomalies"
        f" a week, the evaluated weeks {rates[1]:.1f}, so the F1-optimal threshold there is higher; a threshold picked on the"
        " evaluated weeks would be a choice made on the answers, and none is.",
        "",
        curve.mean().rename("mean event F1").rename_axis("threshold").to_frame().T.round(4).to_markdown(),
        "",
        "## Per world (last two weeks, event F1)",
        "",
        per_world.round(3).to_markdown(),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


KEYS = ("event_f1", "event_precision", "event_recall", "point_f1", "iqr_event_f1", "threshold")

if __name__ == "__main__":
    main()
