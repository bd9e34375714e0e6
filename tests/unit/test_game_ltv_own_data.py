"""The game_ltv "own data" path without install_time: the brief's 11 columns alone (no Feast, no training),
and the generic training set's fallback to a random split when every prediction time is the same."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from core.settings import ROOT
from core.spec import load_spec
from domain.game_ltv import schema as S
from pipelines.game_ltv.params import PrepareParams
from pipelines.game_ltv.prepare import prepare
from pipelines.tabular.ingest import PREDICTION_TIME
from pipelines.tabular.training_set import assign_split

BRIEF_COLUMNS = [
    "user_id",
    "country",
    "country_region",
    "source",
    "platform",
    "device_family",
    "os_version",
    "event_1",
    "event_2",
    "event_3",
    "revenue",
]
ROW = {
    "country": "US",
    "country_region": "US-01",
    "source": "organic",
    "platform": "ios",
    "device_family": "iPhone14,2",
    "os_version": "17.1",
    "event_1": "3",
    "event_2": "1",
    "event_3": "0",
}


def users_csv(path, columns=BRIEF_COLUMNS, **changes_by_id):
    """Four users: two labeled, one not yet (empty revenue), one with an unknown source."""
    rows = [
        {**ROW, "user_id": "1", "revenue": "0.00"},
        {**ROW, "user_id": "2", "revenue": "4.99", "event_3": "2"},
        {**ROW, "user_id": "3", "revenue": ""},
        {**ROW, "user_id": "4", "revenue": "0.00", "source": "referral??"},
    ]
    for r in rows:
        r["install_time"] = "2026-10-01T10:00:00Z"
        r.update(changes_by_id.get(f"u{r['user_id']}", {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows)[columns].to_csv(path, index=False)
    return path


def run(tmp_path, users, activity=None, **params):
    p = PrepareParams(
        **{"raw_dir": str(users.parent), "counts_observed_hours": 24, "prediction_hours": 24, **params}
    )
    prepared = tmp_path / "prepared"
    report = prepare(p, prepared, tmp_path / "q", tmp_path / "m.json", users, activity)
    return report, prepared


def test_brief_columns_alone_are_prepared_with_one_assumed_install_time(tmp_path, caplog):
    users = users_csv(tmp_path / "own" / "users.csv")
    with caplog.at_level(logging.WARNING, logger="pipelines.game_ltv.prepare"):
        report, prepared = run(tmp_path, users)
    assert "has no install_time column: every user is assumed installed at 2001-01-01" in caplog.text
    assert report["timing"] == "assumed_install_time"
    assert report["assumed_install_time"] == "2001-01-01T00:00:00+00:00"
    assert report["counts_as_of"] == "2001-01-02T00:00:00+00:00"
    assert report["prediction_hours"] == 24
    # the timing record lives in the metrics only (no timing file beside the prepared tables)
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["timing"] == "assumed_install_time"
    assert metrics["assumed_install_time"] == "2001-01-01T00:00:00+00:00"
    assert metrics["counts_as_of"] == "2001-01-02T00:00:00+00:00"
    assert sorted(p.name for p in prepared.iterdir()) == sorted(
        f"{t}.parquet" for t in (S.PROFILE_TABLE, S.ACTIVITY_TABLE, S.LABELS_TABLE, S.ORACLE_TABLE)
    )
    # bad rows are still quarantined with their reasons; nothing is refused for lacking install_time
    assert report["users"]["by_reason"] == {"unknown_source": 1}
    q = pd.read_csv(tmp_path / "q" / "users.csv", dtype=str)
    assert q["user_id"].tolist() == ["4"] and "unknown source 'referral??'" in q.loc[0, "reason"]
    prof = pd.read_parquet(prepared / f"{S.PROFILE_TABLE}.parquet")
    assert prof["user_id"].tolist() == [1, 2, 3]
    assert (prof[S.INSTALL_TIME] == pd.Timestamp("2001-01-01", tz="UTC")).all()
    assert prof["install_hour"].isna().all() and prof["install_dow"].isna().all()  # not a made-up hour
    assert str(prof["install_hour"].dtype) == "Int64"
    act = pd.read_parquet(prepared / f"{S.ACTIVITY_TABLE}.parquet")
    snap = act[act[S.SNAPSHOT_TIME] == pd.Timestamp("2001-01-02", tz="UTC")].set_index(S.ID)
    assert snap.loc[2, "event_3"] == 2 and len(snap) == 3
    # every user has a label row at one common prediction time; user 3's revenue is not known yet
    labels = pd.read_parquet(prepared / f"{S.LABELS_TABLE}.parquet")
    assert list(labels.columns) == [S.ID, S.PREDICTION_TIME, S.LABEL]
    assert labels[S.ID].tolist() == [1, 2, 3]
    assert labels[S.LABEL].tolist()[:2] == [0.0, 4.99] and pd.isna(labels[S.LABEL].iloc[2])
    assert (labels[S.PREDICTION_TIME] == pd.Timestamp("2001-01-02T00:00:01Z")).all()
    assert report["prepared"]["labeled_users"] == 2 and report["prepared"]["unlabeled_users"] == 1
    # own data: no generator oracle beside the users file, so the oracle table is written with no rows
    oracle = pd.read_parquet(prepared / f"{S.ORACLE_TABLE}.parquet")
    assert oracle.empty and list(oracle.columns) == [S.ID, S.PREDICTION_TIME, S.EXPECTED_REVENUE]
    assert report["prepared"]["oracle_users"] == 0


def test_assumed_install_time_param_is_used_and_naive_means_utc(tmp_path):
    users = users_csv(tmp_path / "own" / "users.csv")
    report, prepared = run(tmp_path, users, assumed_install_time="2026-10-19T00:00:00")
    assert report["assumed_install_time"] == "2026-10-19T00:00:00+00:00"
    assert report["counts_as_of"] == "2026-10-20T00:00:00+00:00"
    prof = pd.read_parquet(prepared / f"{S.PROFILE_TABLE}.parquet")
    assert (prof[S.INSTALL_TIME] == pd.Timestamp("2026-10-19", tz="UTC")).all()
    labels = pd.read_parquet(prepared / f"{S.LABELS_TABLE}.parquet")
    assert (labels[S.PREDICTION_TIME] == pd.Timestamp("2026-10-20T00:00:01Z")).all()


def test_a_file_with_install_time_keeps_the_real_times_and_ignores_the_param(tmp_path, caplog):
    users = users_csv(tmp_path / "own" / "users.csv", columns=S.RAW_USER_COLUMNS)
    with caplog.at_level(logging.WARNING, logger="pipelines.game_ltv.prepare"):
        report, prepared = run(tmp_path, users, assumed_install_time="2026-10-19T00:00:00Z")
    assert "game_ltv.prepare.assumed_install_time (2026-10-19T00:00:00Z) is ignored" in caplog.text
    assert report["timing"] == "install_time" and "assumed_install_time" not in report
    prof = pd.read_parquet(prepared / f"{S.PROFILE_TABLE}.parquet")
    assert prof["install_hour"].tolist() == [10, 10, 10] and str(prof["install_hour"].dtype) == "int64"
    assert (prof[S.INSTALL_TIME] == pd.Timestamp("2026-10-01T10:00:00Z")).all()
    labels = pd.read_parquet(prepared / f"{S.LABELS_TABLE}.parquet")
    assert (labels[S.PREDICTION_TIME] == pd.Timestamp("2026-10-02T10:00:01Z")).all()


@pytest.mark.parametrize("columns", [BRIEF_COLUMNS, S.RAW_USER_COLUMNS], ids=["brief", "with_install_time"])
def test_a_file_missing_another_required_column_still_fails_naming_it(tmp_path, columns):
    users = users_csv(tmp_path / "own" / "users.csv", columns=[c for c in columns if c != "source"])
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['source'\]"):
        run(tmp_path, users)


def test_a_parquet_file_with_the_brief_columns_works_too(tmp_path):
    csv = users_csv(tmp_path / "csv" / "users.csv")
    users = tmp_path / "own" / "users.parquet"
    users.parent.mkdir()
    pd.read_csv(csv, dtype=str, keep_default_na=False).to_parquet(users, index=False)
    report, _ = run(tmp_path, users)
    assert report["timing"] == "assumed_install_time" and report["users"]["rows_ok"] == 3


def test_an_activity_file_needs_install_time(tmp_path):
    users = users_csv(tmp_path / "own" / "users.csv")
    activity = tmp_path / "own" / "activity.csv"
    activity.write_text("user_id,hour_start,event_1,event_2,event_3\n1,2026-10-01T10:00:00Z,1,0,0\n")
    with pytest.raises(ValueError, match="no install_time column, but an activity file"):
        run(tmp_path, users, activity)


@pytest.mark.parametrize(
    ("value", "words"),
    [("2999-01-01T00:00:00Z", "is in the future"), ("1999-12-31T00:00:00Z", "never reach the online store")],
)
def test_an_assumed_install_time_that_cannot_be_right_fails(tmp_path, value, words):
    users = users_csv(tmp_path / "own" / "users.csv")
    with pytest.raises(ValueError, match=words):
        run(tmp_path, users, assumed_install_time=value)


def test_assumed_install_time_param_must_be_iso_8601_and_yaml_dates_are_read():
    with pytest.raises(ValidationError, match="not an ISO-8601 timestamp"):
        PrepareParams(
            raw_dir="x", counts_observed_hours=24, prediction_hours=24, assumed_install_time="19/10/2026"
        )
    raw = yaml.safe_load(
        "raw_dir: x\ncounts_observed_hours: 24\nprediction_hours: 24\n"
        "assumed_install_time: 2026-10-19T00:00:00Z\n"
    )
    p = PrepareParams(**raw)
    assert pd.Timestamp(p.assumed_install_time) == pd.Timestamp("2026-10-19", tz="UTC")
    assert (
        PrepareParams(raw_dir="x", counts_observed_hours=24, prediction_hours=24).assumed_install_time is None
    )


def test_prediction_hours_is_required_and_positive():
    with pytest.raises(ValidationError, match="prediction_hours"):
        PrepareParams(raw_dir="x", counts_observed_hours=24)
    with pytest.raises(ValidationError, match="prediction_hours"):
        PrepareParams(raw_dir="x", counts_observed_hours=24, prediction_hours=0)


def _game_ltv_spec():
    return load_spec(ROOT / "specs" / "game_ltv.yaml")


def _training_rows(times, n_score: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Labeled rows at `times`, then `n_score` rows whose label is not known yet (not trainable)."""
    n = len(times)
    df = pd.DataFrame(
        {
            S.ID: np.arange(10_000_001, 10_000_001 + n + n_score, dtype="int64"),
            PREDICTION_TIME: pd.Series([*times, *[times[-1]] * n_score]).reset_index(drop=True),
            S.LABEL: pd.array([*np.linspace(0, 5, n), *[None] * n_score], dtype="Float64"),
        }
    )
    return df, pd.Series([True] * n + [False] * n_score, index=df.index)


def test_time_split_with_one_prediction_time_falls_back_to_a_seeded_random_split(caplog):
    spec = _game_ltv_spec()
    assert spec.split.kind == "time"  # what specs/game_ltv.yaml asks for; an assumed install time defeats it
    one_time = [pd.Timestamp("2001-01-02T00:00:01Z")] * 20_000
    df, trainable = _training_rows(one_time, n_score=500)
    with caplog.at_level(logging.WARNING, logger="pipelines.tabular.training_set"):
        split, made = assign_split(df, trainable, spec)
    assert made.startswith(f"random (seed {spec.split.seed})") and "one prediction time" in made
    assert "split kind time, but random" in caplog.text
    assert (split[~trainable] == "score").all()  # rows without a known label are scored, never split
    trained = split[trainable]
    assert set(trained) == {"train", "test"}
    assert abs((trained == "test").mean() - spec.split.test_fraction) < 0.001
    # not a block of rows: the test rows are spread over the whole table
    assert 0.15 < (trained[:10_000] == "test").mean() < 0.25
    # reproducible: the same spec and rows give the same split
    again, made_again = assign_split(df, trainable, spec)
    pd.testing.assert_series_equal(split, again)
    assert made_again == made
    # the seed is the spec's: another seed draws another split
    other = spec.model_copy(update={"split": spec.split.model_copy(update={"seed": spec.split.seed + 1})})
    other_split, other_made = assign_split(df, trainable, other)
    assert other_made.startswith(f"random (seed {spec.split.seed + 1})")
    assert (other_split != split).any()


def test_time_split_with_several_prediction_times_holds_out_the_latest():
    spec = _game_ltv_spec()
    times = list(pd.date_range("2026-09-01", periods=1000, freq="h", tz="UTC"))
    df, trainable = _training_rows(times, n_score=50)
    split, made = assign_split(df, trainable, spec)
    assert made == "time"
    n_test = round(1000 * spec.split.test_fraction)
    trained = split[trainable]
    assert (trained.iloc[-n_test:] == "test").all() and (trained.iloc[:-n_test] == "train").all()
    assert (split[~trainable] == "score").all()
