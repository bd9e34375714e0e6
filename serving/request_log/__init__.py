"""The prediction request log: every prediction the API makes, in a relational table.

``RequestLogWriter`` batches writes off the request path and survives database outages (spilling to disk);
``migrate`` creates the table with Alembic; ``prediction_log`` / ``make_table`` describe it.
"""

from serving.request_log.migrations import migrate
from serving.request_log.table import make_table, prediction_log
from serving.request_log.writer import PredictionRecord, RequestLogWriter, writer_from_settings

__all__ = [
    "PredictionRecord",
    "RequestLogWriter",
    "make_table",
    "migrate",
    "prediction_log",
    "writer_from_settings",
]
