"""How far one evaluation of the API-anomaly detector can be trusted: the same detector on other worlds.

The brief's evaluation is one generated world (params.yaml's seed) and its last two weeks: 45 planted
anomalies, so its event F1 moves by several points from one draw of the world to the next. This bench
generates `--worlds` other worlds (seeds 1..N, everything else as in params.yaml), ingests them, and runs
the detect stage's `run` on each (threshold tuned on each world's earlier weeks, as always), for the
current settings and for the settings before sessions 8 and 7 side by side. Design choices are made on these
worlds and on the tuning weeks, never on the evaluated weeks of the brief's world.

    python -m bench.api_anomaly_worlds [--worlds 8] [--out docs/reports/api_anomaly_worlds.md]
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
import yaml

from core.cli import configure_logging
from pipelines.api_anomaly import detect
from pipelines.api_anomaly import schema as S
from pipelines.api_anomaly.detectors import SeasonalConfig
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


def world(seed: int, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(clean counts, labels, holidays) of the world generated with `seed`."""
    raw = yaml.safe_load(PARAMS.read_text())
    raw["api_anomaly"]["generate"]["seed"] = seed
    raw["api_anomaly"]["ingest"]["raw_dir"] = str(root / "raw")
    root.mkdir(parents=True, exist_ok=True)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    run = [sys.executable, "-m"]
    subprocess.run(
        [*run, "pipelines.api_anomaly.generate", "--out", str(root / "raw"), "--params", str(params)],
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


def main() -> None:  # pragma: no cover - a bench
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("docs/reports/api_anomaly_worlds.md"))
    args = ap.parse_args()
    configure_logging()
    p = load_params(PARAMS).api_anomaly.detect
    configs = {"current": detect.seasonal_config(p)}
    configs["before session 8"] = before_session_8(configs["current"])
    configs["before session 7"] = before_session_7(configs["current"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in progress(range(1, args.worlds + 1), total=args.worlds, desc="worlds"):
            counts, labels, holidays = world(seed, Path(tmp) / f"seed{seed}")
            for name, cfg in configs.items():
                m, *_ = detect.run(counts, labels, holidays, p.evaluation_days, p.warmup_days, cfg)
                rows.append({"seed": seed, "detector": name, **{k: m[k] for k in KEYS}})
    df = pd.DataFrame(rows)
    wide = df.pivot(index="seed", columns="detector")
    per_world = pd.DataFrame(
        {
            **{f"event F1, {n}": wide["event_f1"][n] for n in configs},
            **{f"threshold, {n}": wide["threshold"][n] for n in configs},
            "IQR event F1": wide["iqr_event_f1"]["current"],
        }
    )
    g = df.groupby("detector", sort=False)
    summary = pd.DataFrame(
        {
            "event F1 mean": g["event_f1"].mean(),
            "sd": g["event_f1"].std(),
            "min": g["event_f1"].min(),
            "max": g["event_f1"].max(),
            "precision": g["event_precision"].mean(),
            "recall": g["event_recall"].mean(),
            "point F1": g["point_f1"].mean(),
            "F1 - IQR F1": (df["event_f1"] - df["iqr_event_f1"]).groupby(df["detector"], sort=False).mean(),
        }
    )
    better = {
        n: int((wide["event_f1"]["current"] > wide["event_f1"][n]).sum()) for n in configs if n != "current"
    }
    lines = [
        "# API anomalies: the detector on other generated worlds",
        "",
        f"Generated by `python -m bench.api_anomaly_worlds --worlds {args.worlds}` (bench/api_anomaly_worlds.py; not"
        " a DVC stage: about 5 minutes). Each world is params.yaml's with another seed; thresholds are tuned on"
        " each world's earlier weeks and the metrics are on its last two weeks, as in `metrics/api_anomaly.json`"
        " (45 planted anomalies per world).",
        "",
        "## Over the worlds",
        "",
        summary.round(3).to_markdown(),
        "",
        "The current detector is better than "
        + " and ".join(f"the one {n} in {k} of {args.worlds} worlds" for n, k in better.items())
        + ".",
        "",
        "## Per world (last two weeks)",
        "",
        per_world.round(3).to_markdown(),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


KEYS = ("event_f1", "event_precision", "event_recall", "point_f1", "iqr_event_f1", "threshold")

if __name__ == "__main__":
    main()
