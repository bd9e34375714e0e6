"""Alembic environment of the request log, meant to be run through ``serving.request_log.migrate``.

``migrate()`` passes, in ``config.attributes``:

* ``schema``: the schema of the tables and of Alembic's version table (``None``: default schema);
* ``connection``: an open SQLAlchemy connection, inside a transaction the caller commits.

Without a connection (e.g. ``command.upgrade(cfg, "head", sql=True)`` for offline SQL), the URL comes from
the ``sqlalchemy.url`` main option.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from serving.request_log.table import make_table

VERSION_TABLE = "alembic_version_request_log"

config = context.config
schema: str | None = config.attributes.get("schema")
target_metadata = make_table(schema).metadata

common_opts: dict[str, Any] = {
    "target_metadata": target_metadata,
    "version_table": VERSION_TABLE,
    "version_table_schema": schema,
    "include_schemas": schema is not None,
    # read by the migration scripts through op.get_context().opts
    "request_log_schema": schema,
}


def run_with(connection: Connection) -> None:
    context.configure(connection=connection, **common_opts)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **common_opts)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is not None:
        run_with(given)
    else:
        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("request-log migrations need a connection or the sqlalchemy.url option")
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as connection:
                run_with(connection)
        finally:
            engine.dispose()
