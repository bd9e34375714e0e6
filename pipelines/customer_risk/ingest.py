"""Ingest and validate the fintech's customers and transactions; write typed clean tables.

Inputs: a raw folder (``customer_risk.ingest.raw_dir``; layout in `schema`): ``labeled/`` and/or
``unlabeled/``, each with ``customers`` and ``transactions`` as CSV or Parquet, and the export's time
``extracted_at`` (from params, else ``<raw_dir>/extract.json``). Every row is validated; rejected rows go
to ``<quarantine>/<cohort>_<file>.csv`` with a ``reason_code`` and a readable ``reason``, and the counts
(rows in / ok / quarantined, by reason, by repair) to the metrics JSON. Nothing is dropped silently.

What is impossible, and therefore quarantined:
* a timestamp after ``extracted_at`` (the export cannot hold later events): ``after_extraction``;
* a transaction before its customer's signup (``before_signup``), or of a SUSPENDED labeled customer
  after its review_time (the account was closed then: ``after_suspension``);
* a review_time before signup (``review_before_signup``); a customer id in both cohorts.
Transactions of customers that are not in their cohort's customers file are ``unknown_customer``; of
customers whose row was quarantined, ``customer_quarantined``. A transaction id seen before (in the same
file or, for the unlabeled cohort, in the labeled one) keeps its first row; later rows are quarantined.

Repairs (counted, not rejected): surrounding spaces and letter case of closed categories (``' Card_Payment '``
-> ``card_payment``, ``'COMPLETED'`` -> ``completed``, ``'de'`` -> ``DE``, ``'suspended'`` -> ``SUSPENDED``);
a card payment without a merchant category gets ``other``; a merchant category on anything but a card
payment, or a counterparty country on card or cash, is cleared (the contract has them empty there).

Outputs (``--clean``): ``customers.parquet`` (both cohorts, a ``cohort`` column; account_state and
review_time null for the unlabeled cohort) and ``transactions.parquet`` (typed: UTC timestamps in
microseconds, amount and amount_eur = amount x schema.EUR_PER_UNIT[currency], categories as strings).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from domain.customer_risk import schema as S
from pipelines.common.geo import ISO_3166_ALPHA2
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser, write_metrics
from pipelines.common.validation import RowValidator, read_raw
from pipelines.customer_risk.params import IngestParams

log = logging.getLogger(__name__)


def find_inputs(raw_dir: Path) -> dict[str, dict[str, Path]]:
    """{cohort: {"customers": path, "transactions": path}} for the cohorts present in `raw_dir`."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: no such folder (customer_risk.ingest.raw_dir)")
    found: dict[str, dict[str, Path]] = {}
    for cohort in S.COHORTS:
        files = {}
        for stem in (S.CUSTOMERS, S.TRANSACTIONS):
            path = next(
                (
                    raw_dir / cohort / f"{stem}{ext}"
                    for ext in S.RAW_EXTENSIONS
                    if (raw_dir / cohort / f"{stem}{ext}").exists()
                ),
                None,
            )
            if path is not None:
                files[stem] = path
        if len(files) == 1:
            missing = ({S.CUSTOMERS, S.TRANSACTIONS} - set(files)).pop()
            raise FileNotFoundError(
                f"{raw_dir / cohort}: has {next(iter(files.values())).name} but no {missing}.csv or {missing}.parquet"
            )
        if files:
            found[cohort] = files
    if not found:
        raise FileNotFoundError(
            f"{raw_dir}: found neither labeled/ nor unlabeled/ with customers.csv|.parquet and "
            "transactions.csv|.parquet"
        )
    return found


def extraction_time(p: IngestParams, raw_dir: Path) -> pd.Timestamp:
    """When the export was taken: params first, else <raw_dir>/extract.json. Without either, fail."""
    value = p.extracted_at
    source = "customer_risk.ingest.extracted_at"
    if value is None:
        f = Path(raw_dir) / S.EXTRACT_FILE
        if not f.exists():
            raise ValueError(
                f"when was the export taken? Set customer_risk.ingest.extracted_at (ISO-8601, UTC) in "
                f'params.yaml or write {f} with {{"{S.EXTRACTED_AT}": "2026-09-03T00:00:00Z"}}; '
                "timestamps after it are quarantined as impossible"
            )
        value = json.loads(f.read_text()).get(S.EXTRACTED_AT)
        source = str(f)
    ts = pd.to_datetime(value, utc=True, errors="coerce", format="ISO8601")
    if pd.isna(ts):
        raise ValueError(f"{source}: extracted_at {value!r} is not an ISO-8601 timestamp")
    return ts


def _report(
    raw: pd.DataFrame, ok: pd.Series, quarantine: pd.DataFrame, reasons: dict, v: RowValidator
) -> dict:
    return v.report(ok, quarantine, reasons)


def _raw_ids(raw: pd.DataFrame) -> pd.Series:
    """Customer ids of a raw file as numbers (NaN where they do not parse), without validating."""
    return pd.to_numeric(raw[S.ID].astype("string").str.strip(), errors="coerce")


def validate_customers(
    raw: pd.DataFrame,
    cohort: str,
    extracted_at: pd.Timestamp,
    other_cohort_ids: pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    labeled = cohort == S.LABELED
    v = RowValidator(raw)
    cid = v.integer(S.ID, "bad_customer_id", min_value=1, negative_code="bad_customer_id")
    signup = v.timestamp(S.SIGNUP_TIME, "bad_signup_time", missing_code="missing_signup_time")
    cats = {
        "country": v.category(
            "country", ISO_3166_ALPHA2, "invalid_country", upper=True, missing_code="missing_country"
        ),
        "age_band": v.category("age_band", S.AGE_BANDS, "unknown_age_band", missing_code="missing_age_band"),
        "kyc_level": v.category(
            "kyc_level", S.KYC_LEVELS, "unknown_kyc_level", missing_code="missing_kyc_level"
        ),
        "occupation": v.category(
            "occupation", S.OCCUPATIONS, "unknown_occupation", missing_code="missing_occupation"
        ),
        "declared_income_band": v.category(
            "declared_income_band",
            S.INCOME_BANDS,
            "unknown_declared_income_band",
            missing_code="missing_declared_income_band",
        ),
        "account_type": v.category(
            "account_type", S.ACCOUNT_TYPES, "unknown_account_type", missing_code="missing_account_type"
        ),
    }
    when = extracted_at.isoformat()
    v.reject(
        signup > extracted_at, "after_extraction", f"{S.SIGNUP_TIME} is after the export was taken ({when})"
    )
    state = pd.Series(pd.NA, index=raw.index, dtype="string")
    review = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    if labeled:
        state = v.category(
            S.ACCOUNT_STATE,
            S.ACCOUNT_STATES,
            "unknown_account_state",
            upper=True,
            missing_code="missing_account_state",
        )
        review = v.timestamp(S.REVIEW_TIME, "bad_review_time", missing_code="missing_review_time")
        v.reject(
            review > extracted_at,
            "after_extraction",
            f"{S.REVIEW_TIME} is after the export was taken ({when})",
        )
        v.reject(
            review < signup,
            "review_before_signup",
            lambda r: (
                f"{S.REVIEW_TIME} "
                + r[S.REVIEW_TIME].astype(str)
                + f" is before {S.SIGNUP_TIME} "
                + r[S.SIGNUP_TIME].astype(str)
            ),
        )
    v.duplicates([S.ID], parsed_ok=cid.notna())
    if other_cohort_ids is not None:
        other = "unlabeled" if labeled else "labeled"
        v.reject(
            cid.isin(set(other_cohort_ids.dropna().astype("int64"))),
            "customer_in_both_cohorts",
            lambda r: f"{S.ID} " + r[S.ID].astype(str) + f" is also in the {other} customers file",
        )
    ok, quarantine, reasons = v.split()
    clean = pd.DataFrame(
        {
            S.ID: cid,
            S.COHORT: cohort,
            S.SIGNUP_TIME: signup,
            **cats,
            S.ACCOUNT_STATE: state,
            S.REVIEW_TIME: review,
        }
    )[ok]
    clean[S.ID] = clean[S.ID].astype("int64")
    return clean.reset_index(drop=True), quarantine, _report(raw, ok, quarantine, reasons, v)


def validate_transactions(
    raw: pd.DataFrame,
    cohort: str,
    customers: pd.DataFrame,
    raw_customer_ids: pd.Series,
    extracted_at: pd.Timestamp,
    earlier_tx_ids: pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """`customers`: this cohort's clean customers; `raw_customer_ids`: every id its raw file names
    (to tell an unknown customer from a quarantined one); `earlier_tx_ids`: ids kept from earlier files."""
    v = RowValidator(raw)
    tx_id = v.required(S.TX_ID, "missing_transaction_id")
    cid = v.integer(S.ID, "bad_customer_id", min_value=1, negative_code="bad_customer_id")
    ts = v.timestamp(S.TIMESTAMP, "bad_timestamp", missing_code="missing_timestamp")
    amount = v.number(
        S.AMOUNT,
        "non_numeric_amount",
        min_value=0,
        below_code="negative_amount",
        missing_code="missing_amount",
    )
    v.reject(amount == 0, "zero_amount", f"{S.AMOUNT} is zero")
    currency = v.category(
        "currency", S.CURRENCIES, "unknown_currency", upper=True, missing_code="missing_currency"
    )
    typ = v.category("type", S.TX_TYPES, "unknown_type", missing_code="missing_type")
    cp = v.category(
        "counterparty_country", ISO_3166_ALPHA2, "invalid_counterparty_country", upper=True, optional=True
    )
    v.reject(
        typ.isin(S.COUNTERPARTY_TYPES) & cp.isna(),
        "missing_counterparty_country",
        lambda r: "counterparty_country is missing; a " + typ[r.index].astype(str) + " needs one",
    )
    known_type = typ.isin(S.TX_TYPES)
    stray_cp = known_type & ~typ.isin(S.COUNTERPARTY_TYPES) & cp.notna()
    v.repaired(stray_cp, "cleared_counterparty_country")  # card and cash have no counterparty
    cp = cp.mask(stray_cp)
    merchant = v.category(
        "merchant_category", S.MERCHANT_CATEGORIES, "unknown_merchant_category", optional=True
    )
    card = typ.isin(S.MERCHANT_TYPES)
    v.repaired(card & merchant.isna(), "filled_merchant_category")
    v.repaired(known_type & ~card & merchant.notna(), "cleared_merchant_category")  # card payments only
    merchant = merchant.mask(card & merchant.isna(), S.MERCHANT_CATEGORY_FILL).where(card)
    channel = v.category("channel", S.CHANNELS, "unknown_channel", missing_code="missing_channel")
    status = v.category("status", S.STATUSES, "unknown_status", missing_code="missing_status")

    # Duplicate ids among otherwise valid rows: the first row is kept, later ones quarantined.
    v.duplicates(
        [S.TX_ID],
        parsed_ok=~v.rejected(),
        keep_first_conflicting=True,
        conflicting_code="duplicate_transaction_id",
    )
    if earlier_tx_ids is not None and len(earlier_tx_ids):
        v.reject(
            tx_id.isin(set(earlier_tx_ids)),
            "duplicate_transaction_id",
            lambda r: (
                f"{S.TX_ID} "
                + r[S.TX_ID].astype(str)
                + " was already used in the labeled transactions (kept there)"
            ),
        )

    # Links to this cohort's customers.
    by_id = customers.set_index(S.ID)
    ids = cid.fillna(-1).astype("int64").to_numpy()
    known = cid.notna() & cid.isin(set(raw_customer_ids.dropna().astype("int64")))
    valid = cid.notna() & cid.isin(by_id.index)
    files = f"{cohort}/{S.CUSTOMERS}"
    v.reject(
        cid.notna() & ~known,
        "unknown_customer",
        lambda r: f"{S.ID} " + r[S.ID].astype(str) + f" is not in {files}",
    )
    v.reject(
        known & ~valid,
        "customer_quarantined",
        lambda r: f"{S.ID} " + r[S.ID].astype(str) + f" was quarantined in {files} (see its quarantine file)",
    )

    def lookup(col: str) -> pd.Series:
        """The customers' `col` for each transaction row (missing where the customer is not valid)."""
        return pd.Series(by_id[col].reindex(ids).array, index=raw.index)

    signup = lookup(S.SIGNUP_TIME)
    v.reject(
        valid & (ts < signup),
        "before_signup",
        lambda r: (
            f"{S.TIMESTAMP} "
            + r[S.TIMESTAMP].astype(str)
            + " is before the customer's signup "
            + signup[r.index].astype(str)
        ),
    )
    v.reject(
        ts > extracted_at,
        "after_extraction",
        lambda r: (
            f"{S.TIMESTAMP} "
            + r[S.TIMESTAMP].astype(str)
            + f" is after the export was taken ({extracted_at.isoformat()})"
        ),
    )
    if cohort == S.LABELED:
        review = lookup(S.REVIEW_TIME)
        suspended = lookup(S.ACCOUNT_STATE).astype("string").eq(S.SUSPENDED).fillna(False).astype(bool)
        closed = valid & suspended & (ts > review)
        v.reject(
            closed,
            "after_suspension",
            lambda r: (
                f"{S.TIMESTAMP} "
                + r[S.TIMESTAMP].astype(str)
                + " is after the account was suspended at "
                + review[r.index].astype(str)
            ),
        )

    ok, quarantine, reasons = v.split()
    rate = currency.map(S.EUR_PER_UNIT).astype("float64")
    clean = pd.DataFrame(
        {
            S.TX_ID: tx_id,
            S.ID: cid,
            S.TIMESTAMP: ts,
            S.AMOUNT: amount,
            "currency": currency,
            S.AMOUNT_EUR: amount * rate,
            "type": typ,
            "counterparty_country": cp,
            "merchant_category": merchant,
            "channel": channel,
            "status": status,
        }
    )[ok]
    clean[S.ID] = clean[S.ID].astype("int64")
    return clean.reset_index(drop=True), quarantine, _report(raw, ok, quarantine, reasons, v)


def _typed_customers(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in (S.SIGNUP_TIME, S.REVIEW_TIME):
        out[col] = pd.to_datetime(out[col], utc=True).dt.as_unit("us")
    for col in (S.COHORT, *S.CUSTOMER_CATEGORICAL, S.ACCOUNT_STATE):
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out.sort_values(S.ID, kind="stable").reset_index(drop=True)


def _typed_transactions(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out[S.TIMESTAMP] = pd.to_datetime(out[S.TIMESTAMP], utc=True).dt.as_unit("us")
    out[S.AMOUNT] = out[S.AMOUNT].astype("float64")
    out[S.AMOUNT_EUR] = out[S.AMOUNT_EUR].astype("float64")
    return out.sort_values([S.ID, S.TIMESTAMP], kind="stable").reset_index(drop=True)


def ingest(
    p: IngestParams,
    clean_dir: Path,
    quarantine_dir: Path,
    metrics_path: Path,
    raw_dir: Path | None = None,
) -> dict:
    raw_dir = Path(raw_dir or p.raw_dir)
    inputs = find_inputs(raw_dir)
    extracted_at = extraction_time(p, raw_dir)
    clean_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    for old in quarantine_dir.glob("*.csv"):
        old.unlink()

    raw_customers = {
        cohort: read_raw(
            files[S.CUSTOMERS],
            S.RAW_LABELED_CUSTOMER_COLUMNS if cohort == S.LABELED else S.RAW_CUSTOMER_COLUMNS,
        )
        for cohort, files in inputs.items()
    }
    report: dict = {"extracted_at": extracted_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    customers, transactions = [], []
    kept_tx_ids: pd.Series | None = None
    for cohort, files in inputs.items():
        others = [c for c in raw_customers if c != cohort]
        other_ids = _raw_ids(raw_customers[others[0]]) if others else None
        cust, q, rep = validate_customers(raw_customers[cohort], cohort, extracted_at, other_ids)
        q.to_csv(quarantine_dir / f"{cohort}_{S.CUSTOMERS}.csv", index=False)
        report[f"{cohort}_{S.CUSTOMERS}"] = rep
        log.info("%s customers: %d in, %d quarantined", cohort, rep["rows_in"], rep["quarantined"])

        raw_tx = read_raw(files[S.TRANSACTIONS], S.RAW_TRANSACTION_COLUMNS)
        tx, q, rep = validate_transactions(
            raw_tx, cohort, cust, _raw_ids(raw_customers[cohort]), extracted_at, kept_tx_ids
        )
        del raw_tx
        q.to_csv(quarantine_dir / f"{cohort}_{S.TRANSACTIONS}.csv", index=False)
        report[f"{cohort}_{S.TRANSACTIONS}"] = rep
        log.info("%s transactions: %d in, %d quarantined", cohort, rep["rows_in"], rep["quarantined"])
        kept_tx_ids = tx[S.TX_ID] if kept_tx_ids is None else pd.concat([kept_tx_ids, tx[S.TX_ID]])
        customers.append(cust)
        transactions.append(tx)

    cust_all = _typed_customers(pd.concat(customers, ignore_index=True))
    tx_all = _typed_transactions(pd.concat(transactions, ignore_index=True))
    cust_all.to_parquet(clean_dir / S.CLEAN_CUSTOMERS, index=False)
    tx_all.to_parquet(clean_dir / S.CLEAN_TRANSACTIONS, index=False)
    # the export's "now" travels with the clean tables: the feature stage snapshots as of it
    (clean_dir / S.EXTRACT_FILE).write_text(json.dumps({S.EXTRACTED_AT: report[S.EXTRACTED_AT]}) + "\n")
    labeled = cust_all[cust_all[S.COHORT] == S.LABELED]
    report["clean"] = {
        "customers": len(cust_all),
        **{f"{c}_customers": int((cust_all[S.COHORT] == c).sum()) for c in S.COHORTS},
        "transactions": len(tx_all),
        "suspended_share": round(float((labeled[S.ACCOUNT_STATE] == S.SUSPENDED).mean()), 5)
        if len(labeled)
        else None,
        "amount_eur_total": round(float(tx_all[S.AMOUNT_EUR].sum()), 2),
    }
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics_path, report)
    log.info("ingested %s", report["clean"])
    return report


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--clean", type=Path, required=True)
    ap.add_argument("--quarantine", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--raw", type=Path, default=None, help="override params: your own raw folder")
    args = ap.parse_args()
    ingest(load_params(args.params).customer_risk.ingest, args.clean, args.quarantine, args.metrics, args.raw)


if __name__ == "__main__":
    main()
