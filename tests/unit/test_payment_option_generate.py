"""The payment-option generator: the output contract, determinism, planted defects and an exact oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from synthetic.payment_option import (
    DPD_BUCKETS,
    FILES,
    OBLIGATION_COLUMNS,
    OFFER_COLUMNS,
    ORACLE_COLUMNS,
    SNAPSHOT_COLUMNS,
    acceptance_logit,
    dpd_bucket,
    generate,
)

SMALL = {"n_clients": 800, "months": 8}
COLUMNS = {
    "obligations": OBLIGATION_COLUMNS,
    "snapshots": SNAPSHOT_COLUMNS,
    "offers": OFFER_COLUMNS,
    "oracle": ORACLE_COLUMNS,
    "defects": ["file", "row", "obligation_id", "kind", "expected_reason"],
}
DAY = pd.Timedelta(days=1)


def read(out, table: str) -> pd.DataFrame:
    return pd.read_csv(out / FILES[table], dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("payment_option")
    summary = generate(out, **SMALL)
    return out, summary


@pytest.fixture(scope="module")
def raw(world):
    out, _ = world
    return {t: read(out, t) for t in FILES}


@pytest.fixture(scope="module")
def clean(raw):
    """The three data files minus the rows a planted defect touched, typed."""
    d = raw["defects"]
    res = {}
    for t in ("obligations", "snapshots", "offers"):
        bad = d.loc[d["file"] == FILES[t], "row"].astype(int)
        res[t] = raw[t].drop(index=bad)
    ob = res["obligations"].astype({"original_amount": float, "age": int, "obligation_id": int})
    sn = res["snapshots"].astype(
        {
            c: float
            for c in SNAPSHOT_COLUMNS
            if c not in ("snapshot_date", "dpd_bucket", "preferred_channel", "last_offer_outcome")
        }
    )
    sn["obligation_id"] = sn["obligation_id"].astype(int)
    of = res["offers"].astype({"obligation_id": int})
    return {"obligations": ob, "snapshots": sn, "offers": of}


def test_files_and_exact_columns(world, raw):
    out, summary = world
    for table, cols in COLUMNS.items():
        assert (out / FILES[table]).exists()
        assert list(raw[table].columns) == cols, table
    assert summary["rows"]["snapshots"] == len(raw["snapshots"])
    assert summary["rows"]["offers"] == len(raw["offers"])
    assert len(raw["oracle"]) == summary["labeled_offers"] + summary["unlabeled_offers"]


def test_same_seed_same_files_other_seed_other_files(world, tmp_path):
    out, _ = world
    generate(tmp_path / "again", **SMALL)
    generate(tmp_path / "other", seed=7, **SMALL)
    for name in FILES.values():
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    for name in ("obligations.csv", "snapshots.csv", "offers.csv", "oracle.csv"):
        assert (tmp_path / "other" / name).read_bytes() != (out / name).read_bytes(), name


def test_unknown_params_are_refused(tmp_path):
    with pytest.raises(TypeError):
        generate(tmp_path, n_customers=10)
    with pytest.raises(ValueError):
        generate(tmp_path, months=1)


def test_only_the_last_months_offers_are_unlabeled(clean, raw):
    of = clean["offers"]
    dates = pd.to_datetime(of["offer_date"])
    last = dates == dates.max()
    assert (of.loc[last, "accepted"] == "").all()
    assert of.loc[~last, "accepted"].isin(["0", "1"]).all()
    assert last.sum() > 0 and (~last).sum() > 0
    # offers are made the day after a month-end; the last month's outcomes are not due by the data's end
    assert (dates.dt.day == 1).all()
    snap_end = pd.to_datetime(clean["snapshots"]["snapshot_date"]).max()
    assert dates.max() == snap_end + DAY
    data_end = snap_end + pd.Timedelta(days=30)  # label_delay_days after the last month-end
    assert ((dates + pd.Timedelta(days=30) > data_end) == last).all()


def test_value_sets_and_ranges_on_clean_rows(clean):
    ob, sn, of = clean["obligations"], clean["snapshots"], clean["offers"]
    assert set(ob["product"]) == {"credit_card", "consumer_loan", "vehicle_loan", "mortgage", "overdraft"}
    assert (ob["original_amount"] > 0).all() and ob["age"].between(18, 90).all()
    assert (ob["client_since"] <= ob["origination_date"]).all()
    revolving = ob["product"].isin(["credit_card", "overdraft"])
    assert (ob.loc[revolving, "term_months"] == "12").all()
    assert (sn["days_past_due"] >= 1).all() and (sn["balance"] >= 0).all()
    assert sn["payment_ratio_3m"].between(0, 1.5).all()
    assert (sn["prev_accepted"] <= sn["prev_offers"]).all() and (sn["months_in_arrears"] >= 1).all()
    assert set(sn["last_offer_outcome"]) <= {"none", "accepted", "rejected", "broken"}
    assert set(of["option"]) == {"refinancing", "term_extension", "discount_agreement", "grace_period"}
    assert set(of["channel"]) <= {"app", "web", "branch", "phone", "sms"}
    assert (pd.to_datetime(sn["snapshot_date"]) + DAY).dt.day.eq(1).all()  # month-ends


def test_dpd_bucket_matches_days_past_due(clean):
    sn = clean["snapshots"]
    assert (sn["dpd_bucket"] == dpd_bucket(sn["days_past_due"].to_numpy())).all()
    assert set(sn["dpd_bucket"]) == set(DPD_BUCKETS)
    assert (sn.loc[sn["dpd_bucket"] == "180+", "days_past_due"] > 180).all()
    assert (sn.loc[sn["dpd_bucket"] == "1-30", "days_past_due"] <= 30).all()


def test_every_offer_has_a_snapshot_the_day_before(raw, clean):
    sn = raw["snapshots"].copy()
    d = raw["defects"]
    missing = d[(d["file"] == FILES["snapshots"]) & (d["kind"] == "missing_obligation_id")]
    sn.loc[missing["row"].astype(int), "obligation_id"] = missing["obligation_id"].to_numpy()
    keys = set(zip(sn["obligation_id"].astype(int), sn["snapshot_date"], strict=True))
    of = clean["offers"]
    day_before = (pd.to_datetime(of["offer_date"]) - DAY).dt.strftime("%Y-%m-%d")
    assert all((o, s) in keys for o, s in zip(of["obligation_id"], day_before, strict=True))


def test_prev_offers_counts_the_offers_made_before_the_snapshot(raw, clean):
    orc = raw["oracle"].assign(obligation_id=lambda d: d["obligation_id"].astype(int))
    sn = clean["snapshots"]
    m = sn[["obligation_id", "snapshot_date", "prev_offers"]].merge(orc, on="obligation_id", how="left")
    m["before"] = m["offer_date"].fillna("9999-12-31") < m["snapshot_date"]  # ISO strings sort as dates
    n_before = m.groupby(["obligation_id", "snapshot_date"])["before"].sum()
    expected = sn.set_index(["obligation_id", "snapshot_date"])["prev_offers"]
    assert (n_before.loc[expected.index].to_numpy() == expected.to_numpy()).all()
    first = sn["snapshot_date"] == sn["snapshot_date"].min()
    assert (sn.loc[first, "prev_offers"] == 0).all()


def test_every_planted_defect_is_in_its_file(raw):
    d = raw["defects"]
    assert len(d) > 0
    assert {"snapshots.csv", "offers.csv", "obligations.csv"} == set(d["file"])
    check = {
        "negative_original_amount": lambda r: float(r["original_amount"]) < 0,
        "unknown_product": lambda r: r["product"] == "leasing",
        "age_out_of_range": lambda r: r["age"] in ("7", "140"),
        "negative_balance": lambda r: float(r["balance"]) < 0,
        "non_numeric_days_past_due": lambda r: (
            r["days_past_due"] == "n/a" or r["days_past_due"].endswith("x")
        ),
        "unknown_preferred_channel": lambda r: r["preferred_channel"] == "fax",
        "missing_obligation_id": lambda r: r["obligation_id"] == "",
        "bad_accepted": lambda r: r["accepted"] in ("yes", "2"),
        "unknown_option": lambda r: r["option"] == "cashback",
        "bad_offer_date": lambda r: r["offer_date"] == "2025-13-45",
    }
    tables = {FILES[t]: raw[t] for t in ("obligations", "snapshots", "offers")}
    for rec in d.itertuples():
        df = tables[rec.file]
        row = df.iloc[int(rec.row)]
        if rec.kind == "exact_duplicate":
            same = (df.iloc[: int(rec.row)] == row).all(axis=1)
            assert same.sum() == 1, rec
        else:
            assert check[rec.kind](row), rec
            if rec.kind != "missing_obligation_id":
                assert row["obligation_id"] == rec.obligation_id, rec
    # every kind of every file is planted at least once, even in a small world
    assert d.groupby("file")["kind"].nunique().to_dict() == {
        "obligations.csv": 3,
        "offers.csv": 4,
        "snapshots.csv": 5,
    }


@pytest.fixture(scope="module")
def labeled(raw):
    orc = raw["oracle"].astype({"p_accept": float})
    of = raw["offers"].drop_duplicates()
    of = of[of["accepted"].isin(["0", "1"])]
    m = of.merge(orc, on=["obligation_id", "offer_date"], validate="one_to_one")
    return m["accepted"].astype(int).to_numpy(), m["p_accept"].to_numpy()


def test_oracle_is_calibrated_and_informative(labeled):
    y, p = labeled
    assert len(y) > 500
    se = np.sqrt(p.mean() * (1 - p.mean()) / len(y))
    assert abs(y.mean() - p.mean()) < 4 * se
    assert 0.15 < y.mean() < 0.45
    assert roc_auc_score(y, p) > 0.7
    bins = np.digitize(p, [0.1, 0.25, 0.45])
    for b in np.unique(bins):
        yb, pb = y[bins == b], p[bins == b]
        assert abs(yb.mean() - pb.mean()) < 4 * np.sqrt(pb.mean() * (1 - pb.mean()) / len(yb)) + 0.02


def test_oracle_is_a_function_of_the_written_values(raw, clean):
    """p_accept is reproduced exactly from the clean files: offer + static row + snapshot of the day before."""
    of = clean["offers"].copy()
    of["snapshot_date"] = (pd.to_datetime(of["offer_date"]) - DAY).dt.strftime("%Y-%m-%d")
    m = of.merge(clean["obligations"], on=["obligation_id", "client_id"]).merge(
        clean["snapshots"], on=["obligation_id", "snapshot_date"]
    )
    orc = raw["oracle"].astype({"obligation_id": int, "p_accept": float})
    m = m.merge(orc, on=["obligation_id", "offer_date"], validate="one_to_one")
    assert len(m) > 0.9 * len(of)
    p = 1 / (1 + np.exp(-acceptance_logit(m)))
    np.testing.assert_allclose(p, m["p_accept"].to_numpy(), rtol=1e-12, atol=0)


def test_acceptance_by_option_and_product(clean, raw):
    """Term extensions suit mortgages and vehicle loans better than cards and overdrafts."""
    orc = raw["oracle"].astype({"obligation_id": int, "p_accept": float})
    of = clean["offers"].merge(clean["obligations"][["obligation_id", "product"]], on="obligation_id")
    of = of.merge(orc, on=["obligation_id", "offer_date"])
    te = of[(of["option"] == "term_extension") & of["accepted"].isin(["0", "1"])]
    secured = te["product"].isin(["mortgage", "vehicle_loan"])
    revolving = te["product"].isin(["credit_card", "overdraft"])
    acc = te["accepted"].astype(int)
    assert acc[secured].mean() > acc[revolving].mean() + 0.05
    assert te.loc[secured, "p_accept"].mean() > te.loc[revolving, "p_accept"].mean() + 0.1
    # the policy is not uniform, but every option reaches every product
    mix = pd.crosstab(of["product"], of["option"], normalize="index")
    assert (mix > 0).all().all()
    assert mix.loc["mortgage", "term_extension"] > mix.loc["credit_card", "term_extension"]
