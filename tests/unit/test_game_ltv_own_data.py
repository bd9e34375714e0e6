"""The game_ltv "own data" path without install_time: the brief's 11 columns alone (no Feast, no training)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from domain.game_ltv import schema as S
from pipelines.game_ltv.ingest import ingest
from pipelines.game_ltv.params import IngestParams
from pipelines.game_ltv.training_set import assign_split, random_split

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
    p = IngestParams(raw_dir=str(users.parent), counts_observed_hours=24, **params)
    features = tmp_path / "features"
    report = ingest(p, features, tmp_path / "q", tmp_path / "m.json", users, activity)
    return report, features


def test_brief_columns_alone_are_ingested_with_one_assumed_install_time(tmp_path, caplog):
    users = users_csv(tmp_path / "own" / "users.csv")
    with caplog.at_level(logging.WARNING, logger="pipelines.game_ltv.ingest"):
        report, features = run(tmp_path, users)
    assert "has no install_time column: every user is assumed installed at 2001-01-01" in caplog.text
    assert report["timing"] == "assumed_install_time"
    assert report["assumed_install_time"] == "2001-01-01T00:00:00+00:00"
    assert report["counts_as_of"] == "2001-01-02T00:00:00+00:00"
    assert json.loads((tmp_path / "m.json").read_text())["timing"] == "assumed_install_time"
    timing = json.loads((features / S.TIMING_FILE).read_text())
    assert timing["timing"] == "assumed_install_time" and timing["counts_observed_hours"] == 24
    # bad rows are still quarantined with their reasons; nothing is refused for lacking install_time
    assert report["users"]["by_reason"] == {"unknown_source": 1}
    q = pd.read_csv(tmp_path / "q" / "users.csv", dtype=str)
    assert q["user_id"].tolist() == ["4"] and "unknown source 'referral??'" in q.loc[0, "reason"]
    prof = pd.read_parquet(features / f"{S.PROFILE_TABLE}.parquet")
    assert prof["user_id"].tolist() == [1, 2, 3]
    assert (prof[S.EVENT_TIMESTAMP] == pd.Timestamp("2001-01-01", tz="UTC")).all()
    assert prof["install_hour"].isna().all() and prof["install_dow"].isna().all()  # not a made-up hour
    assert str(prof["install_hour"].dtype) == "Int64"
    act = pd.read_parquet(features / f"{S.ACTIVITY_TABLE}.parquet")
    snap = act[act[S.EVENT_TIMESTAMP] == pd.Timestamp("2001-01-02", tz="UTC")].set_index(S.ID)
    assert snap.loc[2, "event_3"] == 2 and len(snap) == 3
    labels = pd.read_parquet(features / f"{S.LABELS_TABLE}.parquet")
    assert labels[S.ID].tolist() == [1, 2] and labels[S.LABEL].tolist() == [0.0, 4.99]  # user 3: not yet


def test_assumed_install_time_param_is_used_and_naive_means_utc(tmp_path):
    users = users_csv(tmp_path / "own" / "users.csv")
    report, features = run(tmp_path, users, assumed_install_time="2026-10-19T00:00:00")
    assert report["assumed_install_time"] == "2026-10-19T00:00:00+00:00"
    assert report["counts_as_of"] == "2026-10-20T00:00:00+00:00"
    labels = pd.read_parquet(features / f"{S.LABELS_TABLE}.parquet")
    assert (labels[S.INSTALL_TIME] == pd.Timestamp("2026-10-19", tz="UTC")).all()


def test_a_file_with_install_time_keeps_the_real_times_and_ignores_the_param(tmp_path, caplog):
    users = users_csv(tmp_path / "own" / "users.csv", columns=S.RAW_USER_COLUMNS)
    with caplog.at_level(logging.WARNING, logger="pipelines.game_ltv.ingest"):
        report, features = run(tmp_path, users, assumed_install_time="2026-10-19T00:00:00Z")
    assert "assumed_install_time (2026-10-19T00:00:00Z) is ignored" in caplog.text
    assert report["timing"] == "install_time" and "assumed_install_time" not in report
    prof = pd.read_parquet(features / f"{S.PROFILE_TABLE}.parquet")
    assert prof["install_hour"].tolist() == [10, 10, 10] and str(prof["install_hour"].dtype) == "int64"


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
        IngestParams(raw_dir="x", counts_observed_hours=24, assumed_install_time="19/10/2026")
    raw = yaml.safe_load(
        "raw_dir: x\ncounts_observed_hours: 24\nassumed_install_time: 2026-10-19T00:00:00Z\n"
    )
    p = IngestParams(**raw)
    assert pd.Timestamp(p.assumed_install_time) == pd.Timestamp("2026-10-19", tz="UTC")
    assert IngestParams(raw_dir="x", counts_observed_hours=24).assumed_install_time is None


def test_random_split_is_seeded_has_the_fractions_and_ignores_the_other_users():
    ids = pd.Series(np.arange(10_000_001, 10_020_001), dtype="int64")
    split = random_split(ids, 0.2, 0.15)
    assert abs((split == "test").mean() - 0.2) < 0.001
    assert abs((split == "valid").mean() - 0.8 * 0.15) < 0.001
    np.testing.assert_array_equal(split, random_split(ids, 0.2, 0.15))
    assert not (split[:10_000] == "test").all() and 0.15 < (split[:10_000] == "test").mean() < 0.25
    # the draw does not depend on the row order
    rev = random_split(ids[::-1].reset_index(drop=True), 0.2, 0.15)[::-1]
    np.testing.assert_array_equal(split, rev)
    assert (random_split(ids, 0.2, 0.15, seed=1) != split).any()


def test_time_split_is_unchanged():
    t = pd.Series(pd.date_range("2026-09-01", periods=1000, freq="h", tz="UTC"))
    split = assign_split(t, 0.2, 0.15)
    assert (split[-200:] == "test").all() and (split[:-200] != "test").all()
