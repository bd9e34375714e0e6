"""Data tests on the customer_risk generator: layout, realism, the label's timing, and an exact oracle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.settings import ROOT
from domain.customer_risk import schema as S
from pipelines.common.params import load_params
from pipelines.customer_risk.params import GenerateParams
from synthetic.customer_risk import (
    EVIDENCE_COLUMNS,
    RiskModel,
    Truth,
    evidence,
    generate,
    p_suspended,
    risk_logit,
    simulate_chunk,
    timeline,
    tx_frame,
)

DAY = pd.Timedelta(days=1)


def small(**update) -> GenerateParams:
    p = load_params(ROOT / "params.yaml").customer_risk.generate
    base = {"n_labeled": 3000, "n_unlabeled": 1000, "chunk_size": 2000, "calibration_customers": 4000}
    return p.model_copy(update={**base, **update})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    p = small()
    out = tmp_path_factory.mktemp("customer_risk_raw")
    summary = generate(p, out)
    return p, summary, out


def read_csv(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def without_defects(df: pd.DataFrame, defects: pd.DataFrame, file: str) -> pd.DataFrame:
    """The rows of a raw CSV that no planted defect touched (line = data row + 2)."""
    lines = defects.loc[defects["file"] == file, "line"]
    return df.drop(index=(lines - 2).tolist(), errors="ignore")


@pytest.fixture(scope="module")
def clean_raw(world):
    """Raw labeled files minus the planted defects, parsed."""
    _, _, out = world
    defects = pd.read_csv(out / S.DEFECTS_FILE)
    cust = without_defects(read_csv(out / "labeled/customers.csv"), defects, "labeled/customers.csv")
    tx = without_defects(read_csv(out / "labeled/transactions.csv"), defects, "labeled/transactions.csv")
    bad = set(defects[S.ID])
    cust = cust[~cust[S.ID].astype(int).isin(bad)].copy()
    tx = tx[tx[S.ID].str.isdigit()]
    tx = tx[tx[S.ID].astype(int).isin(set(cust[S.ID].astype(int)))].copy()
    for c in (S.SIGNUP_TIME, S.REVIEW_TIME):
        cust[c] = pd.to_datetime(cust[c], utc=True, format="ISO8601")
    cust[S.ID] = cust[S.ID].astype(int)
    tx[S.ID] = tx[S.ID].astype(int)
    tx[S.TIMESTAMP] = pd.to_datetime(tx[S.TIMESTAMP], utc=True, format="ISO8601")
    tx[S.AMOUNT] = tx[S.AMOUNT].astype(float)
    return cust, tx


def test_layout_and_schema(world):
    p, summary, out = world
    for cohort, cols in ((S.LABELED, S.RAW_LABELED_CUSTOMER_COLUMNS), (S.UNLABELED, S.RAW_CUSTOMER_COLUMNS)):
        cust = read_csv(out / cohort / "customers.csv")
        assert list(cust.columns) == cols
        tx = read_csv(out / cohort / "transactions.csv")
        assert list(tx.columns) == S.RAW_TRANSACTION_COLUMNS
    oracle = pd.read_parquet(out / S.ORACLE_FILE)
    assert oracle[S.ID].is_unique and len(oracle) == p.n_labeled + p.n_unlabeled
    assert set(EVIDENCE_COLUMNS) <= set(oracle.columns)
    assert {"p_true", "cohort", "as_of", "label", "risky", "patterns"} <= set(oracle.columns)
    assert oracle["p_true"].between(0, 1).all()
    assert oracle.loc[oracle["cohort"] == S.UNLABELED, "label"].isna().all()
    assert (out / S.EXTRACT_FILE).exists() and summary["extracted_at"] == "2026-09-03T00:00:00Z"


def test_review_times_are_weekly_snapshots_before_now(world, clean_raw):
    p, _, _ = world
    cust, _ = clean_raw
    start = pd.Timestamp(p.start, tz="UTC")
    now = start + p.history_days * DAY
    review = cust[S.REVIEW_TIME]
    assert (review == review.dt.normalize()).all(), "review_time at midnight UTC"
    assert ((review - start) / DAY % 7 == 0).all(), "review_time on a weekly snapshot date from start"
    assert (review < now).all() and (review >= now - p.review_weeks * 7 * DAY).all()
    assert review.nunique() == p.review_weeks
    assert (cust[S.SIGNUP_TIME] < review).all()
    assert set(cust[S.ACCOUNT_STATE]) == {S.ACTIVE, S.SUSPENDED}


def test_suspended_accounts_stop_at_review_active_ones_continue(clean_raw):
    cust, tx = clean_raw
    t = tx.merge(cust[[S.ID, S.ACCOUNT_STATE, S.REVIEW_TIME]], on=S.ID)
    after = t[S.TIMESTAMP] >= t[S.REVIEW_TIME]
    assert not (after & (t[S.ACCOUNT_STATE] == S.SUSPENDED)).any()
    active_after = t.loc[after & (t[S.ACCOUNT_STATE] == S.ACTIVE), S.ID].nunique()
    assert active_after > 0.5 * (cust[S.ACCOUNT_STATE] == S.ACTIVE).sum(), (
        "post-review data exists (leak bait)"
    )


def test_realism(world, clean_raw):
    _, _, out = world
    cust, tx = clean_raw
    oracle = pd.read_parquet(out / S.ORACLE_FILE)
    n_tx = oracle["n_transactions"]
    assert n_tx.std() / n_tx.mean() > 1.0, "activity should be very unequal (Gamma rates)"
    assert (n_tx < 10).mean() > 0.04, "some customers nearly dormant"
    top = n_tx.sort_values(ascending=False)
    assert top.iloc[: len(top) // 10].sum() / top.sum() > 0.35, "top 10% of customers: a large share"
    eur = tx[S.AMOUNT] * tx["currency"].map(S.EUR_PER_UNIT)
    assert eur.quantile(0.99) / eur.median() > 30, "heavy-tailed amounts"
    assert set(tx["type"]) == set(S.TX_TYPES) and set(tx["status"]) == set(S.STATUSES)
    assert set(tx["currency"]) <= S.CURRENCIES and tx["currency"].nunique() >= 8
    assert (tx["type"] == "card_payment").mean() > 0.5
    assert (tx["status"] == S.DECLINED).mean() < 0.08
    card = tx["type"] == "card_payment"
    assert (tx.loc[card, "merchant_category"] != "").all() and (
        tx.loc[~card, "merchant_category"] == ""
    ).all()
    cp_types = tx["type"].isin(S.COUNTERPARTY_TYPES)
    assert (tx.loc[cp_types, "counterparty_country"] != "").all()
    assert (tx.loc[~cp_types, "counterparty_country"] == "").all()
    hour = tx[S.TIMESTAMP].dt.hour
    assert (hour < 5).mean() < 0.08 and hour.between(10, 20).mean() > 0.5, "daily rhythm"
    dow = tx.loc[card, S.TIMESTAMP].dt.dayofweek.value_counts(normalize=True)
    assert dow[5] > dow[6] * 1.15, "Saturday busier than Sunday"
    # salaries: employees get a transfer_in on days 25-28 of (nearly) every month
    emp = cust.loc[cust["occupation"] == "employee", S.ID]
    sal = tx[tx[S.ID].isin(emp) & (tx["type"] == "transfer_in") & tx[S.TIMESTAMP].dt.day.between(25, 28)]
    months = sal.groupby(S.ID)[S.TIMESTAMP].apply(lambda s: s.dt.month.nunique())
    assert (months >= 5).mean() > 0.6
    # hidden risky minority, with several patterns
    assert 0.06 < oracle["risky"].mean() < 0.12
    assert oracle.loc[oracle["risky"], "patterns"].str.contains(r"\+").mean() > 0.3


def test_prevalence_and_oracle_quality(world):
    p, summary, out = world
    oracle = pd.read_parquet(out / S.ORACLE_FILE)
    lab = oracle[oracle["cohort"] == S.LABELED]
    y = lab["label"].astype(int)
    assert abs(y.mean() - p.target_prevalence) < 0.015, y.mean()
    # labels are Bernoulli(p_true): calibrated overall and by decile of p_true
    se = np.sqrt((lab["p_true"] * (1 - lab["p_true"])).sum()) / len(lab)
    assert abs(y.mean() - lab["p_true"].mean()) < 4 * se
    top = lab["p_true"] >= lab["p_true"].quantile(0.9)
    se_top = np.sqrt((lab.loc[top, "p_true"] * (1 - lab.loc[top, "p_true"])).sum()) / top.sum()
    assert abs(y[top].mean() - lab.loc[top, "p_true"].mean()) < 4 * se_top
    assert 0.86 <= summary["oracle_roc_auc"] <= 0.97, summary
    assert summary["oracle_pr_auc"] > 0.5, summary
    assert y[lab["risky"]].mean() > 5 * y[~lab["risky"]].mean(), "the hidden type drives the label"
    assert y[~lab["risky"]].sum() > 0, "some off-boarded customers look normal (label noise)"


def test_generation_is_deterministic(tmp_path):
    p = small(n_labeled=400, n_unlabeled=150, chunk_size=300, calibration_customers=400, defect_rate=0.01)
    s1, s2 = generate(p, tmp_path / "a"), generate(p, tmp_path / "b")
    s1.pop("seconds"), s2.pop("seconds")
    assert s1 == s2
    for f in (
        "labeled/customers.csv",
        "labeled/transactions.csv",
        "unlabeled/transactions.csv",
        "defects.csv",
    ):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / S.ORACLE_FILE), pd.read_parquet(tmp_path / "b" / S.ORACLE_FILE)
    )


# --- the oracle's definition -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def chunk():
    p = small()
    rng = np.random.default_rng(11)
    ids = np.arange(1, 1501, dtype=np.int64)
    return p, simulate_chunk(rng, ids, S.LABELED, p, Truth(), RiskModel())


def test_more_declines_never_lower_p(chunk):
    """Adding declined transactions (any type, amount, time before as_of) raises the decline rate and
    changes no other evidence; p never goes down, and goes up for many customers."""
    _, ch = chunk
    tx = tx_frame(ch.tx, ch.customers[S.ID].to_numpy())
    tx = tx.astype(
        {c: str for c in ("currency", "type", "counterparty_country", "merchant_category", "status")}
    )
    rng = np.random.default_rng(5)
    cust = ch.customers.sample(600, random_state=1)
    k = rng.integers(1, 12, len(cust))
    rows = np.repeat(np.arange(len(cust)), k)
    back = rng.uniform(0.001, 60, len(rows))  # some inside the 30-day window, some before it
    extra = pd.DataFrame(
        {
            S.ID: cust[S.ID].to_numpy()[rows],
            S.TIMESTAMP: pd.DatetimeIndex(cust["as_of"])[rows] - pd.to_timedelta(back, unit="D"),
            S.AMOUNT: np.round(rng.lognormal(4, 2, len(rows)), 2),
            "currency": rng.choice(list(S.CURRENCIES), len(rows)),
            "type": rng.choice(list(S.TX_TYPES), len(rows)),
            "counterparty_country": rng.choice(["DE", "IR", "NG", "FR"], len(rows)),
            "merchant_category": "online_retail",
            "channel": "web",
            "status": S.DECLINED,
        }
    )
    before = evidence(ch.customers, tx, ch.customers["as_of"])
    after = evidence(ch.customers, pd.concat([tx, extra], ignore_index=True), ch.customers["as_of"])
    same = [c for c in EVIDENCE_COLUMNS if c not in ("n_attempts_30d", "n_declined_30d", "decline_rate_30d")]
    pd.testing.assert_frame_equal(before[same], after[same])
    assert (after["decline_rate_30d"] >= before["decline_rate_30d"]).all()
    assert (after["n_declined_30d"] >= before["n_declined_30d"]).all()
    p0, p1 = p_suspended(before, -4.5), p_suspended(after, -4.5)
    assert (p1 >= p0 - 1e-15).all()
    assert (p1 > p0).sum() > 50


@pytest.mark.parametrize(
    "column",
    [
        "n_structuring_90d",
        "passthrough_share_90d",
        "corridor_share_90d",
        "decline_rate_30d",
        "night_share_90d",
        "inflow_income_ratio_90d",
        "burst_after_dormancy",
    ],
)
def test_each_behavioural_term_is_non_decreasing(chunk, column):
    _, ch = chunk
    ev = ch.ev
    bumped = ev.copy()
    if column == "burst_after_dormancy":
        bumped[column] = True
    else:
        bumped[column] = ev[column] * 1.5 + 0.05
    assert (risk_logit(bumped) >= risk_logit(ev) - 1e-12).all()


def test_evidence_definitions_on_a_hand_made_history():
    as_of = pd.Timestamp("2026-08-01", tz="UTC")
    h = pd.Timedelta(hours=1)
    cust = pd.DataFrame(
        {
            S.ID: [1, 2],
            S.SIGNUP_TIME: [as_of - 400 * DAY, as_of - 400 * DAY],
            "country": ["DE", "NG"],
            "occupation": ["employee", "cash_intensive_business"],
            "kyc_level": ["basic", "enhanced"],
            "declared_income_band": ["<15k", "30-60k"],
            "account_type": ["personal", "business"],
        }
    )

    def tx(cid, t, amount, typ, cp="", status=S.COMPLETED, currency="EUR"):
        return {
            S.ID: cid,
            S.TIMESTAMP: t,
            S.AMOUNT: amount,
            "currency": currency,
            "type": typ,
            "counterparty_country": cp,
            "status": status,
        }

    t0 = as_of - 10 * DAY
    rows = [
        tx(1, t0, 1000.0, "transfer_in", "DE"),
        tx(1, t0 + 5 * h, 900.0, "transfer_out", "IR"),  # passthrough (90% of the inbound, within 24 h)
        tx(1, t0 + 6 * h, 700.0, "transfer_out", "DE"),  # 70%: not a passthrough
        tx(1, t0 + 30 * h, 950.0, "crypto_buy", "MT"),  # after 24 h: not
        tx(1, as_of - 50 * DAY, 8500.0, "cash_deposit"),  # structuring: 8,500 is in
        tx(1, as_of - 49 * DAY, 10000.0, "cash_deposit"),  # 10,000 is not
        tx(1, as_of - 48 * DAY, 40000.0, "cash_deposit", currency="PLN"),  # 9,320 EUR: in
        tx(1, as_of - 91 * DAY, 9000.0, "cash_deposit"),  # outside 90 days
        tx(1, as_of - 2 * DAY, 20.0, "card_payment", status=S.DECLINED),
        tx(1, as_of, 20.0, "card_payment", status=S.DECLINED),  # at as_of: not before it
        tx(1, as_of + DAY, 9999.0, "cash_deposit"),  # after as_of: never counts
    ]
    burst = [tx(2, as_of - d * DAY + 2 * h, 300.0, "transfer_in", "DE") for d in range(1, 6)]  # 5 in 21 d
    rows += [*burst, tx(2, as_of - 82 * DAY, 50.0, "card_payment")]  # before the 60 dormant days
    ev = evidence(cust, pd.DataFrame(rows), as_of).set_index(S.ID)
    e1, e2 = ev.loc[1], ev.loc[2]
    assert e1["n_structuring_90d"] == 2
    out = 900 + 700 + 950
    assert e1["passthrough_share_90d"] == pytest.approx(900 / (out + 2000))
    transfers = 1000 + 900 + 700
    assert e1["corridor_share_90d"] == pytest.approx(900 / (transfers + 2000))
    assert e1["n_attempts_30d"] == 5 and e1["n_declined_30d"] == 1
    assert e1["decline_rate_30d"] == pytest.approx(1 / (5 + 5))
    inflow = 1000 + 8500 + 10000 + 40000 * S.EUR_PER_UNIT["PLN"]
    assert e1["inflow_income_ratio_90d"] == pytest.approx(inflow * 365 / 90 / 10_000)
    assert not e1["burst_after_dormancy"] and e2["burst_after_dormancy"]
    assert e2["inflow_income_ratio_90d"] == pytest.approx(1500 * 365 / 90 / (45_000 * 6))
    assert e2["residence_high_risk"] and e2["cash_intensive"] and e1["account_age_days"] == 400
    # one more transaction in the dormant window breaks the burst
    rows2 = [*rows, tx(2, as_of - 40 * DAY, 10.0, "card_payment")]
    assert not evidence(cust, pd.DataFrame(rows2), as_of).set_index(S.ID).loc[2, "burst_after_dormancy"]


def test_timeline_review_dates():
    p = small()
    start, now, reviews = timeline(p)
    assert len(reviews) == p.review_weeks
    assert ((reviews - start) % (7 * 86400) == 0).all() and (reviews < now).all()
