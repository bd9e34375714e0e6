from datetime import timedelta

from data_sources import user_activity_source, user_profile_source
from entities import user
from feast import FeatureView, Field
from feast.types import Int64, String

# Attributes known at install. ttl=0: they never expire.
user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="country", dtype=String),
        Field(name="country_region", dtype=String),
        Field(name="source", dtype=String),
        Field(name="platform", dtype=String),
        Field(name="device_family", dtype=String),
        Field(name="os_version", dtype=String),
        Field(name="install_hour", dtype=Int64, description="UTC hour of day of the install"),
        Field(name="install_dow", dtype=Int64, description="UTC day of week of the install, Monday=0"),
    ],
    source=user_profile_source,
    online=True,
    tags={"model": "game_ltv"},
)

# As-of snapshots of cumulative activity since install; the latest one at or before the prediction time
# is the user's state then. Cumulative, so an old snapshot stays true: no expiry.
user_activity = FeatureView(
    name="user_activity",
    entities=[user],
    ttl=timedelta(0),
    schema=[
        Field(name="event_1", dtype=Int64, description="cumulative count of event type 1 since install"),
        Field(name="event_2", dtype=Int64, description="cumulative count of event type 2 since install"),
        Field(name="event_3", dtype=Int64, description="cumulative count of event type 3 since install"),
        Field(name="active_hours", dtype=Int64, description="hours with any event since install"),
        Field(name="last_active_hour", dtype=Int64, description="hours after install of the last activity"),
    ],
    source=user_activity_source,
    online=True,
    tags={"model": "game_ltv"},
)
