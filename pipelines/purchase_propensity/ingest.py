"""Validate the raw e-commerce data and build the purchase_propensity feature tables.

Reads `<raw_dir>`: customers.parquet, purchases.parquet (the order history, with the session each order
was placed in) and events.jsonl (the page views as the broker carried them). Writes to `--features`:

* `purchases.parquet`: the clean order history (the offline table; published to PostgreSQL when
  DATABASE_URL is set),
* `customer_purchases.parquet`: PURCHASE_FEATURES of every customer at each midnight UTC of the period
  (the nightly batch job's snapshots),
* `session_activity.parquet`: SESSION_FEATURES after each clean page view, computed by the same
  `SessionState` the stream worker uses (the PushSource's batch source).

Every event goes through `events.parse_event`, the stream worker's validator: a rejected line goes to
`<quarantine>/events.csv` with its line number, reason code and message; an event id seen before is a
re-send (dropped and counted) when the content is the same, and quarantined as `conflicting_duplicate`
when it differs (the first one is kept, as the worker does). Purchases and customers are checked row by
row (pipelines/common/validation.py). When the generator's `defects.csv` is present, the metrics also say
whether every planted defect was caught with the expected reason.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from domain.purchase_propensity import features as F
from domain.purchase_propensity import schema as S
from domain.purchase_propensity.events import InvalidEvent, PageView, parse_event
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser, write_metrics
from pipelines.common.validation import RowValidator, read_raw
from pipelines.purchase_propensity.params import FeaturesParams

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ["line", S.EVENT_ID, "reason_code", "reason", "raw"]


def read_events(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(clean events, quarantined lines, counts). Clean events keep the first copy of each event id."""
    kept: dict[str, PageView] = {}
    raw_of: dict[str, bytes] = {}
    bad: list[tuple[int, str, str, str, str]] = []
    resent = 0
    lines = 0
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            lines += 1
            try:
                e = parse_event(line)
            except InvalidEvent as err:
                eid = ""
                with contextlib.suppress(orjson.JSONDecodeError, AttributeError):  # the id, if JSON at all
                    eid = str(orjson.loads(line).get(S.EVENT_ID, ""))
                bad.append((i, eid, err.code, err.message, line[:2000].decode("utf-8", "replace")))
                continue
            first = kept.get(e.event_id)
            if first is None:
                kept[e.event_id] = e
                raw_of[e.event_id] = line
            elif first == e:
                resent += 1
            else:
                bad.append(
                    (
                        i,
                        e.event_id,
                        "conflicting_duplicate",
                        f"event_id {e.event_id} was already seen (kept) with other values",
                        line[:2000].decode("utf-8", "replace"),
                    )
                )
    events = pd.DataFrame([e.to_dict() for e in kept.values()], columns=list(S.EVENT_FIELDS))
    events[S.TS] = pd.to_datetime(events[S.TS], utc=True, format="ISO8601")
    events[S.CUSTOMER_ID] = events[S.CUSTOMER_ID].astype("int64")
    events[S.PRICE] = events[S.PRICE].astype("float64")
    quarantine = pd.DataFrame(bad, columns=QUARANTINE_COLUMNS)
    counts = {
        "lines": lines,
        "events": len(events),
        "resent_dropped": resent,
        "quarantined": len(quarantine),
        "reasons": dict(sorted(Counter(quarantine["reason_code"]).items())),
    }
    return events, quarantine, counts


def _rows_report(raw: pd.DataFrame, ok: pd.Series, reasons: dict[str, int]) -> dict[str, Any]:
    return {
        "rows_in": len(raw),
        "rows_ok": int(ok.sum()),
        "quarantined": int((~ok).sum()),
        "reasons": reasons,
    }


def clean_customers(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    v = RowValidator(raw)
    cid = v.integer(S.CUSTOMER_ID, "bad_customer_id", min_value=1)
    v.duplicates([S.CUSTOMER_ID], cid.notna(), values=pd.DataFrame({S.CUSTOMER_ID: cid}))
    ok, quarantine, reasons = v.split()
    return pd.DataFrame({S.CUSTOMER_ID: cid[ok].astype("int64")}), quarantine, _rows_report(raw, ok, reasons)


def clean_purchases(
    raw: pd.DataFrame, customers: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    v = RowValidator(raw)
    cid = v.integer(S.CUSTOMER_ID, "bad_customer_id", min_value=1)
    v.reject(
        cid.notna() & ~cid.isin(customers),
        "unknown_customer",
        lambda r: "customer_id " + r[S.CUSTOMER_ID].astype(str) + " is not in customers",
    )
    ts = v.timestamp(S.PURCHASE_TS, "bad_timestamp", missing_code="missing_purchase_ts")
    amount = v.number(S.AMOUNT, "bad_amount", min_value=0.01, missing_code="missing_amount")
    n_items = v.integer(S.N_ITEMS, "bad_n_items", min_value=1)
    session = v.text(S.SESSION_ID).mask(lambda s: s == "")
    ok, quarantine, reasons = v.split()
    clean = pd.DataFrame(
        {
            S.CUSTOMER_ID: cid[ok].astype("int64"),
            S.PURCHASE_TS: ts[ok],
            S.AMOUNT: amount[ok].astype("float64"),
            S.N_ITEMS: n_items[ok].astype("int64"),
            S.SESSION_ID: session[ok],
        }
    ).sort_values([S.PURCHASE_TS, S.CUSTOMER_ID], ignore_index=True)
    return clean, quarantine, _rows_report(raw, ok, reasons)


def planted_check(defects: pd.DataFrame, quarantine: pd.DataFrame, counts: dict[str, Any]) -> dict[str, Any]:
    """Did validation catch every planted defect with the reason the generator expects?"""
    broken = defects[defects["kind"] != "duplicate"]
    got = quarantine.set_index("line")["reason_code"]
    caught = broken["line"].map(got)
    return {
        "planted_broken": len(broken),
        "caught_with_expected_reason": int((caught == broken["reason_code"]).sum()),
        "planted_resent": int((defects["kind"] == "duplicate").sum()),
        "resent_dropped": counts["resent_dropped"],
    }


def snapshot_times(events: pd.DataFrame) -> pd.DatetimeIndex:
    """Midnights UTC from the first event's day to the day after the last one."""
    first = events[S.TS].min().floor("D")
    last = events[S.TS].max().floor("D") + pd.Timedelta(days=1)
    return pd.date_range(first, last, freq="D")


def ingest(p: FeaturesParams, features_dir: Path, quarantine_dir: Path, metrics_path: Path) -> dict[str, Any]:
    raw_dir = Path(p.raw_dir)
    features_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    for old in quarantine_dir.glob("*.csv"):
        old.unlink()
    metrics: dict[str, Any] = {}

    customers, q, metrics["customers"] = clean_customers(
        read_raw(raw_dir / S.CUSTOMERS_FILE, S.CUSTOMER_FIELDS)
    )
    if len(q):
        q.to_csv(quarantine_dir / "customers.csv", index=False)
    purchases, q, metrics["purchases"] = clean_purchases(
        read_raw(raw_dir / S.PURCHASES_FILE, S.PURCHASE_FIELDS), customers[S.CUSTOMER_ID]
    )
    if len(q):
        q.to_csv(quarantine_dir / "purchases.csv", index=False)

    events, q, metrics["events"] = read_events(raw_dir / S.EVENTS_FILE)
    if len(q):
        q.to_csv(quarantine_dir / "events.csv", index=False)
    if (raw_dir / S.DEFECTS_FILE).exists():
        metrics["events"]["planted"] = planted_check(
            pd.read_csv(raw_dir / S.DEFECTS_FILE), q, metrics["events"]
        )
    if events.empty:
        raise ValueError(f"{raw_dir / S.EVENTS_FILE}: no valid page view (see {quarantine_dir}/events.csv)")

    activity = F.session_activity_table(events)
    at = snapshot_times(events)
    snapshots = F.purchase_snapshots(purchases, customers[S.CUSTOMER_ID].to_numpy(), at)
    purchases.to_parquet(features_dir / f"{F.PURCHASES_TABLE}.parquet", index=False)
    snapshots.to_parquet(features_dir / f"{F.PURCHASE_TABLE}.parquet", index=False)
    activity.to_parquet(features_dir / f"{F.SESSION_TABLE}.parquet", index=False)
    metrics["tables"] = {
        F.PURCHASES_TABLE: len(purchases),
        F.PURCHASE_TABLE: len(snapshots),
        F.SESSION_TABLE: len(activity),
        "sessions": int(activity[S.SESSION_ID].nunique()),
        "snapshot_days": len(at),
    }
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics_path, metrics)
    log.info(
        "events: %s lines -> %s clean, %s re-sent dropped, %s quarantined %s",
        metrics["events"]["lines"],
        metrics["events"]["events"],
        metrics["events"]["resent_dropped"],
        metrics["events"]["quarantined"],
        metrics["events"]["reasons"],
    )
    return metrics


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--quarantine", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    args = ap.parse_args()
    ingest(
        load_params(args.params).purchase_propensity.features, args.features, args.quarantine, args.metrics
    )


if __name__ == "__main__":
    main()
