"""The spam generator: the output contract, determinism, planted defects, the launch of manual_spam_count,
the label delay, the behaviour shift and an exact, calibrated oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from synthetic.spam import (
    CALL_COLUMNS,
    COUNT_COLUMNS,
    COUNTRIES,
    DEFECT_COLUMNS,
    DEFECT_KINDS,
    FILES,
    LABEL_COLUMNS,
    ORACLE_COLUMNS,
    generate,
    spam_posterior,
    typed_calls,
)

SMALL = {"n_callers": 2500, "review_rate": 0.15}
BRIEF = [  # the brief's fields, in its order
    "id",
    "country",
    "call_count",
    "unique_call_count",
    "total_duration",
    "answered_call_count",
    "rejected_call_count",
    "missed_call_count",
    "weekdays_call_count",
    "weekend_call_count",
    "overtime_call_count",
    "out_of_work_call_count",
]
COLUMNS = {
    "calls": [*BRIEF, "manual_spam_count", "week", "week_end"],
    "labels": ["id", "prediction_time", "is_spam"],
    "oracle": ["id", "prediction_time", "p_spam"],
    "defects": ["kind", "id", "week", "row", "expected_reason"],
}
DAY = pd.Timedelta(days=1)


def read(out, table: str) -> pd.DataFrame:
    return pd.read_csv(out / FILES[table], dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("spam")
    return out, generate(out, **SMALL)


@pytest.fixture(scope="module")
def raw(world):
    out, _ = world
    return {t: read(out, t) for t in FILES}


@pytest.fixture(scope="module")
def clean(raw):
    """calls.csv minus what ingest quarantines: the defect rows and the originals of conflicting duplicates."""
    calls, d = raw["calls"], raw["defects"]
    bad = set(d["row"].astype(int))
    conflict = d[d["kind"] == "conflicting_duplicate"]
    keys = set(zip(conflict["id"], conflict["week"], strict=True))
    bad |= {i for i, k in enumerate(zip(calls["id"], calls["week"], strict=True)) if k in keys}
    return typed_calls(calls.drop(index=sorted(bad)))


@pytest.fixture(scope="module")
def scored(raw):
    """Label rows with their oracle score."""
    m = raw["labels"].merge(raw["oracle"], on=["id", "prediction_time"], validate="one_to_one")
    return m.assign(id=m["id"].astype(np.int64), p_spam=m["p_spam"].astype(float))


def test_files_and_exact_columns(world, raw):
    _, summary = world
    declared = {
        "calls": CALL_COLUMNS,
        "labels": LABEL_COLUMNS,
        "oracle": ORACLE_COLUMNS,
        "defects": DEFECT_COLUMNS,
    }
    for table, cols in COLUMNS.items():
        assert list(raw[table].columns) == cols == declared[table], table
    assert list(raw["calls"].columns[2:12]) == COUNT_COLUMNS
    assert summary["rows"]["calls"] == len(raw["calls"])
    assert len(raw["oracle"]) == len(raw["labels"]) == summary["labeled"] + summary["unlabeled"]
    assert sum(summary["callers_by_kind"].values()) == SMALL["n_callers"]
    assert (summary["shift_week"], summary["launch_week"]) == (24, 13)
    ids = raw["calls"]["id"].astype(np.int64)
    assert ids.min() >= 80_000_001 and ids.max() < 80_000_001 + SMALL["n_callers"]


def test_same_seed_same_files_other_seed_other_files(world, tmp_path):
    out, _ = world
    generate(tmp_path / "again", **SMALL)
    generate(tmp_path / "other", seed=7, **SMALL)
    for name in FILES.values():
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
        assert (tmp_path / "other" / name).read_bytes() != (out / name).read_bytes(), name


def test_bad_params_are_refused(tmp_path):
    with pytest.raises(ValidationError):
        generate(tmp_path, n_customers=10)
    with pytest.raises(ValidationError, match="Monday"):
        generate(tmp_path, start="2025-06-03")
    with pytest.raises(ValidationError):
        generate(tmp_path, shift_week=26)


def test_weeks_and_consistency_on_clean_rows(clean):
    c = clean
    week, end = pd.to_datetime(c["week"]), pd.to_datetime(c["week_end"])
    assert (week.dt.dayofweek == 0).all() and (end - week == 7 * DAY).all()
    assert week.nunique() == 26
    assert not c.duplicated(["id", "week"]).any()
    assert c["country"].isin(COUNTRIES).all() and c["country"].nunique() >= 20
    assert (c.groupby("id")["country"].nunique() == 1).all()
    n = c["call_count"]
    assert (c[COUNT_COLUMNS] >= 0).all().all()
    assert (c["answered_call_count"] + c["rejected_call_count"] + c["missed_call_count"] == n).all()
    assert (c["weekdays_call_count"] + c["weekend_call_count"] == n).all()
    assert (c["unique_call_count"] <= n).all() and ((c["unique_call_count"] > 0) == (n > 0)).all()
    assert (c["overtime_call_count"] <= c["weekdays_call_count"]).all()
    assert (c["overtime_call_count"] + c["out_of_work_call_count"] <= n).all()
    assert (c.loc[c["answered_call_count"] == 0, "total_duration"] == 0).all()
    marked = c["manual_spam_count"].notna()
    seen = c["answered_call_count"] + c["rejected_call_count"]
    assert (c.loc[marked, "manual_spam_count"] <= seen[marked]).all()
    # a caller's weeks are one unbroken run (start week .. churn), whatever defects removed
    first, last = week.groupby(c["id"]).transform("min"), week.groupby(c["id"]).transform("max")
    assert ((last - first) / (7 * DAY) + 1 >= week.groupby(c["id"]).transform("size")).all()


def test_manual_spam_count_is_empty_exactly_before_the_launch_week(world, clean):
    _, summary = world
    before = clean["week"] < summary["launch_start"]  # ISO strings sort as dates
    assert before.any() and (~before).any()
    assert (clean["manual_spam_count"].isna() == before).all()
    assert (clean.loc[~before, "manual_spam_count"] > 0).any()


def test_every_planted_defect_is_in_its_row(raw):
    calls, d = raw["calls"], raw["defects"]
    assert set(d["kind"]) == set(DEFECT_KINDS)  # every kind, even in a small world
    assert 0.002 < len(d) / len(calls) < 0.005

    def num(r, c):
        return int(r[c])

    check = {
        "outcome_sum_mismatch": lambda r: (
            num(r, "answered_call_count") + num(r, "rejected_call_count") + num(r, "missed_call_count")
            != num(r, "call_count")
        ),
        "weekpart_sum_mismatch": lambda r: (
            num(r, "weekdays_call_count") + num(r, "weekend_call_count") != num(r, "call_count")
        ),
        "unique_above_total": lambda r: num(r, "unique_call_count") > num(r, "call_count"),
        "negative_count": lambda r: any(r[c].startswith("-") for c in COUNT_COLUMNS),
        "non_numeric_count": lambda r: any(not r[c].lstrip("-").isdigit() for c in COUNT_COLUMNS),
        "unknown_country": lambda r: r["country"] in ("XX", "UK"),
    }
    n_data = len(calls) - d["kind"].isin(["exact_duplicate", "conflicting_duplicate"]).sum()
    for rec in d.itertuples():
        row = calls.iloc[int(rec.row)]
        assert (row["id"], row["week"]) == (rec.id, rec.week), rec
        same_key = calls[(calls["id"] == rec.id) & (calls["week"] == rec.week)]
        if rec.kind in ("exact_duplicate", "conflicting_duplicate"):
            assert int(rec.row) >= n_data and len(same_key) == 2, rec
            differ = (same_key.iloc[0] != same_key.iloc[1]).any()
            assert differ == (rec.kind == "conflicting_duplicate"), rec
        else:
            assert len(same_key) == 1 and check[rec.kind](row), rec
        if rec.kind in ("negative_count", "non_numeric_count"):
            col = rec.expected_reason.split("_", 2)[2]
            assert col in COUNT_COLUMNS and not row[col].isdigit(), rec
    # rows outside defects.csv break no rule
    ok = calls.drop(index=d["row"].astype(int))
    assert ok["country"].isin(COUNTRIES).all()
    assert ok[COUNT_COLUMNS].apply(lambda s: s.str.isdigit()).all().all()


def test_labels_are_empty_exactly_in_the_last_delay_window(world, raw, clean):
    _, summary = world
    lab = raw["labels"]
    t = pd.to_datetime(lab["prediction_time"])
    data_end = pd.to_datetime(clean["week_end"]).max()
    assert str(data_end.date()) == summary["data_end"]
    young = t + 14 * DAY > data_end
    assert ((lab["is_spam"] == "") == young).all()
    assert lab.loc[~young, "is_spam"].isin(["0", "1"]).all()
    assert t[young].nunique() == 2 and (t[young] > t[~young].max()).all()
    # reviews are made at a week's end, from the warm-up on, of callers with a row that week
    assert (t.dt.dayofweek == 0).all() and t.min() == pd.Timestamp("2025-06-02") + 5 * 7 * DAY
    weeks = set(zip(raw["calls"]["id"], raw["calls"]["week_end"], strict=True))
    assert all(k in weeks for k in zip(lab["id"], lab["prediction_time"], strict=True))
    assert not lab.duplicated(["id", "prediction_time"]).any()


def test_oracle_is_reproduced_from_the_clean_rows(world, raw, clean):
    """p_spam is a function of the written values: the clean rows strictly before each prediction time."""
    _, summary = world
    p = spam_posterior(clean, raw["labels"], summary["shift_start"])
    np.testing.assert_allclose(p, raw["oracle"]["p_spam"].astype(float), rtol=1e-12, atol=1e-15)


def test_oracle_sees_only_rows_known_before_the_prediction_time(world, raw, clean):
    _, summary = world
    lab = raw["labels"][raw["labels"]["is_spam"] != ""].iloc[[0]]
    pid, t = int(lab["id"].iloc[0]), pd.Timestamp(lab["prediction_time"].iloc[0])
    base = spam_posterior(clean, lab, summary["shift_start"])

    def bumped(week_end: pd.Timestamp) -> np.ndarray:
        c = clean.copy()
        at = (c["id"] == pid) & (c["week_end"] == str(week_end.date()))
        assert at.sum() == 1
        for col in ("call_count", "rejected_call_count", "weekdays_call_count"):
            c.loc[at, col] += 40
        return spam_posterior(c, lab, summary["shift_start"])

    assert bumped(t) == base  # the reviewed week's own row ends at the prediction time: not known yet
    assert abs(bumped(t - 7 * DAY) - base) > 1e-9


def test_oracle_is_calibrated_and_beats_a_rejection_rule(scored, clean):
    lab = scored[scored["is_spam"] != ""]
    y, p = lab["is_spam"].astype(int).to_numpy(), lab["p_spam"].to_numpy()
    assert len(y) > 5000 and 0.03 < y.mean() < 0.09
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt(p.mean() * (1 - p.mean()) / len(y))
    bins = np.digitize(p, [0.02, 0.2, 0.5, 0.8])
    assert len(np.unique(bins)) == 5
    for b in np.unique(bins):
        yb, pb = y[bins == b], p[bins == b]
        se = np.sqrt(max(pb.mean() * (1 - pb.mean()), 0.01) / len(yb))
        # reviews of one caller in several weeks are correlated: a wider band than independent draws
        assert abs(yb.mean() - pb.mean()) < 5 * se + 0.03, (b, len(yb), yb.mean(), pb.mean())
    # the simple rule: the rejection share of the latest row known at the prediction time
    last = clean.assign(prediction_time=(pd.to_datetime(clean["week_end"]) + 7 * DAY).dt.strftime("%Y-%m-%d"))
    m = lab.merge(last, on=["id", "prediction_time"], how="left")
    rule = (m["rejected_call_count"] / m["call_count"].clip(lower=1)).fillna(0).to_numpy()
    auc_rule, auc_oracle = roc_auc_score(y, rule), roc_auc_score(y, p)
    assert 0.6 < auc_rule < auc_oracle - 0.08 and auc_oracle > 0.95


def test_spammers_shift_behaviour_from_the_shift_week(world, raw, clean):
    _, summary = world
    lab = raw["labels"]
    spam_ids = set(lab.loc[lab["is_spam"] == "1", "id"].astype(np.int64))
    ham_ids = set(lab.loc[lab["is_spam"] == "0", "id"].astype(np.int64))
    c = clean[clean["call_count"] > 0]
    after = c["week"] >= summary["shift_start"]
    rejected = c["rejected_call_count"] / c["call_count"]

    def change(ids: set) -> float:
        who = c["id"].isin(ids)
        return rejected[who & ~after].mean() - rejected[who & after].mean()

    assert change(spam_ids) > 0.06  # spammers are rejected less from the shift on
    assert abs(change(ham_ids)) < 0.02  # the others behave as before
    spam = c[c["id"].isin(spam_ids) & (c["answered_call_count"] > 0)]
    secs = spam["total_duration"] / spam["answered_call_count"]
    assert (
        secs[spam["week"] >= summary["shift_start"]].median()
        > 1.3 * secs[spam["week"] < summary["shift_start"]].median()
    )
