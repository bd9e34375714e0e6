"""Prepare the studio's files for the generic stages: validate them, shape them into the tables that
specs/game_ltv.yaml declares (user profile, activity snapshots, labels with their prediction time, oracle).

What a spec cannot express, and so stays here: the ISO country check and the raw files' cross-checks
(activity of an unknown user, before its install), turning an hourly activity log into as-of snapshots of
cumulative counts, the timing modes below, and the generator's oracle at the prediction time. From the
prepared tables on, game_ltv is a spec'd model like any other (ingest, training set, train, evaluate,
score in pipelines/tabular). Rejected raw rows go to ``data/quarantine/game_ltv_raw/*.csv`` with their
reasons, the counts by reason to ``metrics/game_ltv_prepare.json``. Nothing is dropped silently.

Timing, recorded as ``timing`` in the metrics:
* ``install_time``: the users file has the brief's 11 columns plus ``install_time``. Real install cohorts;
  an activity file may add hour-by-hour snapshots; the spec's time split holds out the latest cohorts.
* ``assumed_install_time``: the users file has only the brief's 11 columns (``user_id, country,
  country_region, source, platform, device_family, os_version, event_1, event_2, event_3, revenue``).
  Every user is taken as installed at one common time, ``game_ltv.prepare.assumed_install_time`` (the
  export's time minus ``counts_observed_hours``; null: the fixed ``schema.DEFAULT_ASSUMED_INSTALL_TIME``,
  2001-01-01T00:00:00Z, so the same file always gives the same features). The event counts are one
  snapshot at that time + ``counts_observed_hours``; ``install_hour``/``install_dow`` are left empty
  (null: the model treats them as missing rather than learning a made-up hour); an empty ``revenue`` still
  means "label not known yet". Every prediction time is then the same, so the generic training set falls
  back from the time split to a seeded random one and says so. No activity file is accepted in this mode
  (its hours could not be placed after an install time nobody knows).

Outputs (``--out``, default ``data/prepared/game_ltv``):
* ``user_profile.parquet``: one row per user, stamped at ``install_time`` (attributes known at install).
* ``user_activity.parquet``: as-of snapshots of cumulative activity, stamped at ``snapshot_time``: a zero
  row at install, then one row at the end of every hour with events (cumulative event counts, active hours
  so far, hour of the last activity). Without an activity file, the users file's counts become one
  snapshot at install + counts_observed_hours.
* ``labels.parquet``: every user with ``prediction_time`` = install + ``prediction_hours`` + 1 s (the
  prediction is made just after that hour closed, so the generic rule "features strictly before the
  prediction time" sees the snapshot stamped at the hour's end) and ``revenue`` (empty while the 7-day
  window is open: those users are scored, not trained on).
* ``oracle.parquet``: with the generator's ``oracle.parquet`` beside the users file, the exact expected
  revenue given what is known at the prediction time; with your own data, no rows (oracle metrics null).
"""

from __future__ import annotations

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
from pipelines.game_ltv.params import PrepareParams
from synthetic.game_ltv import oracle_expected_revenue

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


# The prediction is made this long after the prediction_hours-th hour closed: the generic stages use
# features strictly before the prediction time, and the snapshot of that hour is stamped at its end.
SCORED_AFTER_HOUR = pd.Timedelta(seconds=1)


def build_profile(users: pd.DataFrame, install_time_known: bool = True) -> pd.DataFrame:
    prof = users[[S.ID, *S.CATEGORICAL]].copy()
    if install_time_known:
        prof["install_hour"] = users[S.INSTALL_TIME].dt.hour.astype("int64")
        prof["install_dow"] = users[S.INSTALL_TIME].dt.dayofweek.astype("int64")
    else:  # an assumed time says nothing about the user: missing, not a fabricated hour and day
        prof["install_hour"] = pd.array([pd.NA] * len(users), dtype="Int64")
        prof["install_dow"] = pd.array([pd.NA] * len(users), dtype="Int64")
    prof.insert(1, S.INSTALL_TIME, _us(users[S.INSTALL_TIME]))
    return prof


def build_activity(
    users: pd.DataFrame, hourly: pd.DataFrame | None, counts_observed_hours: int
) -> pd.DataFrame:
    """Cumulative as-of snapshots (see module docstring). Sorted by user and time."""
    zero = pd.DataFrame({S.ID: users[S.ID], S.SNAPSHOT_TIME: users[S.INSTALL_TIME]})
    for c in S.EVENT_COUNTS:
        zero[c] = 0
    zero["active_hours"] = 0
    zero["last_active_hour"] = 0
    if hourly is None:
        snap = users[[S.ID, *S.EVENT_COUNTS]].copy()
        snap[S.SNAPSHOT_TIME] = users[S.INSTALL_TIME] + pd.Timedelta(hours=counts_observed_hours)
        snap["active_hours"] = pd.NA
        snap["last_active_hour"] = pd.NA
    else:
        h = hourly[(hourly[S.EVENT_COUNTS].sum(axis=1) > 0)].sort_values([S.ID, S.HOUR_START])
        install = h[S.ID].map(users.set_index(S.ID)[S.INSTALL_TIME])
        snap = pd.DataFrame({S.ID: h[S.ID].to_numpy()})
        # Counts of an hour are known at the end of that hour.
        snap[S.SNAPSHOT_TIME] = (h[S.HOUR_START] + pd.Timedelta(hours=1)).to_numpy()
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
    out[S.SNAPSHOT_TIME] = _us(out[S.SNAPSHOT_TIME])
    return out.sort_values([S.ID, S.SNAPSHOT_TIME], kind="stable").reset_index(drop=True)


def build_labels(users: pd.DataFrame, prediction_hours: int) -> pd.DataFrame:
    """Every user at its prediction time; revenue empty while its 7-day window is open."""
    lab = pd.DataFrame(
        {
            S.ID: users[S.ID],
            S.PREDICTION_TIME: _us(
                users[S.INSTALL_TIME] + pd.Timedelta(hours=prediction_hours) + SCORED_AFTER_HOUR
            ),
            S.LABEL: users[S.LABEL].astype("Float64"),
        }
    )
    return lab.sort_values([S.PREDICTION_TIME, S.ID]).reset_index(drop=True)


def build_oracle(
    labels: pd.DataFrame, activity: pd.DataFrame, prior: pd.DataFrame | None, hours: int
) -> pd.DataFrame:
    """The generator's exact E[revenue | what is known at the prediction time], per user: its prior and the
    cumulative counts of the last snapshot strictly before the prediction time (what the model sees).
    Without the generator's prior (your own data): no rows."""
    if prior is None:
        return pd.DataFrame(
            {
                S.ID: pd.Series(dtype="int64"),
                S.PREDICTION_TIME: pd.Series(dtype="datetime64[us, UTC]"),
                S.EXPECTED_REVENUE: pd.Series(dtype="float64"),
            }
        )
    at = labels[[S.ID, S.PREDICTION_TIME]].sort_values(S.PREDICTION_TIME)
    snaps = activity[[S.ID, S.SNAPSHOT_TIME, *S.EVENT_COUNTS]].sort_values(S.SNAPSHOT_TIME)
    seen = pd.merge_asof(
        at, snaps, left_on=S.PREDICTION_TIME, right_on=S.SNAPSHOT_TIME, by=S.ID, allow_exact_matches=False
    ).set_index(S.ID)
    users = labels[S.ID].to_numpy()
    prior = prior.set_index(S.ID).reindex(users)
    known = prior["engagement_rate"].notna().to_numpy()
    counts = seen.reindex(users)[S.EVENT_COUNTS].astype("Float64").fillna(0).to_numpy(dtype=float)
    expected = oracle_expected_revenue(
        prior[known].reset_index(), counts[known], np.full(int(known.sum()), hours)
    )
    return pd.DataFrame(
        {
            S.ID: users[known],
            S.PREDICTION_TIME: labels.loc[known, S.PREDICTION_TIME].reset_index(drop=True),  # its unit (us)
            S.EXPECTED_REVENUE: expected,
        }
    )


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


def assumed_install_time(p: PrepareParams) -> pd.Timestamp:
    """The common install time of the `assumed_install_time` mode (UTC), checked for sense."""
    text = p.assumed_install_time or S.DEFAULT_ASSUMED_INSTALL_TIME
    t = pd.Timestamp(text)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    # compared as Python datetimes: a far-off year is out of pandas' nanosecond range
    counts_at = t.to_pydatetime() + timedelta(hours=p.counts_observed_hours)
    if t.to_pydatetime() < datetime.fromisoformat(S.EARLIEST_ASSUMED_INSTALL_TIME):
        raise ValueError(
            f"game_ltv.prepare.assumed_install_time {text} is before {S.EARLIEST_ASSUMED_INSTALL_TIME}: "
            "its rows would never reach the online store (materialization starts there)"
        )
    if counts_at > datetime.now(UTC):
        raise ValueError(
            f"game_ltv.prepare.assumed_install_time {text} + counts_observed_hours "
            f"({p.counts_observed_hours} h) = {counts_at.isoformat()} is in the future: the counts of an "
            "export cannot have been observed after it was taken (set it to the export's time minus "
            "counts_observed_hours)"
        )
    return t.as_unit("ns")


def prepare(
    p: PrepareParams,
    out_dir: Path,
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
            "%s has an %s column: game_ltv.prepare.assumed_install_time (%s) is ignored",
            users_path,
            S.INSTALL_TIME,
            p.assumed_install_time,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    raw_users = read_raw(users_path, S.RAW_USER_COLUMNS if assumed is None else S.BRIEF_USER_COLUMNS)
    users, q_users, rep_users = validate_users(raw_users, assumed)
    q_users.to_csv(quarantine_dir / "users.csv", index=False)
    report: dict = {**timing, "prediction_hours": p.prediction_hours, "users": rep_users}
    hourly = None
    if activity_path is not None:
        raw_act = read_raw(activity_path, S.RAW_ACTIVITY_COLUMNS)
        hourly, q_act, rep_act = validate_activity(raw_act, users)
        q_act.to_csv(quarantine_dir / "activity.csv", index=False)
        report["activity"] = rep_act
    elif p.prediction_hours < p.counts_observed_hours:
        log.warning(
            "prediction_hours (%s) < counts_observed_hours (%s) without an activity file: the event counts "
            "are known only at install + %s h, so every training row sees zero events",
            p.prediction_hours,
            p.counts_observed_hours,
            p.counts_observed_hours,
        )
    build_profile(users, install_time_known=assumed is None).to_parquet(
        out_dir / f"{S.PROFILE_TABLE}.parquet", index=False
    )
    activity = build_activity(users, hourly, p.counts_observed_hours)
    activity.to_parquet(out_dir / f"{S.ACTIVITY_TABLE}.parquet", index=False)
    labels = build_labels(users, p.prediction_hours)
    labels.to_parquet(out_dir / f"{S.LABELS_TABLE}.parquet", index=False)
    # Always written (the evaluate stage depends on it): empty for data that did not come from the generator.
    prior_path = Path(users_path).parent / "oracle.parquet"  # the generator writes it beside users.csv
    prior = pd.read_parquet(prior_path) if prior_path.exists() else None
    oracle = build_oracle(labels, activity, prior, p.prediction_hours)
    oracle.to_parquet(out_dir / f"{S.ORACLE_TABLE}.parquet", index=False)
    known = labels[S.LABEL].notna()
    report["prepared"] = {
        "users": len(users),
        "labeled_users": int(known.sum()),
        "unlabeled_users": int((~known).sum()),
        "activity_snapshots": len(activity),
        "payer_share": round(float((labels.loc[known, S.LABEL] > 0).mean()), 5) if known.any() else None,
        "oracle_users": len(oracle),
    }
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics_path, report)
    log.info("prepared %s users (%s quarantined) in %s", len(users), rep_users["quarantined"], out_dir)
    return report


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--out", type=Path, required=True, help="the prepared folder specs/game_ltv.yaml reads")
    ap.add_argument("--quarantine", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--users", type=Path, default=None, help="override params: your own users file")
    ap.add_argument("--activity", type=Path, default=None, help="override params: your own hourly activity")
    args = ap.parse_args()
    prepare(
        load_params(args.params).game_ltv.prepare,
        args.out,
        args.quarantine,
        args.metrics,
        args.users,
        args.activity,
    )


if __name__ == "__main__":
    main()
