"""Ingest and validate the daily API counts (date, country, os, count); write the clean table, the
quarantined rows with their reasons, and the missing days.

Input: ``<raw_dir>/api_counts.parquet`` or ``.csv`` (``api_anomaly.ingest.raw_dir``; columns in
`schema`). Every row is validated; rejected rows go to ``<quarantine>/api_counts.csv`` with a
``reason_code`` and a readable ``reason``, and the counts (rows in / ok / quarantined, by reason, by
repair, missing days) to the metrics JSON. Nothing is dropped silently.

Repairs (counted, not rejected): a country code's case and padding (``' us'``, ``'de'`` -> ``US``,
``DE``: ``normalized_country``); an OS's case and padding (``'ANDROID '`` -> ``android``:
``normalized_os``) and its other spellings, mapped through ``schema.OS_ALIASES`` (``'iPhone OS'`` ->
``ios``, ``'win'`` -> ``windows``, ``'Mac OS'`` -> ``macos``: ``mapped_os``).

Quarantined, by reason code:

* ``missing_date``, ``bad_date``: empty, not an ISO-8601 date (``'14/03/2026'``, ``'2026-02-30'``),
  or a timestamp with a time of day (a daily count belongs to a calendar day);
* ``out_of_period``: a date outside [``start``, ``end``] of the ingest params (the export's period);
* ``missing_country``, ``invalid_country``: not an ISO 3166-1 alpha-2 code (``'XX'``, ``'EU'``; also
  ``'UK'``, which is not ISO: the United Kingdom is ``GB``, and guessing is not ingestion's job);
* ``missing_os``, ``unknown_os``: neither a canonical OS nor a known spelling of one (not guessed into
  ``other``: a new value is a question for the data's owner);
* ``missing_count``, ``non_numeric_count`` (``'n/a'``, ``'12.5'``, ``'1,234'``), ``negative_count``;
* ``absurd_count``: above ``max_count`` (a hard ceiling no country/OS reaches in a day: ~8x the whole
  app's traffic), or above ``max_ratio_to_median`` (1000) times the segment's median day, the median
  taken over the segment's otherwise valid rows and at least ``median_floor``. The largest real
  anomalies are spikes of a few times the level; a 1000x day is a unit or overflow error
  (2^31-1, 2^32-1, 10^12), not traffic;
* ``exact_duplicate``: the same date, country, os and count as an earlier row (after repairs): the
  first is kept, the copies quarantined;
* ``conflicting_duplicate``: rows with the same date, country and os but different counts: all of them
  are quarantined, since nothing tells which one is right (the day becomes a gap, reported below).

Missing days are not rows, so they are reported: within each segment's span (its first to last clean
day), every day without a clean row is a gap; a date on which a country has no row at all (within the
country's span) is one country-wide gap instead of one per OS. ``<clean>/missing_days.csv`` lists
them (date, country, os (empty when country-wide), scope, cause: ``quarantined`` when rows for that
key were quarantined, else ``absent``). Note the export contract: a day without requests is a row
with count 0; an export that omits zero rows shows them here as gaps.

Output (``--clean``): ``api_counts.parquet``: date (UTC midnight, datetime64[us, UTC]), country, os,
count (int64), sorted by date, country, os, one row per key.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from domain.api_anomaly import schema as S
from pipelines.api_anomaly.params import IngestParams
from pipelines.common.geo import ISO_3166_ALPHA2
from pipelines.common.params import load_params
from pipelines.common.stage import stage, stage_parser, write_metrics
from pipelines.common.validation import RowValidator, read_raw

log = logging.getLogger(__name__)

GAP_COLUMNS = [S.DATE, S.COUNTRY, S.OS, "scope", "cause", "segments"]


def find_input(raw_dir: Path) -> Path:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: no such folder (api_anomaly.ingest.raw_dir)")
    for ext in S.RAW_EXTENSIONS:
        if (raw_dir / f"{S.COUNTS}{ext}").exists():
            return raw_dir / f"{S.COUNTS}{ext}"
    raise FileNotFoundError(f"{raw_dir}: no {S.COUNTS}.csv or {S.COUNTS}.parquet (columns {S.RAW_COLUMNS})")


def _day(d) -> pd.Timestamp:
    return pd.Timestamp(d).tz_localize("UTC")


def validate(raw: pd.DataFrame, p: IngestParams) -> tuple[pd.DataFrame, pd.DataFrame, dict, pd.DataFrame]:
    """(clean rows, quarantine frame, report, parsed keys of the quarantined rows for the gap causes)."""
    v = RowValidator(raw)
    day = v.timestamp(S.DATE, "bad_date", missing_code="missing_date")
    v.reject(
        day.notna() & (day != day.dt.normalize()),
        "bad_date",
        lambda r: "date has a time of day: '" + r[S.DATE].astype(str) + "' (a count is per calendar day)",
    )
    period = f"{p.start or '...'}..{p.end or '...'}"
    if p.start is not None:
        v.reject(
            day < _day(p.start),
            "out_of_period",
            lambda r: "date " + r[S.DATE].astype(str) + f" is before the export's period {period}",
        )
    if p.end is not None:
        v.reject(
            day > _day(p.end),
            "out_of_period",
            lambda r: "date " + r[S.DATE].astype(str) + f" is after the export's period {period}",
        )
    country = v.category(
        S.COUNTRY, ISO_3166_ALPHA2, "invalid_country", upper=True, missing_code="missing_country"
    )
    os_ = v.category(S.OS, S.OS_VALUES, "unknown_os", missing_code="missing_os", aliases=S.OS_ALIASES)
    count = v.integer(
        S.COUNT,
        "non_numeric_count",
        min_value=0,
        negative_code="negative_count",
        max_value=p.max_count,
        above_code="absurd_count",
    )

    # Absurd relative to the segment: its median over the rows valid so far (robust to the few absurd).
    ok = ~v.rejected() & count.notna()
    seg = pd.DataFrame({S.COUNTRY: country, S.OS: os_, S.COUNT: count.astype("float64")})[ok]
    median = seg.groupby([S.COUNTRY, S.OS])[S.COUNT].transform("median")
    limit = p.max_ratio_to_median * np.maximum(median, p.median_floor)
    absurd = pd.Series(False, index=raw.index)
    absurd.loc[seg.index] = seg[S.COUNT] > limit
    v.reject(
        absurd,
        "absurd_count",
        lambda r: (
            "count "
            + r[S.COUNT].astype(str)
            + " is over "
            + f"{p.max_ratio_to_median:g}x its segment's median day ("
            + median.reindex(r.index).map("{:,.0f}".format)
            + ")"
        ),
    )

    # Duplicates on the parsed, repaired key: ' us'/'US' and 'iOS'/'ios' are the same segment.
    values = pd.DataFrame(
        {S.DATE: day.dt.strftime("%Y-%m-%d"), S.COUNTRY: country, S.OS: os_, S.COUNT: count}
    )
    v.duplicates(S.KEY, parsed_ok=~v.rejected(), values=values)

    ok, quarantine, reasons = v.split()
    clean = pd.DataFrame({S.DATE: day, S.COUNTRY: country, S.OS: os_, S.COUNT: count})[ok]
    clean[S.DATE] = clean[S.DATE].dt.as_unit("us")
    clean[S.COUNT] = clean[S.COUNT].astype("int64")
    for col in (S.COUNTRY, S.OS):
        clean[col] = clean[col].astype(str).astype(object)
    clean = clean.sort_values(S.KEY, kind="stable").reset_index(drop=True)
    parsed = pd.DataFrame({S.DATE: day, S.COUNTRY: country, S.OS: os_})[~ok].dropna()
    parsed[S.DATE] = parsed[S.DATE].dt.as_unit("us")
    for col in (S.COUNTRY, S.OS):
        parsed[col] = parsed[col].astype(str).astype(object)
    report = v.report(ok, quarantine, reasons)
    return clean, quarantine, report, parsed


def _spans(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Every day from each group's first to last date: one row per (group, day)."""
    span = df.groupby(keys, observed=True)[S.DATE].agg(["min", "max"]).reset_index()
    n = ((span["max"] - span["min"]).dt.days + 1).to_numpy()
    grid = span.loc[span.index.repeat(n), keys].reset_index(drop=True)
    offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    grid[S.DATE] = span["min"].repeat(n).reset_index(drop=True) + pd.to_timedelta(offset, unit="D")
    return grid


def _absent(grid: pd.DataFrame, have: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    merged = grid.merge(have[keys].drop_duplicates(), on=keys, how="left", indicator=True)
    return merged[merged["_merge"] == "left_only"].drop(columns="_merge").reset_index(drop=True)


def missing_days(clean: pd.DataFrame, quarantined: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Gaps inside each segment's span; dates missing for a whole country inside the country's span.
    `quarantined`: parsed date/country/os of the quarantined rows (to tell the cause)."""
    if clean.empty:
        return pd.DataFrame(columns=GAP_COLUMNS), {"segment_days": 0, "country_days": 0, "listed": 0}
    seg_keys, c_keys = [S.COUNTRY, S.OS, S.DATE], [S.COUNTRY, S.DATE]
    seg_grid = _spans(clean, [S.COUNTRY, S.OS])
    seg_gaps = _absent(seg_grid, clean, seg_keys)
    c_gaps = _absent(_spans(clean, [S.COUNTRY]), clean, c_keys)
    # For a country-wide gap: how many of the country's segments were active that day.
    active = seg_grid.groupby(c_keys).size().rename("segments").reset_index()
    c_gaps = c_gaps.merge(active, on=c_keys, how="left")
    q_seg = quarantined[seg_keys].drop_duplicates().assign(_q=True)
    q_c = quarantined[c_keys].drop_duplicates().assign(_q=True)
    seg_only = _absent(seg_gaps, c_gaps, c_keys)  # the rest is inside a country-wide gap
    seg_only = seg_only.merge(q_seg, on=seg_keys, how="left")
    c_gaps = c_gaps.merge(q_c, on=c_keys, how="left")
    listed = pd.concat(
        [
            seg_only.assign(scope="segment", segments=1),
            c_gaps.assign(scope="country", **{S.OS: ""}),
        ],
        ignore_index=True,
    )
    listed["cause"] = np.where(listed["_q"].eq(True), "quarantined", "absent")
    listed[S.DATE] = listed[S.DATE].dt.strftime("%Y-%m-%d")
    listed = listed.sort_values([S.DATE, S.COUNTRY, S.OS]).reset_index(drop=True)[GAP_COLUMNS]
    listed["segments"] = listed["segments"].astype("int64")
    all_dates = pd.date_range(clean[S.DATE].min(), clean[S.DATE].max(), freq="D")
    no_rows = all_dates.difference(pd.DatetimeIndex(clean[S.DATE].unique()))
    report = {
        "segment_days": len(seg_gaps),  # every (segment, day) gap, those inside country-wide gaps too
        "segments_with_gaps": int(seg_gaps[[S.COUNTRY, S.OS]].drop_duplicates().shape[0]),
        "country_days": len(c_gaps),  # (country, day) with no row at all
        "listed": len(listed),  # rows of missing_days.csv: country-wide gaps once, other gaps per segment
        "by_cause": {k: int(n) for k, n in listed["cause"].value_counts().sort_index().items()},
        "dates_without_any_row": [d.strftime("%Y-%m-%d") for d in no_rows],
    }
    return listed, report


def ingest(
    p: IngestParams,
    clean_dir: Path,
    quarantine_dir: Path,
    metrics_path: Path,
    raw_dir: Path | None = None,
) -> dict:
    path = find_input(Path(raw_dir or p.raw_dir))
    clean_dir, quarantine_dir, metrics_path = Path(clean_dir), Path(quarantine_dir), Path(metrics_path)
    clean_dir.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    for old in quarantine_dir.glob("*.csv"):
        old.unlink()
    raw = read_raw(path, S.RAW_COLUMNS)
    clean, quarantine, report, parsed = validate(raw, p)
    quarantine.to_csv(quarantine_dir / S.QUARANTINE_FILE, index=False)
    clean.to_parquet(clean_dir / S.CLEAN_COUNTS, index=False)
    gaps, gap_report = missing_days(clean, parsed)
    gaps.to_csv(clean_dir / S.MISSING_DAYS_FILE, index=False)
    segments = clean[[S.COUNTRY, S.OS]].drop_duplicates()
    full = {
        "input": path.name,
        "period": {
            "start": p.start.isoformat() if p.start else None,
            "end": p.end.isoformat() if p.end else None,
        },
        **report,
        "missing_days": gap_report,
        "clean": {
            "rows": len(clean),
            "segments": len(segments),
            "countries": int(segments[S.COUNTRY].nunique()),
            "segments_by_os": {k: int(n) for k, n in segments[S.OS].value_counts().sort_index().items()},
            "date_min": clean[S.DATE].min().strftime("%Y-%m-%d") if len(clean) else None,
            "date_max": clean[S.DATE].max().strftime("%Y-%m-%d") if len(clean) else None,
            "days": int(clean[S.DATE].nunique()),
            "requests": int(clean[S.COUNT].sum()),
        },
    }
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    write_metrics(metrics_path, full)
    log.info(
        "%s: %d rows in, %d ok, %d quarantined %s, repaired %s; missing days: %d segment-days, "
        "%d country-days",
        path,
        report["rows_in"],
        report["rows_ok"],
        report["quarantined"],
        report["by_reason"],
        report["repaired"],
        gap_report["segment_days"],
        gap_report["country_days"],
    )
    return full


@stage
def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--clean", type=Path, required=True)
    ap.add_argument("--quarantine", type=Path, required=True)
    ap.add_argument("--metrics", type=Path, required=True)
    ap.add_argument("--raw", type=Path, default=None, help="override params: your own raw folder")
    args = ap.parse_args()
    ingest(load_params(args.params).api_anomaly.ingest, args.clean, args.quarantine, args.metrics, args.raw)


if __name__ == "__main__":
    main()
