"""Build the point-in-time-correct training set of game_ltv from Feast.

Entity frame: every labeled user (7-day window closed), at prediction time install + prediction_hours.
Feast joins, per row, the latest feature snapshot at or before that time. The split is by install time:
the latest `test_fraction` of install cohorts is the test set, the latest `validation_fraction` of the
rest is the early-stopping set, the earlier cohorts train.

When ingestion had no install times (timing ``assumed_install_time``, see ingest.py), every user shares
one install time and there is no time to split on: the same fractions are then drawn at random, by a
seeded hash of the user id (reproducible, whatever the row order). The
training set records this in its Parquet metadata (``df.attrs``: ``timing``, ``split``); with real
install times it carries no such metadata (the file stays as it always was).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from core.settings import Settings
from domain.game_ltv import schema as S
from pipelines.common.feast_training import historical_features
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser
from pipelines.game_ltv.params import TrainingSetParams

log = logging.getLogger(__name__)
SPLIT = "split"
SPLIT_SEED = 20261101  # the random split's seed (timing assumed_install_time only)


def entity_frame(labels: pd.DataFrame, prediction_hours: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            S.ID: labels[S.ID].astype("int64").to_numpy(),
            S.EVENT_TIMESTAMP: (labels[S.INSTALL_TIME] + pd.Timedelta(hours=prediction_hours)).to_numpy(),
            S.INSTALL_TIME: labels[S.INSTALL_TIME].to_numpy(),
            S.LABEL: labels[S.LABEL].to_numpy(),
        }
    )


def assign_split(install_time: pd.Series, test_fraction: float, validation_fraction: float) -> np.ndarray:
    """By install time: earliest cohorts train, then validation, latest cohorts test."""
    t = install_time.astype("int64").to_numpy()
    test_cut = np.quantile(t, 1 - test_fraction)
    val_cut = np.quantile(t[t < test_cut], 1 - validation_fraction)
    return np.where(t >= test_cut, "test", np.where(t >= val_cut, "valid", "train"))


def random_split(
    user_id: pd.Series, test_fraction: float, validation_fraction: float, seed: int = SPLIT_SEED
) -> np.ndarray:
    """The same fractions as `assign_split`, drawn at random: users ranked by a seeded hash of their id
    (splitmix64), so the draw is reproducible and does not depend on the row order."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        z = user_id.to_numpy(dtype="int64").astype(np.uint64) + np.uint64(seed) * np.uint64(
            0x9E3779B97F4A7C15
        )
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    rank = np.empty(len(z), dtype="int64")
    rank[np.argsort(z, kind="stable")] = np.arange(len(z))
    return assign_split(pd.Series(rank), test_fraction, validation_fraction)


def read_timing(features_dir: Path) -> dict:
    """Ingestion's timing record (a features dir from before it existed had real install times)."""
    path = features_dir / S.TIMING_FILE
    return json.loads(path.read_text()) if path.exists() else {"timing": S.TIMING_INSTALL_TIME}


def build_training_set(settings: Settings, p: TrainingSetParams, features_dir: Path) -> pd.DataFrame:
    labels = pd.read_parquet(features_dir / f"{S.LABELS_TABLE}.parquet")
    if labels.empty:
        raise ValueError(f"{features_dir}: no labeled users (no 7-day window has closed yet)")
    timing = read_timing(features_dir)
    snapshot_h = timing.get("counts_observed_hours")
    if snapshot_h is not None and p.prediction_hours < snapshot_h:
        log.warning(
            "prediction_hours (%s) < counts_observed_hours (%s) without an activity file: the event counts "
            "are known only at install + %s h, so every training row sees zero events",
            p.prediction_hours,
            snapshot_h,
            snapshot_h,
        )
    entity_df = entity_frame(labels, p.prediction_hours)
    df = historical_features(settings, p.feature_service, entity_df)
    df = df.sort_values([S.INSTALL_TIME, S.ID], kind="stable").reset_index(drop=True)
    if timing["timing"] == S.TIMING_ASSUMED:
        log.warning(
            "install times were assumed (one common time, %s): no time to split on, so the test and "
            "validation users are drawn at random (seed %s), not the latest install cohorts",
            timing.get("assumed_install_time"),
            SPLIT_SEED,
        )
        df[SPLIT] = random_split(df[S.ID], p.test_fraction, p.validation_fraction)
        df.attrs.update({"timing": S.TIMING_ASSUMED, "split": f"random (seed {SPLIT_SEED})"})
    else:
        df[SPLIT] = assign_split(df[S.INSTALL_TIME], p.test_fraction, p.validation_fraction)
    return df


def split_info(training_set: pd.DataFrame) -> dict[str, str]:
    """How a training set read back from Parquet was timed and split (see the module docstring)."""
    return {
        "timing": training_set.attrs.get("timing", S.TIMING_INSTALL_TIME),
        "split": training_set.attrs.get("split", "by install time"),
    }


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    settings = Settings()
    df = build_training_set(settings, load_params(args.params).game_ltv.training_set, args.features)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.out, index=False)
    log.info("wrote %s: %s", args.out, df[SPLIT].value_counts().to_dict())


if __name__ == "__main__":
    main()
