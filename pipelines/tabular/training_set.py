"""The point-in-time training set of a spec'd model, through its FeatureService.

Every row of the clean label table becomes an entity row stamped just before its prediction time (1 µs
earlier), so Feast's point-in-time join gives each row the latest feature values *strictly before* the
prediction time, never a value stamped at or after it. Request-time features and kept columns ride along
from the label table.

A row is *trainable* when its label is known and final: ``prediction_time + label.horizon_days`` is not
after the data's end (the latest time in any source or label row). The others are the scoring
population. Trainable rows are split into train and test by the spec (`split`); the ``split`` column
says train / test / score. Nothing else touches the test rows until evaluate.

A time split needs more than one prediction time: when every trainable row shares one (a static export,
e.g. game_ltv's brief file with an assumed install time), there is nothing to split on, and the rows are
split at random (seeded by ``split.seed``) with a warning. The split actually made is recorded in the
file's metadata (``df.attrs["split"]``, read back by ``split_made``) and in the metrics.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from core.layout import Layout
from core.settings import Settings
from core.spec import Spec
from pipelines.common.feast_training import historical_features
from pipelines.tabular.ingest import EVENT_TIMESTAMP, PREDICTION_TIME, utc

log = logging.getLogger(__name__)
SPLIT = "split"
ROW = "_row"
JUST_BEFORE = pd.Timedelta(microseconds=1)


def data_end(layout: Layout, labels: pd.DataFrame) -> pd.Timestamp:
    """The export's "now": `label.data_end` when declared, else the latest prediction time (a source row
    stamped later, even by mistake, cannot make a young label look final)."""
    declared = layout.spec.label.data_end
    return utc(declared) if declared is not None else pd.Timestamp(labels[PREDICTION_TIME].max())


def time_cutoff(times: pd.Series, fraction: float) -> pd.Timestamp:
    """The earliest prediction time of the latest `fraction` of rows: every row at or after it is held out,
    so no prediction time is cut in two (the held-out share may be a little larger)."""
    ordered = times.sort_values(kind="stable").to_numpy()
    return pd.Timestamp(ordered[len(ordered) - max(1, round(len(ordered) * fraction))])


def assign_split(df: pd.DataFrame, trainable: pd.Series, spec: Spec) -> tuple[pd.Series, str]:
    """(train / test / score per row, the split made: the spec's kind, or the random fallback)."""
    s = spec.split
    out = pd.Series("score", index=df.index, dtype=object)
    idx = df.index[trainable]
    y = df.loc[idx, spec.label.column]
    made = s.kind
    if s.kind == "time" and df.loc[idx, PREDICTION_TIME].nunique() < 2:
        made = f"random (seed {s.seed}): every trainable row has one prediction time, no time to split on"
        log.warning("%s: split kind time, but %s", spec.name, made)
    if made == "time":
        times = df.loc[idx, PREDICTION_TIME]
        test = idx[times >= time_cutoff(times, s.test_fraction)]
    elif s.kind == "group":
        gss = GroupShuffleSplit(n_splits=1, test_size=s.test_fraction, random_state=s.seed)
        _, te = next(gss.split(idx, groups=df.loc[idx, s.group_column].astype(str)))
        test = idx[te]
    else:
        strat = y.astype(str) if spec.label.task != "regression" else None
        _, test = train_test_split(idx, test_size=s.test_fraction, random_state=s.seed, stratify=strat)
    out[idx] = "train"
    out[test] = "test"
    return out, made


def split_made(training_set: pd.DataFrame) -> str:
    """The split a training set read back from Parquet was made with (see the module docstring)."""
    return str(training_set.attrs.get(SPLIT, "unknown"))


def point_in_time(settings: Settings, feature_service: str, labels: pd.DataFrame) -> pd.DataFrame:
    """The label rows (same order) with the FeatureService's values strictly before each prediction time."""
    entity_df = labels.copy()
    entity_df[ROW] = np.arange(len(entity_df))
    entity_df[EVENT_TIMESTAMP] = entity_df[PREDICTION_TIME] - JUST_BEFORE
    df = historical_features(settings, feature_service, entity_df)
    df = df.sort_values(ROW, kind="stable").reset_index(drop=True)
    if len(df) != len(labels):
        raise RuntimeError(f"Feast returned {len(df)} rows for {len(labels)} entity rows")
    df[PREDICTION_TIME] = labels[PREDICTION_TIME].reset_index(drop=True)  # its unit (Feast recasts to ns)
    return df.drop(columns=[EVENT_TIMESTAMP, ROW])


def build(settings: Settings, layout: Layout) -> pd.DataFrame:
    spec = layout.spec
    label = spec.label
    labels = pd.read_parquet(layout.labels)
    end = data_end(layout, labels)
    horizon = pd.Timedelta(days=label.horizon_days)
    known = labels[label.column].notna()
    final = known & (labels[PREDICTION_TIME] + horizon <= end)
    log.info(
        "%s: %s label rows, %s trainable (%s known but not final by %s), %s to score",
        spec.name,
        len(labels),
        int(final.sum()),
        int((known & ~final).sum()),
        end,
        int((~final).sum()),
    )
    df = point_in_time(settings, spec.feature_service, labels)
    trainable = pd.Series(final.to_numpy(), index=df.index)
    df[SPLIT], made = assign_split(df, trainable, spec)
    df.attrs[SPLIT] = made
    if label.task == "binary":
        df[label.column] = df[label.column].astype("Int64")
    return df


def run(settings: Settings, layout: Layout) -> dict:
    df = build(settings, layout)
    layout.training_set.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(layout.training_set, index=False)
    counts = df[SPLIT].value_counts().to_dict()
    log.info("%s: training set %s rows %s -> %s", layout.spec.name, len(df), counts, layout.training_set)
    return counts
