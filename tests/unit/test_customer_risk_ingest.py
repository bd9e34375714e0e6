"""customer_risk ingestion: every planted defect is caught with its reason, repairs are counted, clean
tables are typed, the oracle's evidence recomputes exactly from them, and a user's own folder works."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.settings import ROOT
from domain.customer_risk import schema as S
from pipelines.common.params import load_params
from pipelines.common.validation import RowValidator
from pipelines.customer_risk.ingest import extraction_time, find_inputs, ingest
from pipelines.customer_risk.params import IngestParams
from synthetic.customer_risk import EVIDENCE_COLUMNS, evidence, generate

FILES = [f"{c}/{f}.csv" for c in S.COHORTS for f in (S.CUSTOMERS, S.TRANSACTIONS)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("customer_risk")
    p = load_params(ROOT / "params.yaml").customer_risk
    gen = p.generate.model_copy(
        update={
            "n_labeled": 1500,
            "n_unlabeled": 600,
            "chunk_size": 1000,
            "calibration_customers": 1500,
            "defect_rate": 0.02,  # enough for every kind of defect at this size
        }
    )
    raw = root / "raw"
    generate(gen, raw)
    report = ingest(p.ingest, root / "clean", root / "quarantine", root / "metrics.json", raw)
    return raw, root, report


def quarantine(root, file: str) -> pd.DataFrame:
    return pd.read_csv(root / "quarantine" / file.replace("/", "_"), dtype=str, keep_default_na=False)


def test_every_planted_defect_is_quarantined_with_its_reason(world):
    raw, root, report = world
    defects = pd.read_csv(raw / S.DEFECTS_FILE, dtype={"key": str})
    from synthetic.customer_risk import CUSTOMER_DEFECTS, LABELED_CUSTOMER_DEFECTS, TX_DEFECTS

    assert set(defects["kind"]) >= set(CUSTOMER_DEFECTS) | set(LABELED_CUSTOMER_DEFECTS) | set(TX_DEFECTS)
    for file in FILES:
        q = quarantine(root, file)
        rep = report[file.replace("/", "_").removesuffix(".csv")]
        assert (
            rep["rows_in"] == rep["rows_ok"] + rep["quarantined"] == len(pd.read_csv(raw / file, dtype=str))
        )
        codes = q.set_index(q["source_row"].astype(int))["reason_code"].str.split("; ")
        planted = defects[(defects["file"] == file) & (defects["action"] == "quarantine")]
        for line, kind, code in planted[["line", "kind", "reason_code"]].itertuples(index=False):
            assert line in codes.index, (file, line, kind)
            assert code in codes[line], (file, line, kind, codes[line])
        # Nothing else is quarantined but the consequences of a planted defect: transactions of a
        # customer whose row was quarantined or whose id no longer parses.
        others = q[~q["source_row"].astype(int).isin(planted["line"])]
        assert set(others["reason_code"]) <= {"customer_quarantined", "unknown_customer"}, file
        for kind, n in planted["reason_code"].value_counts().items():
            assert rep["by_reason"][kind] >= n


def test_repairs_are_applied_and_counted(world):
    raw, root, report = world
    defects = pd.read_csv(raw / S.DEFECTS_FILE, dtype={"key": str})
    customers = pd.read_parquet(root / "clean" / S.CLEAN_CUSTOMERS)
    tx = pd.read_parquet(root / "clean" / S.CLEAN_TRANSACTIONS).set_index(S.TX_ID)
    repairs = defects[defects["action"] == "repair"]
    assert len(repairs) > 20
    for file, rows in repairs.groupby("file"):
        rep = report[file.replace("/", "_").removesuffix(".csv")]
        for code, n in rows["reason_code"].value_counts().items():
            assert rep["repaired"][code] >= n, (file, code)
        q = quarantine(root, file)
        assert not q["source_row"].astype(int).isin(rows["line"]).any(), "a repairable row was quarantined"
        if S.TRANSACTIONS in file:
            for code in (
                "filled_merchant_category",
                "cleared_merchant_category",
                "cleared_counterparty_country",
            ):
                assert rep["repaired"][code] == 0, "the generator writes these fields as the contract says"
            got = tx.loc[rows["key"]]
            assert got["type"].isin(S.TX_TYPES).all() and got["status"].isin(S.STATUSES).all()
            assert got["currency"].isin(S.CURRENCIES).all()
            assert got["counterparty_country"].dropna().str.fullmatch("[A-Z]{2}").all()
        else:
            got = customers.set_index(S.ID).loc[rows["key"].astype(int)]
            assert got["kyc_level"].isin(S.KYC_LEVELS).all() and got["occupation"].isin(S.OCCUPATIONS).all()
            assert got["country"].str.fullmatch("[A-Z]{2}").all()


def test_clean_tables_are_typed_and_consistent(world):
    _, root, report = world
    c = pd.read_parquet(root / "clean" / S.CLEAN_CUSTOMERS)
    t = pd.read_parquet(root / "clean" / S.CLEAN_TRANSACTIONS)
    assert c[S.ID].is_unique and str(c[S.ID].dtype) == "int64"
    assert (
        str(c[S.SIGNUP_TIME].dtype) == "datetime64[us, UTC]"
        and str(c[S.REVIEW_TIME].dtype) == "datetime64[us, UTC]"
    )
    lab = c[c[S.COHORT] == S.LABELED]
    unl = c[c[S.COHORT] == S.UNLABELED]
    assert len(lab) and len(unl) and set(c[S.COHORT]) == set(S.COHORTS)
    assert lab[S.ACCOUNT_STATE].isin(S.ACCOUNT_STATES).all() and lab[S.REVIEW_TIME].notna().all()
    assert unl[S.ACCOUNT_STATE].isna().all() and unl[S.REVIEW_TIME].isna().all()
    assert t[S.TX_ID].is_unique and t[S.ID].isin(c[S.ID]).all()
    assert str(t[S.TIMESTAMP].dtype) == "datetime64[us, UTC]"
    assert t[S.AMOUNT].dtype == "float64" and (t[S.AMOUNT] > 0).all()
    np.testing.assert_allclose(t[S.AMOUNT_EUR], t[S.AMOUNT] * t["currency"].map(S.EUR_PER_UNIT))
    for col in ("currency", "type", "channel", "status"):
        assert t[col].map(type).eq(str).all(), col
    assert (t[S.TIMESTAMP] <= pd.Timestamp(report["extracted_at"])).all()
    joined = t.merge(c[[S.ID, S.SIGNUP_TIME, S.ACCOUNT_STATE, S.REVIEW_TIME]], on=S.ID)
    assert (joined[S.TIMESTAMP] >= joined[S.SIGNUP_TIME]).all()
    closed = joined[S.ACCOUNT_STATE] == S.SUSPENDED
    assert (joined.loc[closed, S.TIMESTAMP] <= joined.loc[closed, S.REVIEW_TIME]).all()
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["clean"]["transactions"] == len(t) and metrics["clean"]["customers"] == len(c)


def test_oracle_evidence_recomputes_exactly_from_the_clean_tables(world):
    """For customers no defect touched, the evidence computed from ingested data, as of review_time
    (labeled) or the extraction time (unlabeled), is exactly the one the label was drawn from."""
    raw, root, report = world
    c = pd.read_parquet(root / "clean" / S.CLEAN_CUSTOMERS)
    t = pd.read_parquet(root / "clean" / S.CLEAN_TRANSACTIONS)
    oracle = pd.read_parquet(raw / S.ORACLE_FILE).set_index(S.ID)
    touched = set(pd.read_csv(raw / S.DEFECTS_FILE)[S.ID])
    c = c[~c[S.ID].isin(touched)].reset_index(drop=True)
    as_of = c[S.REVIEW_TIME].fillna(pd.Timestamp(report["extracted_at"]))
    ev = evidence(c, t, as_of).set_index(S.ID)
    assert len(ev) > 0.2 * len(oracle)  # the 2% defect rate touches most active customers
    assert (c[S.ACCOUNT_STATE] == S.SUSPENDED).sum() >= 5 and (c[S.COHORT] == S.UNLABELED).sum() >= 100
    assert (ev["n_attempts_30d"] > 0).sum() > 200
    expected = oracle.loc[ev.index, EVIDENCE_COLUMNS]
    pd.testing.assert_frame_equal(ev[EVIDENCE_COLUMNS], expected, check_dtype=False, rtol=1e-12)


# --- a user's own folder ---------------------------------------------------------------------------
def write(path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def customer(cid, **kw) -> dict:
    row = {
        S.ID: str(cid),
        S.SIGNUP_TIME: "2026-01-10T09:00:00Z",
        "country": "DE",
        "age_band": "25-34",
        "kyc_level": "standard",
        "occupation": "employee",
        "declared_income_band": "30-60k",
        "account_type": "personal",
    }
    return {**row, **kw}


def transaction(tid, cid, **kw) -> dict:
    row = {
        S.TX_ID: tid,
        S.ID: str(cid),
        S.TIMESTAMP: "2026-03-01T12:00:00Z",
        S.AMOUNT: "25.40",
        "currency": "EUR",
        "type": "card_payment",
        "counterparty_country": "",
        "merchant_category": "grocery",
        "channel": "pos",
        "status": "completed",
    }
    return {**row, **kw}


@pytest.fixture
def user_folder(tmp_path):
    raw = tmp_path / "my_export"
    lab = {S.ACCOUNT_STATE: "ACTIVE", S.REVIEW_TIME: "2026-06-01T00:00:00Z"}
    write(
        raw / "labeled" / "customers.csv",
        [
            customer(1, **lab),
            customer(2, **{**lab, S.ACCOUNT_STATE: "suspended", "kyc_level": " Basic "}),  # repaired
            customer(3, **{**lab, "occupation": "astronaut"}),  # quarantined
            customer(4, **{**lab, S.ACCOUNT_STATE: ""}),  # quarantined: no label
        ],
    )
    write(
        raw / "labeled" / "transactions.csv",
        [
            transaction("a1", 1),
            transaction("a2", 1, type=" Transfer_In ", counterparty_country="fr", amount="2500"),  # repaired
            transaction("a3", 1, amount="-5"),  # negative
            transaction("a4", 2, timestamp="2026-07-01T00:00:00Z"),  # after the suspension at review
            transaction("a5", 3),  # its customer was quarantined
            transaction("a6", 99),  # unknown customer
            transaction("a1", 2),  # id already used
            transaction("a7", 1, timestamp="2027-01-01T00:00:00Z"),  # after the export
            transaction("a8", 2, type="crypto_buy", merchant_category="", counterparty_country=""),  # no cp
        ],
    )
    write(raw / "unlabeled" / "customers.csv", [customer(10), customer(11, country="xx")])
    write(
        raw / "unlabeled" / "transactions.csv", [transaction("b1", 10), transaction("b2", 10, currency="usd")]
    )
    return raw


def test_a_users_own_folder_goes_through_with_reasons(user_folder, tmp_path):
    p = IngestParams(raw_dir=str(user_folder), extracted_at="2026-09-01T00:00:00Z")
    report = ingest(p, tmp_path / "clean", tmp_path / "q", tmp_path / "m.json")
    lc, lt = report["labeled_customers"], report["labeled_transactions"]
    assert lc["by_reason"] == {"missing_account_state": 1, "unknown_occupation": 1}
    assert lc["repaired"]["normalized_account_state"] == 1 and lc["repaired"]["normalized_kyc_level"] == 1
    assert lt["by_reason"] == {
        "after_extraction": 1,
        "after_suspension": 1,
        "customer_quarantined": 1,
        "duplicate_transaction_id": 1,
        "missing_counterparty_country": 1,
        "negative_amount": 1,
        "unknown_customer": 1,
    }
    assert lt["repaired"]["normalized_type"] == 1 and lt["repaired"]["normalized_counterparty_country"] == 1
    assert report["unlabeled_customers"]["by_reason"] == {"invalid_country": 1}
    q = pd.read_csv(tmp_path / "q" / "labeled_transactions.csv", dtype=str, keep_default_na=False)
    msg = q.set_index(S.TX_ID)["reason"]
    assert "is not in labeled/customers" in msg["a6"] and "after the account was suspended" in msg["a4"]
    assert (
        "already used by an earlier row"
        in q.loc[q["reason_code"] == "duplicate_transaction_id", "reason"].iloc[0]
    )
    c = pd.read_parquet(tmp_path / "clean" / S.CLEAN_CUSTOMERS)
    assert c[S.ID].tolist() == [1, 2, 10]
    assert c.set_index(S.ID).loc[2, S.ACCOUNT_STATE] == S.SUSPENDED
    t = pd.read_parquet(tmp_path / "clean" / S.CLEAN_TRANSACTIONS).set_index(S.TX_ID)
    assert sorted(t.index) == ["a1", "a2", "b1", "b2"]
    assert t.loc["a2", "type"] == "transfer_in" and t.loc["a2", "counterparty_country"] == "FR"
    assert t.loc["b2", S.AMOUNT_EUR] == pytest.approx(25.40 * S.EUR_PER_UNIT["USD"])
    assert pd.isna(t.loc["a2", "merchant_category"])


def test_parquet_input_gives_the_same_clean_tables(user_folder, tmp_path):
    p = IngestParams(raw_dir=str(user_folder), extracted_at="2026-09-01T00:00:00Z")
    ingest(p, tmp_path / "csv", tmp_path / "q1", tmp_path / "m1.json")
    for f in user_folder.rglob("*.csv"):
        df = pd.read_csv(f, dtype=str, keep_default_na=False)
        df[S.ID] = pd.to_numeric(df[S.ID]).astype("int64")  # typed columns, as a database export has
        for col in (S.SIGNUP_TIME, S.TIMESTAMP):
            if col in df:
                df[col] = pd.to_datetime(df[col], utc=True)
        if S.AMOUNT in df:
            df[S.AMOUNT] = df[S.AMOUNT].astype(float)
        df.to_parquet(f.with_suffix(".parquet"), index=False)
        f.unlink()
    ingest(p, tmp_path / "pq", tmp_path / "q2", tmp_path / "m2.json")
    for name in (S.CLEAN_CUSTOMERS, S.CLEAN_TRANSACTIONS):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "csv" / name), pd.read_parquet(tmp_path / "pq" / name)
        )


def test_clear_errors_for_a_folder_that_does_not_fit(tmp_path, user_folder):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_inputs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="found neither labeled/ nor unlabeled/"):
        find_inputs(tmp_path / "empty")
    (user_folder / "unlabeled" / "transactions.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"unlabeled: has customers.csv but no transactions.csv"):
        find_inputs(user_folder)
    with pytest.raises(ValueError, match="when was the export taken"):
        extraction_time(IngestParams(raw_dir=str(user_folder)), user_folder)
    with pytest.raises(ValueError, match="not an ISO-8601 timestamp"):
        extraction_time(IngestParams(raw_dir=str(user_folder), extracted_at="last friday"), user_folder)
    (user_folder / S.EXTRACT_FILE).write_text(json.dumps({S.EXTRACTED_AT: "2026-09-01T00:00:00Z"}))
    assert extraction_time(IngestParams(raw_dir=str(user_folder)), user_folder) == pd.Timestamp(
        "2026-09-01", tz="UTC"
    )
    (user_folder / "unlabeled" / "customers.csv").unlink()  # a labeled-only folder is fine
    f = user_folder / "labeled" / "customers.csv"
    pd.read_csv(f).drop(columns=["kyc_level"]).to_csv(f, index=False)
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['kyc_level'\]"):
        ingest(IngestParams(raw_dir=str(user_folder)), tmp_path / "c", tmp_path / "q", tmp_path / "m.json")


# --- the general checks added to RowValidator --------------------------------------------------------
def frame(**cols) -> pd.DataFrame:
    df = pd.DataFrame(cols)
    df.insert(0, "source_row", range(2, 2 + len(df)))
    return df


def test_validator_keep_first_for_ids_that_must_be_unique():
    df = frame(tx=["a", "a", "b", "a", "c"], v=["1", "1", "2", "3", "4"])
    val = RowValidator(df)
    val.duplicates(
        ["tx"],
        parsed_ok=pd.Series(True, index=df.index),
        keep_first_conflicting=True,
        conflicting_code="dup_id",
    )
    ok, _, counts = val.split()
    assert ok.tolist() == [True, False, True, False, True]
    assert counts == {"dup_id": 1, "exact_duplicate": 1}


def test_validator_missing_vs_unknown_vs_optional_categories():
    df = frame(
        cur=["EUR", " usd", "", "XYZ"],
        cp=["de", "", "ZZ", "FR"],
        ts=["2026-01-01T00:00:00Z", "", "soon", "2026-01-01"],
    )
    val = RowValidator(df)
    cur = val.category(
        "cur", frozenset({"EUR", "USD"}), "unknown_cur", upper=True, missing_code="missing_cur"
    )
    cp = val.category("cp", frozenset({"DE", "FR"}), "invalid_cp", upper=True, optional=True)
    ts = val.timestamp("ts", "bad_ts", missing_code="missing_ts")
    _, _, counts = val.split()
    assert counts == {"invalid_cp": 1, "missing_cur": 1, "missing_ts": 1, "unknown_cur": 1, "bad_ts": 1}
    assert cur.tolist()[:2] == ["EUR", "USD"] and pd.isna(cur[2])
    assert cp[0] == "DE" and pd.isna(cp[1])
    assert val.repairs == {"normalized_cur": 1, "normalized_cp": 1}
    assert ts[3] == pd.Timestamp("2026-01-01", tz="UTC")
