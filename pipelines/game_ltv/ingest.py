"""Ingest and validate the studio's files; build the feature tables Feast reads.

Inputs: the users file (CSV or Parquet) and, optionally, the hourly activity log. Every row is validated;
rejected rows go to ``data/quarantine/game_ltv/*.csv`` with their reasons, and the counts by reason go to
``metrics/game_ltv_ingest.json``. Nothing is dropped silently.

Timing, recorded as ``timing`` in the metrics and in ``<features>/timing.json``:
* ``install_time``: the users file has the brief's 11 columns plus ``install_time``. Real install cohorts;
  an activity file may add hour-by-hour snapshots; the training set is split by install time.
* ``assumed_install_time``: the users file has only the brief's 11 columns (``user_id, country,
  country_region, source, platform, device_family, os_version, event_1, event_2, event_3, revenue``).
  Every user is taken as installed at one common time, ``game_ltv.ingest.assumed_install_time`` (the
  export's time minus ``counts_observed_hours``; null: the fixed ``schema.DEFAULT_ASSUMED_INSTALL_TIME``,
  2001-01-01T00:00:00Z, so the same file always gives the same features). The event counts are one
  snapshot at that time + ``counts_observed_hours``; ``install_hour``/``install_dow`` are left empty
  (null: the model treats them as missing rather than learning a made-up hour); an empty ``revenue`` still
  means "label not known yet"; the training set falls back to a seeded random split. No activity file is
  accepted in this mode (its hours could not be placed after an install time nobody knows).

Outputs (``--features``):
* ``user_profile.parquet``: one row per user, stamped at install time (attributes known at install).
* ``user_activity.parquet``: as-of snapshots of cumulative activity: a zero row at install, then one row
  at the end of every hour with events (cumulative event counts, active hours so far, hour of the last
  activity). Feast's point-in-time join picks, for a prediction at T, the last snapshot at or before T.
  Without an activity file, the users file's counts become one snapshot at install + counts_observed_hours.
* ``labels.parquet``: users whose 7-day window has closed, with their revenue.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from domain.game_ltv import schema as S
from pipelines.common.geo import ISO_3166_ALPHA2
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser, write_metrics
from pipelines.common.validation import RowValidator, read_raw
from pipelines.game_ltv.params import IngestParams

log = logging.getLogger(__name__)


def validate_users(
    raw: pd.DataFrame, assumed_install_time: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Clean users and the quarantine. With `assumed_install_time`, `raw` has no install_time column
    and every user gets that time (see the module docstring)."""
    v = RowValidator(raw)
    uid = v.integer(S.ID, "bad_user_id", min_value=1, negative_code="bad_user_id")
    if assumed_install_time is None:
        install = v.timestamp(S.INSTALL_TIME, "bad_install_time")
    else:
        install = pd.Series(assumed_install_time, index=raw.index).dt.as_unit("ns")
    country = v.category("country", ISO_3166_ALPHA2, "invalid_country", upper=True)
    source = v.category("source", S.SOURCES, "unknown_source")
    platform = v.category("platform", S.PLATFORMS, "unknown_platform")
    opened = {c: v.open_category(c) for c in ("country_region", "device_family", "os_version")}
    counts = {
        c: v.integer(c, "non_numeric_count", min_value=0, negative_code="negative_count")
        for c in S.EVENT_COUNTS
    }
    revenue = v.number(S.LABEL, "non_numeric_revenue", min_value=0, below_code="negative_revenue")
    v.duplicates([S.ID], parsed_ok=uid.notna())
    ok, quarantine, reasons = v.split()
    clean = pd.DataFrame(
        {
            S.ID: uid,
            S.INSTALL_TIME: install,
            "country": country,
            "country_region": opened["country_region"],
            "source": source,
            "platform": platform,
            "device_family": opened["device_family"],
            "os_version": opened["os_version"],
            **counts,
            S.LABEL: revenue,
        }
    )[ok]
    clean[S.ID] = clean[S.ID].astype("int64")  # valid ids are never null: plain int64 join keys
    report = v.report(ok, quarantine, reasons)
    return clean.reset_index(drop=True), quarantine, report


def validate_activity(raw: pd.DataFrame, users: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    v = RowValidator(raw)
    uid = v.integer(S.ID, "bad_user_id", min_value=1, negative_code="bad_user_id")
    hour = v.timestamp(S.HOUR_START, "bad_hour_start")
    counts = {
        c: v.integer(c, "non_numeric_count", min_value=0, negative_code="negative_count")
        for c in S.EVENT_COUNTS
    }
    install = pd.Series(
        users.set_index(S.ID)[S.INSTALL_TIME].reindex(uid.to_numpy()).to_numpy(), index=uid.index
    )
    v.reject(
        uid.notna() & install.isna(),
        "unknown_user",
        lambda r: "user_id " + r[S.ID].astype(str) + " is not a valid user (missing or quarantined)",
    )
    v.reject(
        install.notna() & hour.notna() & (hour < install),
        "before_install",
        lambda r: (
            "activity hour "
            + r[S.HOUR_START].astype(str)
            + " is before install "
            + install[r.index].astype(str)
        ),
    )
    v.duplicates([S.ID, S.HOUR_START], parsed_ok=uid.notna() & hour.notna())
    ok, quarantine, reasons = v.split()
    clean = pd.DataFrame({S.ID: uid, S.HOUR_START: hour, **counts})[ok]
    clean[S.ID] = clean[S.ID].astype("int64")
    report = {
        "rows_in": len(raw),
        "rows_ok": int(ok.sum()),
        "quarantined": len(quarantine),
        "by_reason": reasons,
    }
    return clean.reset_index(drop=True), quarantine, report


def _us(ts: pd.Series) -> pd.Series:
    """Microsecond UTC timestamps: what PostgreSQL and DuckDB store (DuckDB cannot cast tz-aware ns)."""
    return pd.to_datetime(ts, utc=True).dt.as_unit("us")


def build_profile(users: pd.DataFrame, install_time_known: bool = True) -> pd.DataFrame:
    prof = users[[S.ID, *S.CATEGORICAL]].copy()
    if install_time_known:
        prof["install_hour"] = users[S.INSTALL_TIME].dt.hour.astype("int64")
        prof["install_dow"] = users[S.INSTALL_TIME].dt.dayofweek.astype("int64")
    else:  # an assumed time says nothing about the user: missing, not a fabricated hour and day
        prof["install_hour"] = pd.array([pd.NA] * len(users), dtype="Int64")
        prof["install_dow"] = pd.array([pd.NA] * len(users), dtype="Int64")
    prof.insert(1, S.EVENT_TIMESTAMP, _us(users[S.INSTALL_TIME]))
    return prof


def build_activity(
    users: pd.DataFrame, hourly: pd.DataFrame | None, counts_observed_hours: int
) -> pd.DataFrame:
    """Cumulative as-of snapshots (see module docstring). Sorted by user and time."""
    zero = pd.DataFrame({S.ID: users[S.ID], S.EVENT_TIMESTAMP: users[S.INSTALL_TIME]})
    for c in S.EVENT_COUNTS:
        zero[c] = 0
    zero["active_hours"] = 0
    zero["last_active_hour"] = 0
    if hourly is None:
        snap = users[[S.ID, *S.EVENT_COUNTS]].copy()
        snap[S.EVENT_TIMESTAMP] = users[S.INSTALL_TIME] + pd.Timedelta(hours=counts_observed_hours)
        snap["active_hours"] = pd.NA
        snap["last_active_hour"] = pd.NA
    else:
        h = hourly[(hourly[S.EVENT_COUNTS].sum(axis=1) > 0)].sort_values([S.ID, S.HOUR_START])
        install = h[S.ID].map(users.set_index(S.ID)[S.INSTALL_TIME])
        snap = pd.DataFrame({S.ID: h[S.ID].to_numpy()})
        # Counts of an hour are known at the end of that hour.
        snap[S.EVENT_TIMESTAMP] = (h[S.HOUR_START] + pd.Timedelta(hours=1)).to_numpy()
        g = h.groupby(S.ID, sort=False)
        for c in S.EVENT_COUNTS:
            snap[c] = g[c].cumsum().to_numpy()
        snap["active_hours"] = g.cumcount().to_numpy() + 1
        snap["last_active_hour"] = (
            np.ceil(((h[S.HOUR_START] - install).dt.total_seconds() / 3600).to_numpy()) + 1
        ).astype("int64")
    out = pd.concat([zero, snap[zero.columns]], ignore_index=True)
    out = out.astype(
        {S.ID: "int64", **{c: "Int64" for c in [*S.EVENT_COUNTS, "active_hours", "last_active_hour"]}}
    )
    out[S.EVENT_TIMESTAMP] = _us(out[S.EVENT_TIMESTAMP])
    return out.sort_values([S.ID, S.EVENT_TIMESTAMP], kind="stable").reset_index(drop=True)


def build_labels(users: pd.DataFrame) -> pd.DataFrame:
    lab = users.loc[users[S.LABEL].notna(), [S.ID, S.INSTALL_TIME, S.LABEL]].copy()
    lab[S.INSTALL_TIME] = _us(lab[S.INSTALL_TIME])
    return lab.sort_values([S.INSTALL_TIME, S.ID]).reset_index(drop=True)


def find_inputs(raw_dir: Path) -> tuple[Path, Path | None]:
    def first(stem: str) -> Path | None:
        return next(
            (raw_dir / f"{stem}{ext}" for ext in (".parquet", ".csv") if (raw_dir / f"{stem}{ext}").exists()),
            None,
        )

    users = first("users")
    if users is None:
        raise FileNotFoundError(f"{raw_dir}: no users.csv or users.parquet")
    return users, first("activity")


def file_columns(path: Path) -> list[str]:
    """The column names of a users/activity file, without reading its rows."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return list(pq.read_schema(path).names)
    if suffix in {".csv", ".gz", ".txt"}:
        return list(pd.read_csv(path, dtype=str, nrows=0).columns)
    return list(read_raw(path, []).columns)  # raises: unsupported file type


def assumed_install_time(p: IngestParams) -> pd.Timestamp:
    """The common install time of the `assumed_install_time` mode (UTC), checked for sense."""
    text = p.assumed_install_time or S.DEFAULT_ASSUMED_INSTALL_TIME
    t = pd.Timestamp(text)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    # compared as Python datetimes: a far-off year is out of pandas' nanosecond range
    counts_at = t.to_pydatetime() + timedelta(hours=p.counts_observed_hours)
    if t.to_pydatetime() < datetime.fromisoformat(S.EARLIEST_ASSUMED_INSTALL_TIME):
        raise ValueError(
            f"game_ltv.ingest.assumed_install_time {text} is before {S.EARLIEST_ASSUMED_INSTALL_TIME}: "
            "its rows would never reach the online store (materialization starts there)"
        )
    if counts_at > datetime.now(UTC):
        raise ValueError(
            f"game_ltv.ingest.assumed_install_time {text} + counts_observed_hours "
            f"({p.counts_observed_hours} h) = {counts_at.isoformat()} is in the future: the counts of an "
            "export cannot have been observed after it was taken (set it to the export's time minus "
            "counts_observed_hours)"
        )
    return t.as_unit("ns")


def ingest(
    p: IngestParams,
    features_dir: Path,
    quarantine_dir: Path,
    metrics_path: Path,
    users_path: Path | None = None,
    activity_path: Path | None = None,
) -> dict:
    if users_path is None:
        users_path, activity_path = find_inputs(Path(p.raw_dir))
    assumed = None
    timing: dict = {"timing": S.TIMING_INSTALL_TIME}
    if S.INSTALL_TIME not in file_columns(Path(users_path)):
        if activity_path is not None:
            raise ValueError(
                f"{users_path} has no {S.INSTALL_TIME} column, but an activity file was given "
                f"({activity_path}): its hours can only be placed relative to real install times. Add "
                f"{S.INSTALL_TIME} to the users file, or remove the activity file."
            )
        assumed = assumed_install_time(p)
        counts_at = assumed + pd.Timedelta(hours=p.counts_observed_hours)
        timing = {
            "timing": S.TIMING_ASSUMED,
            "assumed_install_time": assumed.isoformat(),
            "counts_as_of": counts_at.isoformat(),
        }
        log.warning(
            "%s has no %s column: every user is assumed installed at %s and event_1..3 are taken as the "
            "counts at %s (install + counts_observed_hours = %s h); install_hour/install_dow are left "
            "empty, and the training set is split at random instead of by install time.",
            users_path,
            S.INSTALL_TIME,
            timing["assumed_install_time"],
            timing["counts_as_of"],
            p.counts_observed_hours,
        )
    elif p.assumed_install_time is not None:
        log.warning(
            "%s has an %s column: game_ltv.ingest.assumed_install_time (%s) is ignored",
            users_path,
            S.INSTALL_TIME,
            p.assumed_install_time,
        )
    features_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    raw_users = read_raw(users_path, S.RAW_USER_COLUMNS if assumed is None else S.BRIEF_USER_COLUMNS)
    users, q_users, rep_users = validate_users(raw_users, assumed)
    q_users.to_csv(quarantine_dir / "users.csv", index=False)
    report: dict = {**timing, "users": rep_users}
    hourly = None
    if activity_path is not None:
        raw_act = read_raw(activity_path, S.RAW_ACTIVITY_COLUMNS)
        hourly, q_act, rep_act = validate_activity(raw_act, users)
        q_act.to_csv(quarantine_dir / "activity.csv", index=False)
        report["activity"] = rep_act
    build_profile(users, install_time_known=assumed is None).to_parquet(
        features_dir / f"{S.PROFILE_TABLE}.parquet", index=False
    )
    activity = build_activity(users, hourly, p.counts_observed_hours)
    activity.to_parquet(features_dir / f"{S.ACTIVITY_TABLE}.parquet", index=False)
    labels = build_labels(users)
    labels.to_parquet(features_dir / f"{S.LABELS_TABLE}.parquet", index=False)
    report["features"] = {
        "users": len(users),
        "labeled_users": len(labels),
        "unlabeled_users": len(users) - len(labels),
        "activity_snapshots": len(activity),
        "payer_share": round(float((labels[S.LABEL] > 0).mean()), 5) if len(labels) else None,
    }
    # The downstream stages' copy of the timing (the training set splits by it); counts_observed_hours:
    # the one snapshot's hour after install when there is no activity file, else null.
    timing_file = {**timing, "counts_observed_hours": p.counts_observed_hours if hourly is None else None}
    (features_dir / S.TIMING_FILE).write_text(json.dumps(timing_file, indent=2) + "\n")
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics_path, report)
    log.info("ingested %s users (%s quarantined)", len(users), rep_users["quarantined"])
    return report


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--quarantine", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--users", type=Path, default=None, help="override params: your own users file")
    ap.add_argument("--activity", type=Path, default=None, help="override params: your own hourly activity")
    args = ap.parse_args()
    ingest(
        load_params(args.params).game_ltv.ingest,
        args.features,
        args.quarantine,
        args.metrics,
        args.users,
        args.activity,
    )


if __name__ == "__main__":
    main()
