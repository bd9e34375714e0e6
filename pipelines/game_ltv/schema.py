"""The game studio's data contract: raw columns, closed category sets, and file names.

One place for these facts; the generator writes them, ingestion validates against them, the Feast
definitions read the feature tables that ingestion writes.
"""

from __future__ import annotations

# The brief's dataset, plus `install_time` (needed for cohorts and point-in-time features).
ID = "user_id"
INSTALL_TIME = "install_time"
LABEL = "revenue"
CATEGORICAL = ["country", "country_region", "source", "platform", "device_family", "os_version"]
EVENT_COUNTS = ["event_1", "event_2", "event_3"]
RAW_USER_COLUMNS = [ID, INSTALL_TIME, *CATEGORICAL, *EVENT_COUNTS, LABEL]

# Hourly activity log: events per user per hour after install (optional richer source).
HOUR_START = "hour_start"
RAW_ACTIVITY_COLUMNS = [ID, HOUR_START, *EVENT_COUNTS]

# Closed sets (values are normalized: stripped, lower-cased; country upper-cased).
SOURCES = frozenset({"organic", "non-organic"})
PLATFORMS = frozenset({"android", "ios"})

LABEL_WINDOW_DAYS = 7

# Feature tables written by ingestion (relative to the features dir) and read by feature_repo.
PROFILE_TABLE = "user_profile"
ACTIVITY_TABLE = "user_activity"
LABELS_TABLE = "labels"
EVENT_TIMESTAMP = "event_timestamp"
