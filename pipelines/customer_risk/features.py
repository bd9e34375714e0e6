"""Feature tables of customer_risk for Feast: as-of snapshots of transaction aggregates, and the profile.

Inputs: ingestion's clean `customers.parquet` and `transactions.parquet` (and `extract.json`).
Outputs (``--features``), each with `customer_id` and `event_timestamp`:

* ``customer_transactions.parquet``: one row per customer and snapshot time t, every aggregate over
  transactions strictly before t (windows of 7/30/90 days ending at t). Snapshot times: every
  `snapshot_every_days` back from the extraction time, each labeled customer's review time, and the
  extraction time itself. Feast's point-in-time join picks the last snapshot at or before a query time,
  so a training row at review time T sees exactly the transactions before T, never the later ones (for
  an off-boarded customer, later there are none: a leak the as-of design closes).
* ``customer_profile.parquet``: attributes stamped at signup.
* ``labels.parquet`` (labeled customers at review time, `suspended` 0/1) and ``scoring_entities.parquet``
  (unlabeled customers at the extraction time): the entity frames of training and batch scoring.

The aggregation is one DuckDB query (a range join of snapshots with their 90 days of transactions); the
feature list, windows and thresholds come from feature_spec.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import duckdb
import pandas as pd

from domain.customer_risk import feature_spec as F
from domain.customer_risk import schema as S
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser
from pipelines.customer_risk.params import FeaturesParams

log = logging.getLogger(__name__)


def _in(values: frozenset[str] | tuple[str, ...] | list[str]) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in sorted(values)) + ")"


def snapshot_times(
    customers: pd.DataFrame, extracted_at: pd.Timestamp, every_days: int, history_start: pd.Timestamp
) -> pd.DataFrame:
    """(customer_id, t): the review time (labeled), the extraction time, and the regular grid after signup
    from the time the longest window is covered by the transaction history (earlier snapshots would
    describe partial windows)."""
    first = max(
        customers[S.SIGNUP_TIME].min(), history_start + pd.Timedelta(days=max(F.WINDOWS_DAYS.values()))
    )
    n = int((extracted_at - first) / pd.Timedelta(days=every_days)) + 1
    grid = pd.DatetimeIndex([extracted_at - pd.Timedelta(days=every_days * k) for k in range(n)])
    ids = customers[S.ID].to_numpy()
    signup = customers[S.SIGNUP_TIME]
    frames = [pd.DataFrame({S.ID: ids[(signup < t).to_numpy()], "t": t}) for t in grid if (signup < t).any()]
    reviewed = customers[customers[S.REVIEW_TIME].notna()]
    frames.append(pd.DataFrame({S.ID: reviewed[S.ID].to_numpy(), "t": reviewed[S.REVIEW_TIME].to_numpy()}))
    out = pd.concat(frames, ignore_index=True).drop_duplicates()
    out["t"] = pd.to_datetime(out["t"], utc=True).dt.as_unit("us")
    return out.sort_values([S.ID, "t"], kind="stable").reset_index(drop=True)


def transaction_snapshots(customers: pd.DataFrame, tx: pd.DataFrame, snaps: pd.DataFrame) -> pd.DataFrame:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    started = time.perf_counter()

    def step(name: str) -> None:
        log.info("features: %s done (%.1f s)", name, time.perf_counter() - started)

    con.register("customers_in", customers)
    con.register("tx_in", tx)
    con.register("snaps_in", snaps)
    lo, hi = F.PASSTHROUGH_SIMILAR
    income = " ".join(f"WHEN '{k}' THEN {v}" for k, v in S.INCOME_BAND_MIDPOINT_EUR.items())
    con.execute(f"""
        CREATE TEMP TABLE tx AS
        WITH base AS (
            SELECT {S.ID} AS cid, {S.TIMESTAMP} AS ts, {S.AMOUNT_EUR} AS eur,
                   -- sums in integer cents: exact whatever the order DuckDB's threads add them in, so
                   -- the feature table (and the model version) reproduce byte for byte
                   CAST(round({S.AMOUNT_EUR} * 100) AS BIGINT) AS cents, type,
                   status = '{S.COMPLETED}' AS ok, status = '{S.DECLINED}' AS declined,
                   status = '{S.REVERSED}' AS reversed,
                   type IN {_in(S.INBOUND_TYPES)} AS is_in, type IN {_in(S.OUTBOUND_TYPES)} AS is_out,
                   type IN ('crypto_buy', 'crypto_sell') AS crypto,
                   type IN ('cash_deposit', 'cash_withdrawal') AS cash,
                   type IN ('transfer_in', 'transfer_out') AS transfer,
                   NULLIF(counterparty_country, '') AS cp,
                   coalesce(counterparty_country IN {_in(S.HIGH_RISK_COUNTRIES)}, false) AS high_risk,
                   hour(ts) < {F.NIGHT_HOURS} AS night
            FROM tx_in
        )
        SELECT *,
            ok AND type IN ('cash_deposit', 'transfer_in')
               AND eur >= {S.STRUCTURING_FLOOR_EUR} AND eur < {S.REPORTING_THRESHOLD_EUR} AS near_thr,
            ok AND type IN ('transfer_out', 'crypto_buy') AND EXISTS (
                SELECT 1 FROM base i WHERE i.cid = o.cid AND i.ok AND i.is_in
                  AND i.ts <= o.ts AND i.ts > o.ts - INTERVAL {F.PASSTHROUGH_HOURS} HOUR
                  AND i.eur >= {lo} * o.eur AND i.eur <= {hi} * o.eur
            ) AS passthrough
        FROM base o
    """)
    step("per-transaction flags")
    w = F.WINDOWS_DAYS
    parts = []
    for name, days in w.items():
        inw = f"tx.ts >= s.t - INTERVAL {days} DAY"
        parts += [
            f"count(tx.ts) FILTER (WHERE {inw} AND tx.ok) AS tx_count_{name}",
            f"count(DISTINCT CAST(tx.ts AS DATE)) FILTER (WHERE {inw} AND tx.ok) AS active_days_{name}",
            f"coalesce(sum(tx.cents) FILTER (WHERE {inw} AND tx.ok AND tx.is_in) / 100.0, 0) AS inflow_eur_{name}",
            f"coalesce(sum(tx.cents) FILTER (WHERE {inw} AND tx.ok AND tx.is_out) / 100.0, 0) AS outflow_eur_{name}",
            f"count(tx.ts) FILTER (WHERE {inw} AND tx.declined) AS declined_count_{name}",
        ]
    recent = f"tx.ts >= s.t - INTERVAL {F.RECENT_DAYS} DAY"
    agg = ",\n            ".join(parts)
    con.execute(f"""
        CREATE TEMP TABLE agg AS
        SELECT s.{S.ID} AS cid, s.t,
            {agg},
            count(tx.ts) FILTER (WHERE tx.ts >= s.t - INTERVAL 30 DAY) AS attempts_30d,
            count(tx.ts) FILTER (WHERE tx.reversed) AS reversed_count_90d,
            max(tx.eur) FILTER (WHERE tx.ok) AS max_tx_eur_90d,
            sum(tx.cents) FILTER (WHERE tx.ok) / 100.0 / nullif(count(tx.ts) FILTER (WHERE tx.ok), 0) AS mean_tx_eur_90d,
            count(tx.ts) FILTER (WHERE tx.near_thr AND tx.ts >= s.t - INTERVAL 30 DAY) AS near_threshold_count_30d,
            count(tx.ts) FILTER (WHERE tx.near_thr) AS near_threshold_count_90d,
            coalesce(sum(tx.cents) FILTER (WHERE tx.passthrough) / 100.0, 0) AS passthrough_eur_90d,
            coalesce(sum(tx.cents) FILTER (WHERE tx.ok AND tx.type IN ('transfer_out', 'crypto_buy')) / 100.0, 0)
                AS pass_base_eur,
            coalesce(sum(tx.cents) FILTER (WHERE tx.ok AND tx.transfer AND tx.high_risk) / 100.0, 0) AS hr_eur,
            coalesce(sum(tx.cents) FILTER (WHERE tx.ok AND tx.transfer) / 100.0, 0) AS transfer_eur,
            count(tx.ts) FILTER (WHERE tx.ok AND tx.transfer AND tx.high_risk) AS high_risk_corridor_count_90d,
            count(DISTINCT tx.cp) FILTER (WHERE tx.ok) AS counterparty_countries_90d,
            coalesce(sum(tx.cents) FILTER (WHERE tx.ok AND tx.crypto) / 100.0, 0) AS crypto_eur,
            coalesce(sum(tx.cents) FILTER (WHERE tx.ok AND tx.cash) / 100.0, 0) AS cash_eur,
            coalesce(sum(tx.cents) FILTER (WHERE tx.ok) / 100.0, 0) AS volume_eur,
            count(tx.ts) FILTER (WHERE tx.ok) AS done_90d,
            count(tx.ts) FILTER (WHERE tx.ok AND tx.night) AS night_90d,
            count(tx.ts) FILTER (WHERE tx.ok AND {recent}) AS recent_tx_count
        FROM snaps_in s
        LEFT JOIN tx ON tx.cid = s.{S.ID} AND tx.ts < s.t AND tx.ts >= s.t - INTERVAL 90 DAY
        GROUP BY s.{S.ID}, s.t
    """)
    step("window aggregates")
    # Dormancy: the longest silence (between completed transactions, or from the lookback start / signup)
    # in [t - lookback - recent, t - recent). Gaps come from consecutive completed transactions.
    look = F.DORMANCY_LOOKBACK_DAYS + F.RECENT_DAYS
    con.execute(f"""
        CREATE TEMP TABLE dormancy AS
        WITH pts AS (
            SELECT s.{S.ID} AS cid, s.t, tx.ts
            FROM snaps_in s JOIN tx ON tx.cid = s.{S.ID} AND tx.ok
              AND tx.ts < s.t - INTERVAL {F.RECENT_DAYS} DAY AND tx.ts >= s.t - INTERVAL {look} DAY
        ), bounds AS (
            SELECT s.{S.ID} AS cid, s.t,
                   greatest(s.t - INTERVAL {look} DAY, c.{S.SIGNUP_TIME}) AS lo,
                   s.t - INTERVAL {F.RECENT_DAYS} DAY AS hi
            FROM snaps_in s JOIN customers_in c USING ({S.ID})
        ), marks AS (
            SELECT cid, t, ts FROM pts
            UNION ALL SELECT cid, t, lo FROM bounds UNION ALL SELECT cid, t, hi FROM bounds
        ), gaps AS (
            SELECT cid, t, ts - lag(ts) OVER (PARTITION BY cid, t ORDER BY ts) AS gap FROM marks
        )
        SELECT cid, t, greatest(coalesce(max(epoch(gap)) / 86400.0, 0), 0) AS dormant_days_before_recent
        FROM gaps GROUP BY cid, t
    """)
    step("dormancy")
    con.execute(f"""
        CREATE TEMP TABLE last_tx AS
        SELECT s.{S.ID} AS cid, s.t, d.ts AS last_ts
        FROM snaps_in s ASOF LEFT JOIN (SELECT cid, ts FROM tx WHERE ok) d
          ON d.cid = s.{S.ID} AND d.ts < s.t
    """)
    step("last activity")
    out = con.execute(f"""
        SELECT a.cid AS {S.ID}, a.t AS {F.EVENT_TIMESTAMP},
            a.* EXCLUDE (cid, t, attempts_30d, pass_base_eur, hr_eur, transfer_eur, crypto_eur, cash_eur, volume_eur,
                         done_90d, night_90d),
            CASE WHEN a.attempts_30d > 0 THEN a.declined_count_30d / a.attempts_30d ELSE 0 END
                AS decline_rate_30d,
            CASE WHEN a.inflow_eur_30d + a.outflow_eur_30d > 0
                 THEN (a.inflow_eur_30d - a.outflow_eur_30d) / (a.inflow_eur_30d + a.outflow_eur_30d) END
                AS net_flow_ratio_30d,
            CASE WHEN a.pass_base_eur > 0 THEN a.passthrough_eur_90d / a.pass_base_eur ELSE 0 END
                AS passthrough_share_90d,
            CASE WHEN a.transfer_eur > 0 THEN a.hr_eur / a.transfer_eur ELSE 0 END
                AS high_risk_corridor_share_90d,
            CASE WHEN a.volume_eur > 0 THEN a.crypto_eur / a.volume_eur ELSE 0 END AS crypto_share_90d,
            CASE WHEN a.volume_eur > 0 THEN a.cash_eur / a.volume_eur ELSE 0 END AS cash_share_90d,
            CASE WHEN a.done_90d > 0 THEN a.night_90d / a.done_90d ELSE 0 END AS night_share_90d,
            a.inflow_eur_90d * (365.0 / 90) / (CASE c.declared_income_band {income} END)
                AS inflow_to_income_90d,
            d.dormant_days_before_recent,
            epoch(a.t - coalesce(l.last_ts, c.{S.SIGNUP_TIME})) / 86400.0 AS days_since_last_tx,
            epoch(a.t - c.{S.SIGNUP_TIME}) / 86400.0 AS account_age_days
        FROM agg a
        JOIN customers_in c ON c.{S.ID} = a.cid
        JOIN dormancy d ON d.cid = a.cid AND d.t = a.t
        JOIN last_tx l ON l.cid = a.cid AND l.t = a.t
        ORDER BY a.cid, a.t
    """).df()
    cols = [S.ID, F.EVENT_TIMESTAMP, *(f.name for f in F.TRANSACTION_FEATURES)]
    out = out[cols]
    for f in F.TRANSACTION_FEATURES:
        out[f.name] = out[f.name].astype("int64" if f.dtype == "Int64" else "float64")
    out[F.EVENT_TIMESTAMP] = pd.to_datetime(out[F.EVENT_TIMESTAMP], utc=True).dt.as_unit("us")
    return out


def build(clean_dir: Path, features_dir: Path, p: FeaturesParams) -> dict:
    started = time.perf_counter()
    customers = pd.read_parquet(clean_dir / S.CLEAN_CUSTOMERS)
    tx = pd.read_parquet(
        clean_dir / S.CLEAN_TRANSACTIONS,
        columns=[S.ID, S.TIMESTAMP, S.AMOUNT_EUR, "type", "status", "counterparty_country"],
    )
    extracted_at = pd.Timestamp(json.loads((clean_dir / S.EXTRACT_FILE).read_text())[S.EXTRACTED_AT])
    snaps = snapshot_times(customers, extracted_at, p.snapshot_every_days, tx[S.TIMESTAMP].min())
    log.info("%s snapshots of %s customers from %s transactions", len(snaps), len(customers), len(tx))
    snapshots = transaction_snapshots(customers, tx, snaps)

    features_dir.mkdir(parents=True, exist_ok=True)
    snapshots.to_parquet(features_dir / f"{F.TRANSACTIONS_TABLE}.parquet", index=False)
    profile = customers[[S.ID, S.SIGNUP_TIME, *(f.name for f in F.PROFILE_FEATURES)]].rename(
        columns={S.SIGNUP_TIME: F.EVENT_TIMESTAMP}
    )
    profile.to_parquet(features_dir / f"{F.PROFILE_TABLE}.parquet", index=False)
    labeled = customers[customers[S.COHORT] == S.LABELED]
    labels = pd.DataFrame(
        {
            S.ID: labeled[S.ID].to_numpy(),
            F.EVENT_TIMESTAMP: labeled[S.REVIEW_TIME].to_numpy(),
            F.LABEL: (labeled[S.ACCOUNT_STATE] == S.SUSPENDED).astype("int64").to_numpy(),
        }
    )
    labels.to_parquet(features_dir / f"{F.LABELS_TABLE}.parquet", index=False)
    unlabeled = customers[customers[S.COHORT] == S.UNLABELED]
    scoring = pd.DataFrame({S.ID: unlabeled[S.ID].to_numpy(), F.EVENT_TIMESTAMP: extracted_at})
    scoring[F.EVENT_TIMESTAMP] = scoring[F.EVENT_TIMESTAMP].dt.as_unit("us")
    scoring.to_parquet(features_dir / f"{F.SCORING_TABLE}.parquet", index=False)
    summary = {
        "snapshot_rows": len(snapshots),
        "customers": len(customers),
        "labeled": len(labels),
        "suspended": int(labels[F.LABEL].sum()),
        "unlabeled": len(scoring),
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("features: %s", summary)
    return summary


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--clean", type=Path, required=True)
    ap.add_argument("--features", type=Path, required=True)
    args = ap.parse_args()
    build(args.clean, args.features, load_params(args.params).customer_risk.features)


if __name__ == "__main__":
    main()
