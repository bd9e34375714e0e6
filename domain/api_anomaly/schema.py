"""The caller-identification app's daily API counts: columns, OS values and their spellings, files, and
the anomaly vocabulary. One place for each fact; the generator writes them, ingestion validates against
them, the detector and its evaluation read them from here.

Raw layout (a folder; the generator writes it, your own export of the same structure works too)::

    <raw_dir>/api_counts.csv|.parquet   date, country, os, count: requests that day from that country
                                        and OS (one row per day, country and OS; a day without any
                                        request is a row with count 0, an absent row is a missing day)
    <raw_dir>/labels.parquet            generator only: the truth per (date, country, os) before defects
    <raw_dir>/anomalies.csv             generator only: the planted anomalies
    <raw_dir>/defects.csv               generator only: the planted data-quality defects
    <raw_dir>/segments.csv              generator only: each segment's level, weekend, launch
    <raw_dir>/holidays.csv              generator only: each country's public holidays in the period
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

# --- files -------------------------------------------------------------------------------------------
COUNTS = "api_counts"  # file stem of the user-supplied table
RAW_EXTENSIONS = (".parquet", ".csv")  # looked up in this order
LABELS_FILE = "labels.parquet"
ANOMALIES_FILE = "anomalies.csv"
DEFECTS_FILE = "defects.csv"
SEGMENTS_FILE = "segments.csv"
HOLIDAYS_FILE = "holidays.csv"
# Written by ingestion: the clean table (in --clean), the gaps it found (in --clean), rejected rows
# (in --quarantine).
CLEAN_COUNTS = "api_counts.parquet"
MISSING_DAYS_FILE = "missing_days.csv"
QUARANTINE_FILE = "api_counts.csv"

# --- columns -----------------------------------------------------------------------------------------
DATE = "date"  # a calendar day (UTC); the clean table holds it as UTC midnight, datetime64[us, UTC]
COUNTRY = "country"  # ISO 3166-1 alpha-2, upper-case (pipelines.common.geo.ISO_3166_ALPHA2)
OS = "os"  # one of OS_VALUES
COUNT = "count"  # requests that day, a whole number >= 0
RAW_COLUMNS = [DATE, COUNTRY, OS, COUNT]
KEY = [DATE, COUNTRY, OS]
SEGMENT = [COUNTRY, OS]  # a time series: one country and one OS

# --- feature store and outputs ---------------------------------------------------------------------------
# The Feast entity `traffic_segment` has one join key, "<country>:<os>" (e.g. "US:android"): the platform's
# online path reads single-key entities, and a segment is one series.
SEGMENT_KEY = "segment"
EVENT_TIMESTAMP = "event_timestamp"  # the day a baseline state applies to (built from the days before it)
BASELINE_TABLE = "segment_baseline"  # data/features/api_anomaly/segment_baseline.parquet
OUTPUT_ANOMALIES = "anomalies.csv"  # data/outputs/api_anomaly/: the detector's anomalies (GET /v1/anomalies)


# --- operating systems ---------------------------------------------------------------------------------
ANDROID, IOS, WEB, WINDOWS, MACOS, OTHER = "android", "ios", "web", "windows", "macos", "other"
OS_VALUES = (ANDROID, IOS, WEB, WINDOWS, MACOS, OTHER)  # canonical: lower-case
MOBILE_OS = frozenset({ANDROID, IOS})
DESKTOP_OS = frozenset({WINDOWS, MACOS})  # work devices: deeper weekend and holiday dips
# Other spellings met in exports, in the normalized form (stripped, lower-case) -> canonical value.
# Case and padding alone ('Android', ' IOS ') need no entry: they are normalized. A value that is
# neither canonical nor here is unknown and quarantined (it is not guessed into "other").
OS_ALIASES: dict[str, str] = {
    "android os": ANDROID,
    "iphone os": IOS,
    "iphone": IOS,
    "ipados": IOS,
    "browser": WEB,
    "web app": WEB,
    "mobile web": WEB,
    "win": WINDOWS,
    "win32": WINDOWS,
    "win64": WINDOWS,
    "mac os": MACOS,
    "mac os x": MACOS,
    "os x": MACOS,
    "osx": MACOS,
    "mac": MACOS,
    "others": OTHER,
}

# --- anomalies (generator truth, read by the detector's evaluation) -----------------------------------
SPIKE, DROP, OUTAGE, LEVEL_SHIFT, RAMP = "spike", "drop", "outage", "level_shift", "ramp"
ANOMALY_KINDS = (SPIKE, DROP, OUTAGE, LEVEL_SHIFT, RAMP)
# Scope: one segment (country + os), a whole country (all its OS at once), one OS across many
# countries (country empty in anomalies.csv; its `countries` column lists them).
SCOPE_SEGMENT, SCOPE_COUNTRY, SCOPE_OS = "segment", "country", "os"
SCOPES = (SCOPE_SEGMENT, SCOPE_COUNTRY, SCOPE_OS)
OBVIOUS, MODERATE, HARD = "obvious", "moderate", "hard"
DIFFICULTIES = (OBVIOUS, MODERATE, HARD)
EARLIER, EVALUATION = (
    "earlier",
    "evaluation",
)  # the two windows: tune thresholds on one, evaluate on the other
WINDOW_NAMES = (EARLIER, EVALUATION)
ANOMALY_COLUMNS = [
    "anomaly_id",
    "kind",
    "scope",
    COUNTRY,
    OS,
    "countries",  # the countries it touches, space-separated (os scope: a subset or all that have the OS)
    "start_date",
    "end_date",
    "magnitude",  # multiplicative factor on the expected count (for a ramp: the factor it reaches)
    "difficulty",
    "window",
    "ramp_days",  # ramps only: days from 1.0 to `magnitude`
    "n_segments",
    "labeled_points",  # (date, country, os) points labeled anomalous because of it
    "description",
]
LABEL_COLUMNS = [
    DATE,
    COUNTRY,
    OS,
    "expected_count",  # the true baseline: level x trend x weekday x holiday x launch, before anomalies and noise
    "count_true",  # the count before data-quality defects (noise and anomalies included)
    "effect",  # product of the anomaly factors applied to this point (1.0: none)
    "is_anomaly",
    "anomaly_id",  # nullable; the strongest active anomaly when several overlap
    "kind",
    "difficulty",
    "window",
    "defect",  # the data-quality defect planted on this point's row, if any (nullable)
]


def read_csv(path: Path, **kwargs: Any) -> pd.DataFrame:
    """A CSV of this model (anomalies, holidays, ...): only empty cells are missing. pandas' defaults read
    Namibia's country code "NA" as a missing value."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""], **kwargs)
