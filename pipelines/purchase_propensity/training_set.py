"""Build the point-in-time-correct training set of purchase_propensity from Feast.

A row is a session cut at a random page view, as the stream scores it: the entity frame holds the
customer and the time of that page view, and Feast joins (FeatureService purchase_propensity_v1) the
session's state right after it (session_activity) and the latest nightly purchase snapshot before it
(customer_purchases). Each session gives up to `cuts_per_session` distinct cuts. The label is whether the
session ended in an order (an order in the purchase history carries its session id).

The split is by time: sessions that start in the last `test_days` are the test set; the train stage
holds out customers of the earlier ones for early stopping.

Training/serving parity is checked here too: the session features Feast returns for a cut must be the
ones computed right after the cut's own page view (they differ only when one customer browses in two
overlapping sessions, where the customer's latest activity wins, as in the online store).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from core.settings import Settings
from domain.purchase_propensity import features as F
from domain.purchase_propensity import schema as S
from pipelines.common.feast_training import historical_features
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser
from pipelines.purchase_propensity.params import TrainingSetParams

log = logging.getLogger(__name__)
SPLIT = "split"
SESSION_START = "session_start"
MAX_OVERLAP_SHARE = 0.005  # parity: more cuts than this answered from another session is a bug, not overlap


def entity_frame(activity: pd.DataFrame, purchases: pd.DataFrame, p: TrainingSetParams) -> pd.DataFrame:
    rng = np.random.default_rng(p.seed)
    a = activity[[F.ENTITY_ID, F.EVENT_TIMESTAMP, S.SESSION_ID, S.EVENT_ID]].copy()
    a[SESSION_START] = a.groupby(S.SESSION_ID)[F.EVENT_TIMESTAMP].transform("min")
    a["_r"] = rng.random(len(a))
    cuts = a.sort_values([S.SESSION_ID, "_r"]).groupby(S.SESSION_ID, sort=False).head(p.cuts_per_session)
    ordered = set(purchases[S.SESSION_ID].dropna())
    cuts = cuts.drop(columns="_r").sort_values([F.EVENT_TIMESTAMP, S.EVENT_ID], ignore_index=True)
    cuts[S.LABEL] = cuts[S.SESSION_ID].isin(ordered).astype("int64")
    test_from = cuts[SESSION_START].max().floor("D") - pd.Timedelta(days=p.test_days - 1)
    cuts[SPLIT] = np.where(cuts[SESSION_START] >= test_from, "test", "train")
    return cuts


def check_parity(df: pd.DataFrame, activity: pd.DataFrame) -> int:
    """Cuts whose session features from Feast differ from the ones right after their own page view."""
    own = activity.set_index(S.EVENT_ID).loc[df[S.EVENT_ID]].reset_index(drop=True)
    got = df.reset_index(drop=True)
    same = np.ones(len(df), dtype=bool)
    for f in F.SESSION_FEATURES:
        a, b = own[f.name], got[f.name]
        if f.categorical:
            same &= (a.astype("string").fillna("") == b.astype("string").fillna("")).to_numpy(dtype=bool)
        else:
            x, y = a.to_numpy(dtype=float, na_value=np.nan), b.to_numpy(dtype=float, na_value=np.nan)
            same &= np.isclose(x, y, rtol=0, atol=1e-9, equal_nan=True)
    differs = int((~same).sum())
    if differs > MAX_OVERLAP_SHARE * len(df):
        raise AssertionError(
            f"{differs} of {len(df)} training rows got session features that are not those of their own "
            "page view: the offline join and the feature code disagree"
        )
    return differs


def build_training_set(settings: Settings, p: TrainingSetParams, features_dir: Path) -> pd.DataFrame:
    activity = pd.read_parquet(features_dir / f"{F.SESSION_TABLE}.parquet")
    purchases = pd.read_parquet(features_dir / f"{F.PURCHASES_TABLE}.parquet", columns=[S.SESSION_ID])
    entity_df = entity_frame(activity, purchases, p)
    df = historical_features(settings, p.feature_service, entity_df)
    df = df.sort_values([F.EVENT_TIMESTAMP, S.EVENT_ID], ignore_index=True)
    differs = check_parity(df, activity)
    log.info(
        "%s cuts of %s sessions (%.1f%% ordered); %s cuts answered from an overlapping session",
        len(df),
        df[S.SESSION_ID].nunique(),
        100 * df.groupby(S.SESSION_ID)[S.LABEL].first().mean(),
        differs,
    )
    return df


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    df = build_training_set(
        Settings(), load_params(args.params).purchase_propensity.training_set, args.features
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.out, index=False)
    log.info("wrote %s: %s", args.out, df[SPLIT].value_counts().to_dict())


if __name__ == "__main__":
    main()
