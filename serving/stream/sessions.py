"""Where the stream worker keeps each open session's page views: the state its features are replayed from.

A session's state is the *set* of its events keyed by event id, so adding an event twice (a redelivery, a
producer's re-send) changes nothing: that is the worker's idempotency. `add` stores the new events and
returns every event of the sessions it touched, in one round trip.

* `RedisSessionStore` (REDIS_URL set): one hash per session, `HSETNX <key> <event_id> <json>`, with the
  key expiring `ttl_s` after its last event. Redis is already the online store, so the state lives next to
  the features it produces.
* `SqliteSessionStore` (embedded default): one table keyed by event id, `INSERT OR IGNORE`, committed
  before `add` returns.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from core.online_fast import pipelined, resp
from domain.purchase_propensity.events import PageView


def _dump(e: PageView) -> bytes:
    return orjson.dumps(
        [
            e.event_id,
            e.session_id,
            e.customer_id,
            e.ts,
            e.page_type,
            e.category,
            e.product_id,
            e.price,
            e.referrer,
            e.device,
        ]
    )


def _load(b: bytes) -> PageView:
    return PageView(*orjson.loads(b))


class SessionStore(Protocol):
    async def add(self, events: Sequence[PageView]) -> dict[str, list[PageView]]: ...

    async def close(self) -> None: ...


def session_prefix(project: str) -> str:
    """Where a Feast project's stream sessions live in Redis: "<project>:purchase_propensity:session:"."""
    return f"{project}:purchase_propensity:session:"


def delete_sessions(client: Any, project: str) -> int:
    """Remove a project's session hashes (what `FeatureStore.teardown` does not know about); redis-py
    sync client. Returns how many were removed."""
    n = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=session_prefix(project) + "*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            n += client.unlink(*batch)
            batch = []
    if batch:
        n += client.unlink(*batch)
    return n


class RedisSessionStore:
    def __init__(self, client: Any, ttl_s: int, project: str) -> None:
        self._redis = client  # redis.asyncio.Redis
        self._ttl = ttl_s
        self._prefix = session_prefix(project)  # + session id

    @property
    def client(self) -> Any:
        return self._redis

    def commands(
        self, events: Sequence[PageView]
    ) -> tuple[bytes, int, Callable[[list[Any]], dict[str, list[PageView]]]]:
        """`add` as RESP commands to pipeline with other reads of the same Redis (the stream worker sends
        them with its online-feature read, one round trip): (commands, replies they owe, a function of
        those replies giving what `add` returns)."""
        sessions = list(dict.fromkeys(e.session_id for e in events))
        prefix, ttl = self._prefix, str(self._ttl).encode()
        parts = [
            resp(b"HSETNX", (prefix + e.session_id).encode(), e.event_id.encode(), _dump(e)) for e in events
        ]
        for sid in sessions:
            key = (prefix + sid).encode()
            parts += [resp(b"EXPIRE", key, ttl), resp(b"HVALS", key)]

        def parse(replies: list[Any]) -> dict[str, list[PageView]]:
            values = replies[len(events) + 1 :: 2]
            return {sid: [_load(b) for b in vals] for sid, vals in zip(sessions, values, strict=True)}

        return b"".join(parts), len(events) + 2 * len(sessions), parse

    async def add(self, events: Sequence[PageView]) -> dict[str, list[PageView]]:
        packed, n, parse = self.commands(events)
        return parse(await pipelined(self._redis, packed, n))

    async def close(self) -> None:
        return None  # the client belongs to whoever made it (it is shared with the online reads)


class SqliteSessionStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS session_events (event_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, "
            "body BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS session_events_session ON session_events (session_id)")
        self._lock = asyncio.Lock()

    def _add(self, events: Sequence[PageView]) -> dict[str, list[PageView]]:
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT OR IGNORE INTO session_events VALUES (?, ?, ?)",
                [(e.event_id, e.session_id, _dump(e)) for e in events],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")  # or every later BEGIN fails ("transaction within a transaction")
            raise
        sessions = list(dict.fromkeys(e.session_id for e in events))
        out: dict[str, list[PageView]] = defaultdict(list)
        marks = ",".join("?" * len(sessions))
        for sid, body in db.execute(
            f"SELECT session_id, body FROM session_events WHERE session_id IN ({marks})", sessions
        ):
            out[sid].append(_load(body))
        return {sid: out[sid] for sid in sessions}

    async def add(self, events: Sequence[PageView]) -> dict[str, list[PageView]]:
        async with self._lock:
            return self._add(events)

    async def close(self) -> None:
        self._db.close()
