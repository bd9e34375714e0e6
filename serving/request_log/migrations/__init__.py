"""Programmatic Alembic runner for the request-log tables (no ``alembic.ini``).

``migrate(url, schema)`` brings the database to the latest revision; it is idempotent and safe to call
from every worker at start-up: on PostgreSQL the whole run (``CREATE SCHEMA IF NOT EXISTS``, DDL, version
stamp) is one transaction serialised by an advisory lock, so concurrent workers neither race nor see a
half-built schema. Alembic's version table is ``alembic_version_request_log`` in the same schema (its own
name, so other Alembic environments sharing the schema do not collide with it).
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

SCRIPT_LOCATION = Path(__file__).resolve().parent
# pg_advisory_xact_lock key shared by every process migrating the request log ("reqlog" in ASCII).
_ADVISORY_LOCK_KEY = 0x7265716C6F67
# Alembic installs its running context in module-level proxies: two upgrades in parallel threads of one
# process would clobber each other.
_PROCESS_LOCK = threading.Lock()


def alembic_config(schema: str | None) -> Config:
    """An Alembic ``Config`` built in code, pointing at this folder, carrying ``schema``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.attributes["schema"] = schema
    return cfg


def migrate_engine(engine: Engine, schema: str | None) -> None:
    """Upgrade the database behind ``engine`` to head (see :func:`migrate`)."""
    cfg = alembic_config(schema)
    with _PROCESS_LOCK, engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
            if schema:
                quoted = conn.dialect.identifier_preparer.quote_schema(schema)
                conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def migrate(url: str, schema: str | None) -> None:
    """Create or upgrade the request-log tables at ``url`` in ``schema`` (``None``: default schema).

    Idempotent. On PostgreSQL the schema is created if missing; on SQLite pass ``schema=None``.
    """
    engine = create_engine(url, poolclass=NullPool)
    try:
        migrate_engine(engine, schema)
    finally:
        engine.dispose()
