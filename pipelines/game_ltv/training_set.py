"""Build the point-in-time-correct training set of game_ltv from Feast.

Entity frame: every labeled user (7-day window closed), at prediction time install + prediction_hours.
Feast joins, per row, the latest feature snapshot at or before that time. The split is by install time:
the latest `test_fraction` of install cohorts is the test set, the latest `validation_fraction` of the
rest is the early-stopping set, the earlier cohorts train.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from core.cli import configure_logging
from core.settings import Settings
from pipelines.common.feast_training import historical_features
from pipelines.common.params import load_params
from pipelines.game_ltv import schema as S
from pipelines.game_ltv.params import TrainingSetParams

log = logging.getLogger(__name__)
SPLIT = "split"


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


def build_training_set(settings: Settings, p: TrainingSetParams, features_dir: Path) -> pd.DataFrame:
    labels = pd.read_parquet(features_dir / f"{S.LABELS_TABLE}.parquet")
    if labels.empty:
        raise ValueError(f"{features_dir}: no labeled users (no 7-day window has closed yet)")
    entity_df = entity_frame(labels, p.prediction_hours)
    df = historical_features(settings, p.feature_service, entity_df)
    df = df.sort_values([S.INSTALL_TIME, S.ID], kind="stable").reset_index(drop=True)
    df[SPLIT] = assign_split(df[S.INSTALL_TIME], p.test_fraction, p.validation_fraction)
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()
    configure_logging()
    settings = Settings()
    df = build_training_set(settings, load_params(args.params).game_ltv.training_set, args.features)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.out, index=False)
    log.info("wrote %s: %s", args.out, df[SPLIT].value_counts().to_dict())


if __name__ == "__main__":
    main()
