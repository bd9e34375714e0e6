from datetime import timedelta

from data_sources import segment_baseline_source
from entities import traffic_segment
from feast import FeatureView, Field
from feast.types import Float64, Int64, String

from core.band import WEEKDAYS

# The seasonal detector's state of each (country, os) series as of the start of a day, built from the
# days strictly before it (pipelines/api_anomaly/detectors.py::state_frame). expected log1p(count) on a
# day = level + effect_<its weekday>; scale = max(mad, Poisson floor); memory_level is the longer memory
# `core.band.score` consults (a return to a level it has seen is normal); drift_* carry the last days'
# deviations from it for `core.band.drift_score` (a sustained move). Rows are daily: older than a week,
# a state is stale and the real-time check reports the segment as unknown.
segment_baseline = FeatureView(
    name="segment_baseline",
    entities=[traffic_segment],
    ttl=timedelta(days=7),
    schema=[
        Field(name="country", dtype=String),
        Field(name="os", dtype=String),
        Field(name="level", dtype=Float64, description="recent de-seasonalized level, log1p(requests)"),
        Field(
            name="memory_level",
            dtype=Float64,
            description="median de-seasonalized level of the last weeks, log1p(requests): counts it has seen are normal",
        ),
        Field(name="mad", dtype=Float64, description="robust sd of recent residuals (log scale)"),
        Field(name="n_history", dtype=Int64, description="days with data in the state's window"),
        *(
            Field(name=f"effect_{w}", dtype=Float64, description=f"weekday effect of {w} (log scale)")
            for w in WEEKDAYS
        ),
        Field(
            name="drift_recent",
            dtype=Float64,
            description="sum of the capped deviations from the memory of the days before (drift window - 1)",
        ),
        Field(
            name="drift_usual", dtype=Float64, description="usual deviation from the memory level (log scale)"
        ),
        Field(
            name="drift_typical", dtype=Float64, description="usual size of the drift statistic across series"
        ),
    ],
    source=segment_baseline_source,
    online=True,
    tags={"model": "api_anomaly"},
)
