"""The game studio's data contract: raw columns, closed category sets, and the prepared tables' names.

One place for these facts; the generator writes the raw files, preparation (pipelines/game_ltv/prepare.py)
validates them and writes the tables that specs/game_ltv.yaml declares.
"""

from __future__ import annotations

# The brief's dataset (11 columns), plus `install_time` when the data has it (cohorts, point-in-time
# features, a split by time). Without it every user gets one assumed install time (see TIMING_* below).
ID = "user_id"
INSTALL_TIME = "install_time"
LABEL = "revenue"
CATEGORICAL = ["country", "country_region", "source", "platform", "device_family", "os_version"]
EVENT_COUNTS = ["event_1", "event_2", "event_3"]
BRIEF_USER_COLUMNS = [ID, *CATEGORICAL, *EVENT_COUNTS, LABEL]
RAW_USER_COLUMNS = [ID, INSTALL_TIME, *CATEGORICAL, *EVENT_COUNTS, LABEL]

# Hourly activity log: events per user per hour after install (optional richer source).
HOUR_START = "hour_start"
RAW_ACTIVITY_COLUMNS = [ID, HOUR_START, *EVENT_COUNTS]

# Closed sets (values are normalized: stripped, lower-cased; country upper-cased).
SOURCES = frozenset({"organic", "non-organic"})
PLATFORMS = frozenset({"android", "ios"})

LABEL_WINDOW_DAYS = 7

# Tables written by pipelines/game_ltv/prepare.py into the prepared folder; specs/game_ltv.yaml declares
# them as its sources, label table and oracle (tests/unit/test_game_ltv_prepare.py holds the two in step).
PROFILE_TABLE = "user_profile"  # one row per user, stamped at install
ACTIVITY_TABLE = "user_activity"  # as-of snapshots of cumulative activity, stamped at SNAPSHOT_TIME
LABELS_TABLE = "labels"  # one row per user: its prediction time and revenue (empty: window still open)
ORACLE_TABLE = "oracle"  # generated data only: the exact expectation at the prediction time
SNAPSHOT_TIME = "snapshot_time"
PREDICTION_TIME = "prediction_time"
EXPECTED_REVENUE = "expected_revenue"

# Timing modes, recorded by preparation (metrics/game_ltv_prepare.json).
TIMING_INSTALL_TIME = "install_time"  # the users file has install_time: real cohorts, split by time
TIMING_ASSUMED = "assumed_install_time"  # it has not: one common install time, random split
# The assumed install time when params give none. A fixed constant, not the file's modification time (which
# `git clone` / `dvc checkout` reset), so the same file always gives the same features and model version.
# Clearly artificial, never mistaken for a real install; after the start of the online store's
# materialization window (2000-01-01, pipelines/materialize.EPOCH) and before any real "now".
DEFAULT_ASSUMED_INSTALL_TIME = "2001-01-01T00:00:00Z"
EARLIEST_ASSUMED_INSTALL_TIME = "2000-01-01T00:00:00Z"  # earlier rows would never be materialized
