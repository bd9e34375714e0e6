"""Publish the Parquet feature tables to the PostgreSQL offline store (when DATABASE_URL is PostgreSQL).

Parquet stays the pipeline's output (tracked by DVC); PostgreSQL gets an exact copy, table
``<schema>.<model>__<table>``, loaded with COPY. A fingerprint per table (the file's content hash, kept in
``<schema>._published_tables``) makes this idempotent: a table is reloaded only when its file changed,
so switching the environment to PostgreSQL after an embedded run needs no pipeline rerun.
"""

from __future__ import annotations

import io
import logging

import pandas as pd
import psycopg
import pyarrow.parquet as pq
from psycopg import sql
from sqlalchemy.engine import make_url

from core.model_bundle import file_sha256
from core.settings import Settings

log = logging.getLogger(__name__)

PG_TYPES = {"i": "BIGINT", "u": "BIGINT", "f": "DOUBLE PRECISION", "b": "BOOLEAN"}


def pg_connect(url: str) -> psycopg.Connection:
    u = make_url(url)
    return psycopg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        dbname=u.database or "postgres",
        user=u.username or "postgres",
        password=u.password or None,
        autocommit=False,
    )


def _pg_type(s: pd.Series) -> str:
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(s):
        return "TIMESTAMPTZ"
    if isinstance(s.dtype, pd.BooleanDtype):
        return "BOOLEAN"
    if pd.api.types.is_integer_dtype(s):
        return "BIGINT"
    return PG_TYPES.get(s.dtype.kind, "TEXT")


def publish_tables(settings: Settings, model: str, tables: list[str] | None = None) -> dict[str, str]:
    """Copy data/features/<model>/*.parquet to PostgreSQL when changed. Returns {table: 'loaded'|'unchanged'}."""
    assert settings.database_url, "publish_tables needs DATABASE_URL"
    schema = settings.database_schema
    files = sorted((settings.features_dir / model).glob("*.parquet"))
    if tables is not None:
        files = [f for f in files if f.stem in tables]
    result = {}
    with pg_connect(settings.database_url) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}._published_tables (name TEXT PRIMARY KEY, fingerprint TEXT, "
                "rows BIGINT, published_at TIMESTAMPTZ DEFAULT now())"
            ).format(sql.Identifier(schema))
        )
        conn.commit()
        for path in files:
            name = f"{model}__{path.stem}"
            fp = file_sha256(path)
            row = conn.execute(
                sql.SQL("SELECT fingerprint FROM {}._published_tables WHERE name = %s").format(
                    sql.Identifier(schema)
                ),
                (name,),
            ).fetchone()
            exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{name}",)).fetchone()[0]
            if row and row[0] == fp and exists:
                result[name] = "unchanged"
                continue
            df = pq.read_table(path).to_pandas()
            table = sql.Identifier(schema, name)
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_pg_type(df[c]))) for c in df.columns
            )
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, cols))
            with conn.cursor().copy(
                sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv, NULL '')").format(table)
            ) as copy:
                for start in range(0, len(df), 200_000):
                    buf = io.StringIO()
                    df.iloc[start : start + 200_000].to_csv(
                        buf, header=False, index=False, date_format="%Y-%m-%d %H:%M:%S.%f%z"
                    )
                    copy.write(buf.getvalue())
            if "event_timestamp" in df.columns:
                conn.execute(
                    sql.SQL("CREATE INDEX ON {} ({}, event_timestamp)").format(
                        table, sql.Identifier(df.columns[0])
                    )
                )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}._published_tables (name, fingerprint, rows) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, rows = EXCLUDED.rows, "
                    "published_at = now()"
                ).format(sql.Identifier(schema)),
                (name, fp, len(df)),
            )
            conn.commit()
            result[name] = "loaded"
            log.info("published %s rows to %s.%s", len(df), schema, name)
    return result
