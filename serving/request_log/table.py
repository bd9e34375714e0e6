"""The ``prediction_log`` table (SQLAlchemy Core).

The schema name differs per deployment (tests use a schema of their own), so the table is built by
:func:`make_table`; ``prediction_log`` is the schema-less instance, handy for typing and for SQLite.
The DDL itself is owned by the Alembic migrations in ``migrations/versions``: keep both in step.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)
from sqlalchemy.types import TypeDecorator

TABLE_NAME = "prediction_log"
REQUEST_ID_LEN = 36
RECORD_ID_LEN = 36
MODEL_LEN = 100
KEY_ID_LEN = 16
API_KEY_TABLE = "api_key"


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always stores UTC and always returns timezone-aware UTC values.

    SQLite has no time-zone type: SQLAlchemy stores the wall-clock digits and drops the offset, so values
    are converted to UTC before binding (naive values are taken as UTC) and tagged UTC when read back.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


@cache
def make_table(schema: str | None) -> Table:
    """The ``prediction_log`` table in ``schema`` (``None``: the connection's default schema).

    Each schema gets its own ``MetaData`` (cached, so repeated calls return the same ``Table``).
    """
    metadata = MetaData(schema=schema)
    return Table(
        TABLE_NAME,
        metadata,
        Column(
            "id",
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("request_id", String(REQUEST_ID_LEN), nullable=False),
        Column("model", String(MODEL_LEN), nullable=False),
        Column("model_version", String(MODEL_LEN), nullable=False),
        Column("entity_key", JSON, nullable=False),
        Column("inputs", JSON, nullable=False),
        Column("features", JSON, nullable=False),
        # NULL only for a NaN prediction on SQLite (which stores NaN as NULL); PostgreSQL keeps NaN.
        Column("prediction", Float, nullable=True),
        Column("latency_ms", Float, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        # one id per logged prediction, made by the process that logged it: a batch written twice (its
        # COMMIT was in flight when the connection dropped, or a spool file was replayed again after a
        # crash) inserts nothing the second time (``ON CONFLICT DO NOTHING``). NULL on rows written
        # before revision 0002.
        Column("record_id", String(RECORD_ID_LEN), nullable=True),
        # where the model came from (revision 0003): the registry's version and run, and the FeatureService
        # its features were read through. NULL for a model served from its folder, and on older rows.
        Column("registry_version", String(20), nullable=True),
        Column("run_id", String(64), nullable=True),
        Column("feature_service", String(MODEL_LEN), nullable=True),
        # which API key made the request (revision 0004; NULL for the stream worker and older rows)
        Column("key_id", String(KEY_ID_LEN), nullable=True),
        Index("ix_prediction_log_request_id", "request_id"),
        Index("ux_prediction_log_record_id", "record_id", unique=True),
        Index("ix_prediction_log_created_at", "created_at"),
    )


@cache
def make_api_key_table(schema: str | None) -> Table:
    """The ``api_key`` table (serving/auth): one row per key, its secret only as a SHA-256 digest.

    In the same ``MetaData`` as ``prediction_log`` of that schema: one database, one migration chain.
    """
    return Table(
        API_KEY_TABLE,
        make_table(schema).metadata,
        Column("key_id", String(KEY_ID_LEN), primary_key=True),
        Column("name", String(MODEL_LEN), nullable=False),
        Column("secret_sha256", String(64), nullable=False),
        Column("actions", JSON, nullable=False),
        Column("models", JSON, nullable=False),
        Column("rate_limit", String(40), nullable=True),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("expires_at", UTCDateTime(), nullable=True),
        Column("revoked_at", UTCDateTime(), nullable=True),
        Column("rotated_from", String(KEY_ID_LEN), nullable=True),
    )


prediction_log: Table = make_table(None)

COLUMNS: tuple[str, ...] = tuple(c.name for c in prediction_log.columns if c.name != "id")
