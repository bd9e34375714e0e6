"""Request log on a real PostgreSQL (``DATABASE_URL``), in a schema of its own dropped at the end.

The outage test goes through a TCP proxy (tests/integration/tcp_proxy.py) that is stopped for real: the
listener closes and live connections are reset, so the writer sees refused connections, then the proxy
comes back on the same port.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, make_url, select, text
from sqlalchemy.exc import OperationalError

from serving.request_log import PredictionRecord, RequestLogWriter, make_table, migrate
from serving.request_log import writer as writer_module
from tests.integration.tcp_proxy import TcpProxy

DATABASE_URL = os.environ.get("DATABASE_URL")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not DATABASE_URL, reason="DATABASE_URL is not set"),
]

FAST: dict[str, Any] = {"flush_interval_s": 0.02, "retry_initial_s": 0.05, "retry_max_s": 0.5}


def record(i: int) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"req-{i:08d}",
        model="churn",
        model_version="v1",
        entity_key={"user_id": i},
        inputs={"channel": "web"} if i % 2 else {},
        features={"avg_spend": i / 3, "n_orders": i % 9, "recent": [1, 2, 3]},
        prediction=i / 10_000,
        latency_ms=2.0,
        created_at=datetime(2025, 3, 1, tzinfo=UTC) + timedelta(milliseconds=i),
    )


@pytest.fixture
def url() -> str:
    assert DATABASE_URL
    return DATABASE_URL


@pytest.fixture
def schema(url: str) -> Iterator[str]:
    name = f"test_reqlog_{secrets.token_hex(6)}"
    yield name
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


def counts(url: str, schema: str) -> tuple[int, int]:
    """(rows, distinct request ids) read directly, not through the proxy."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text(f'SELECT count(*), count(DISTINCT request_id) FROM "{schema}".prediction_log')
            ).one()
    finally:
        engine.dispose()
    return row[0], row[1]


def spool_left(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.iterdir() if p.name != "rejected") if spool.exists() else []


def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_writes_every_record(url: str, schema: str, tmp_path: Path) -> None:
    n, n_threads = 5000, 4
    migrate(url, schema)
    migrate(url, schema)  # idempotent
    w = RequestLogWriter(url, schema, tmp_path / "spool", batch_size=200, **FAST)
    w.start()
    try:

        def worker(k: int) -> None:
            for i in range(k, n, n_threads):
                w.log(record(i))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert w.flush()
    finally:
        w.close()
    assert counts(url, schema) == (n, n)
    assert w.stats()["written"] == n

    engine = create_engine(url)
    insp = inspect(engine)
    assert set(insp.get_table_names(schema=schema)) == {
        "prediction_log",
        "api_key",
        "alembic_version_request_log",
    }
    table = make_table(schema)
    with engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.request_id == "req-00000007")).one()
        version = conn.execute(text(f'SELECT version_num FROM "{schema}".alembic_version_request_log')).all()
    engine.dispose()
    expected = record(7)
    assert row.entity_key == {"user_id": 7} and row.inputs == {"channel": "web"}
    assert row.features == expected.features and row.prediction == expected.prediction
    assert row.created_at == expected.created_at and row.created_at.utcoffset() == timedelta(0)
    assert version == [("0004",)]


def test_a_batch_retried_after_a_lost_commit_is_stored_once(url: str, schema: str, tmp_path: Path) -> None:
    """The connection drops while COMMIT is in flight and the commit did succeed: the writer cannot tell,
    retries the batch, and the retry (an insert that skips existing record ids, not COPY) adds nothing."""
    w = RequestLogWriter(url, schema, tmp_path / "spool", batch_size=100, **FAST)
    real_insert = w._insert_rows
    attempts: list[bool] = []

    def commit_reply_lost(rows: list[dict[str, Any]], first_attempt: bool = True) -> int:
        attempts.append(first_attempt)
        inserted = real_insert(rows, first_attempt)  # committed on the server ...
        if len(attempts) == 1:  # ... but the client never hears of it
            raise writer_module._DatabaseDown from OperationalError("COMMIT", None, Exception("reply lost"))
        return inserted

    w._insert_rows = commit_reply_lost  # type: ignore[method-assign]
    w.start()
    try:
        for i in range(50):
            w.log(record(i))
        # the writer's own cycle retries the batch it still holds (flush() would spill it instead)
        assert wait_until(lambda: len(attempts) >= 2, 10)
        assert w.flush()
    finally:
        w.close()
    assert attempts[:2] == [True, False]  # COPY first, then the idempotent insert
    assert counts(url, schema) == (50, 50)
    assert w.stats()["rejected_records"] == 0  # nothing refused as a duplicate and set aside either


def test_real_outage_through_a_proxy(url: str, schema: str, tmp_path: Path) -> None:
    target = make_url(url)
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
    proxied = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    spool = tmp_path / "spool"
    max_buffer = 50
    w = RequestLogWriter(proxied, schema, spool, batch_size=25, max_buffer=max_buffer, **FAST)
    try:
        w.start()
        for i in range(200):
            w.log(record(i))
        assert w.flush()
        assert counts(url, schema) == (200, 200)

        proxy.stop()  # outage: listener closed, the writer's pooled connections reset
        peak = 0
        for i in range(200, 700):
            w.log(record(i))
            peak = max(peak, w.stats()["buffered"])
            if i % 50 == 0:
                time.sleep(0.02)
        assert wait_until(lambda: w.stats()["db_up"] is False, timeout_s=5)
        st = w.stats()
        assert peak <= max_buffer and st["peak_buffered"] <= max_buffer
        assert st["spilled_files"] > 0 and st["spilled_records"] >= 500 - max_buffer
        assert w.flush() is False  # down: the rest goes to disk
        assert w.stats()["buffered"] == 0 and spool_left(spool)
        assert counts(url, schema) == (200, 200)

        proxy.start()  # same port
        # the writer reconnects on its own (backoff) and replays the spool
        assert wait_until(lambda: counts(url, schema) == (700, 700) and not spool_left(spool), timeout_s=10)
        assert w.flush()
        st = w.stats()
        assert st["db_up"] is True and st["written"] == 700 and st["rejected_records"] == 0
    finally:
        w.close()
        proxy.stop()
    assert counts(url, schema) == (700, 700)


def test_rows_postgres_refuses_are_set_aside(url: str, schema: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    w = RequestLogWriter(url, schema, spool, **FAST)
    w.start()
    try:
        for i in range(50):
            w.log(record(i))
        w.log(dataclasses.replace(record(50), model="nul\x00byte"))  # PostgreSQL text cannot hold NUL
        w.log(record(51))
        assert w.flush() is False
        assert counts(url, schema) == (51, 51)
        st = w.stats()
        assert (st["written"], st["rejected_records"], st["buffered"]) == (51, 1, 0)
        (rejected,) = (spool / "rejected").iterdir()
        assert "req-00000050" in rejected.read_text()
        w.log(record(52))  # not stuck
        assert w.flush()
        assert counts(url, schema) == (52, 52)
    finally:
        w.close()
