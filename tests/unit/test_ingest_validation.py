"""Ingestion rejects each kind of bad row with a reason, repairs harmless formatting, drops nothing."""

from __future__ import annotations

import pandas as pd
import pytest

from domain.game_ltv import schema as S
from pipelines.common.validation import read_raw
from pipelines.game_ltv.prepare import build_activity, build_labels, validate_activity, validate_users

GOOD = {
    "user_id": "1",
    "install_time": "2026-10-01T10:00:00Z",
    "country": "US",
    "country_region": "US-01",
    "source": "organic",
    "platform": "ios",
    "device_family": "iPhone14,2",
    "os_version": "17.1",
    "event_1": "3",
    "event_2": "1",
    "event_3": "0",
    "revenue": "0.00",
}


def rows(*changes: dict) -> pd.DataFrame:
    out = []
    for i, ch in enumerate(changes):
        r = dict(GOOD, user_id=str(100 + i))
        r.update(ch)
        out.append(r)
    df = pd.DataFrame(out, columns=S.RAW_USER_COLUMNS)
    df.insert(0, "source_row", range(2, 2 + len(df)))
    return df


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        ({"event_2": "-3"}, "negative_count", "event_2 is below 0"),
        ({"event_1": "n/a"}, "non_numeric_count", "event_1 is not a whole number: 'n/a'"),
        ({"event_1": "2.5"}, "non_numeric_count", "not a whole number"),
        ({"user_id": ""}, "missing_user_id", "user_id is missing"),
        ({"user_id": "abc"}, "bad_user_id", "user_id is not a whole number"),
        ({"platform": "windows phone"}, "unknown_platform", "unknown platform 'windows phone'"),
        ({"source": "referral??"}, "unknown_source", "unknown source"),
        ({"country": "XX"}, "invalid_country", "unknown country 'XX'"),
        ({"install_time": "31/02/2026 25:61"}, "bad_install_time", "not an ISO-8601 timestamp"),
        ({"revenue": "-4.99"}, "negative_revenue", "revenue is below 0"),
        ({"revenue": "lots"}, "non_numeric_revenue", "revenue is not a number"),
    ],
)
def test_each_bad_row_is_quarantined_with_reason(change, code, words):
    clean, q, report = validate_users(rows({}, change, {}))
    assert len(clean) == 2 and len(q) == 1
    assert q.iloc[0]["reason_code"] == code
    assert words in q.iloc[0]["reason"]
    assert report["by_reason"] == {code: 1}
    assert report["rows_in"] == report["rows_ok"] + report["quarantined"]


def test_several_problems_are_all_reported():
    _, q, report = validate_users(rows({"event_1": "x", "platform": "tv"}))
    assert set(q.iloc[0]["reason_code"].split("; ")) == {"non_numeric_count", "unknown_platform"}
    assert report["quarantined"] == 1


def test_duplicates_exact_kept_once_conflicting_all_quarantined():
    df = rows({}, {})
    df.loc[1, "user_id"] = df.loc[0, "user_id"]  # exact duplicate of row 0
    conflict = rows({"user_id": "7"}, {"user_id": "7", "country": "BR"})
    df = pd.concat([df, conflict], ignore_index=True)
    clean, _q, report = validate_users(df)
    assert report["by_reason"] == {"conflicting_duplicate": 2, "exact_duplicate": 1}
    assert clean[S.ID].tolist() == [100]


def test_formatting_noise_is_repaired_and_counted():
    clean, q, report = validate_users(rows({"platform": " IOS", "country": "us "}, {"device_family": ""}))
    assert q.empty
    assert clean["platform"].tolist() == ["ios", "ios"] and clean["country"].iloc[0] == "US"
    assert clean["device_family"].iloc[1] == "unknown"
    assert report["repaired"]["normalized_platform"] == 1 and report["repaired"]["filled_device_family"] == 1


def test_missing_revenue_means_unlabeled_not_bad():
    clean, q, _ = validate_users(rows({"revenue": ""}))
    assert q.empty and clean[S.LABEL].isna().all()


def test_every_user_gets_a_label_row_at_its_prediction_time_unlabeled_ones_too():
    users, _, _ = validate_users(
        rows({"revenue": "4.99"}, {"revenue": "", "install_time": "2026-10-01T08:30:00Z"})
    )
    labels = build_labels(users, 24)
    assert list(labels.columns) == [S.ID, S.PREDICTION_TIME, S.LABEL]
    # sorted by prediction time; the prediction is made 1 s after the 24th hour closed
    assert labels[S.ID].tolist() == [101, 100]
    assert labels[S.PREDICTION_TIME].tolist() == [
        pd.Timestamp("2026-10-02T08:30:01Z"),
        pd.Timestamp("2026-10-02T10:00:01Z"),
    ]
    assert pd.isna(labels[S.LABEL].iloc[0]) and labels[S.LABEL].iloc[1] == 4.99  # window open: no label yet


def test_activity_validation_and_snapshots():
    users, _, _ = validate_users(rows({}, {}))
    t0 = pd.Timestamp("2026-10-01T10:00:00Z")
    act = pd.DataFrame(
        {
            "source_row": range(6),
            S.ID: [100, 100, 100, 999, 101, 100],
            S.HOUR_START: [t0, t0 + pd.Timedelta(hours=2), t0 - pd.Timedelta(hours=3), t0, t0, t0],
            "event_1": [2, 1, 1, 1, -1, 2],
            "event_2": [0, 1, 0, 0, 0, 0],
            "event_3": [0, 1, 0, 0, 0, 0],
        }
    )
    clean, _q, report = validate_activity(act, users)
    assert report["by_reason"] == {
        "before_install": 1,
        "exact_duplicate": 1,
        "negative_count": 1,
        "unknown_user": 1,
    }
    snaps = build_activity(users, clean, 24)
    u = snaps[snaps[S.ID] == 100].reset_index(drop=True)
    assert u[S.SNAPSHOT_TIME].tolist() == [t0, t0 + pd.Timedelta(hours=1), t0 + pd.Timedelta(hours=3)]
    assert u["event_1"].tolist() == [0, 2, 3] and u["event_3"].tolist() == [0, 0, 1]
    assert u["active_hours"].tolist() == [0, 1, 2] and u["last_active_hour"].tolist() == [0, 1, 3]


def test_read_raw_errors_say_what_is_wrong(tmp_path):
    f = tmp_path / "users.csv"
    f.write_text("user_id,country\n1,US\n")
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['install_time'"):
        read_raw(f, S.RAW_USER_COLUMNS)
    with pytest.raises(ValueError, match="unsupported file type"):
        read_raw(tmp_path / "users.xlsx", S.RAW_USER_COLUMNS)
