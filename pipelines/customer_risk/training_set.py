"""Point-in-time feature frames of customer_risk from Feast: the labeled set and the unlabeled scoring set.

Labeled customers are asked for their features as of their review time (the decision the label records),
unlabeled ones as of the extraction time; Feast joins the latest snapshot at or before each. The labeled
set gets a stratified, seeded train/test split: `test` is held out of tuning, cross-validation and the
threshold choices.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from core.settings import Settings
from domain.customer_risk import feature_spec as F
from domain.customer_risk import schema as S
from pipelines.common.feast_training import historical_features
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser
from pipelines.customer_risk.params import TrainingSetParams

log = logging.getLogger(__name__)
SPLIT = "split"


def stratified_split(y: pd.Series, test_fraction: float, seed: int) -> np.ndarray:
    idx = np.arange(len(y))
    _, test = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=seed)
    split = np.full(len(y), "train", dtype=object)
    split[test] = "test"
    return split


def build(settings: Settings, p: TrainingSetParams, features_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = pd.read_parquet(features_dir / f"{F.LABELS_TABLE}.parquet")
    if labels.empty or labels[F.LABEL].nunique() < 2:
        raise ValueError(f"{features_dir}: need labeled customers of both states to train")
    labeled = historical_features(settings, p.feature_service, labels)
    labeled = labeled.sort_values([S.ID], kind="stable").reset_index(drop=True)
    labeled[SPLIT] = stratified_split(labeled[F.LABEL], p.test_fraction, p.seed)
    scoring = pd.read_parquet(features_dir / f"{F.SCORING_TABLE}.parquet")
    unlabeled = historical_features(settings, p.feature_service, scoring)
    unlabeled = unlabeled.sort_values([S.ID], kind="stable").reset_index(drop=True)
    return labeled, unlabeled


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="labeled training set (.parquet)")
    ap.add_argument("--unlabeled-out", type=Path, required=True, help="unlabeled scoring set (.parquet)")
    args = ap.parse_args()
    labeled, unlabeled = build(Settings(), load_params(args.params).customer_risk.training_set, args.features)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    labeled.to_parquet(args.out, index=False)
    unlabeled.to_parquet(args.unlabeled_out, index=False)
    log.info(
        "wrote %s (%s), %s (%s rows)",
        args.out,
        labeled.groupby(SPLIT)[F.LABEL].agg(["size", "sum"]).to_dict(),
        args.unlabeled_out,
        len(unlabeled),
    )


if __name__ == "__main__":
    main()
