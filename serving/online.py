"""Online feature access through Feast, by FeatureService, with a clear error when the store is down.

Feast stays the source of truth: values are read with `FeatureStore.get_online_features` for the model's
FeatureService, the same contract training used. The FeatureService object is looked up once and cached;
a missing registry (no `feast apply` yet) is retried on the next call, so the service heals by itself.

Point in time: the online store holds each entity's latest row only. A model whose request carries an
as-of time (`LoadedModel.as_of_feature`, e.g. a band check's `date`) and asks about a time before its
online row is answered from the features as of that time: `point_in_time_rows` picks those rows and
`get_as_of` reads them with Feast's `get_historical_features` (the same point-in-time join training uses,
ttl included), so only such rows pay for an offline read.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
from feast import FeatureService, FeatureStore
from starlette.concurrency import run_in_threadpool

from core.online_fast import RedisLayout, pipelined
from core.online_receipt import lost_message, missing_views, receipt_key, shard_tags
from serving.batching import MicroBatcher

log = logging.getLogger(__name__)

TS_SUFFIX = "__ts"


class OnlineStoreUnavailable(RuntimeError):
    """The online store (or the feature registry) cannot be read right now."""


class OnlineStoreLost(OnlineStoreUnavailable):
    """The online store answers but has lost what was materialized into it (core/online_receipt.py)."""


class OfflineStoreUnavailable(RuntimeError):
    """The offline store cannot answer a point-in-time read a request needs."""


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error, OSError, ConnectionError, TimeoutError]
    try:
        import redis

        errors.append(redis.exceptions.RedisError)
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    return tuple(errors)


UNAVAILABLE = _unavailable_errors()


@dataclass
class EntityFeatures:
    values: dict[str, Any]  # feature name -> value (None when absent)
    timestamps: dict[str, datetime | None]  # feature view name -> event time of its stored row


def as_of_time(value: Any) -> tuple[datetime, bool] | None:
    """A request's as-of value as (UTC time, whether it names a whole day): an ISO day is its start, 00:00
    UTC; an ISO time without a zone is UTC. None for a missing or unreadable value (the model's own request
    check refuses a malformed one)."""
    if not isinstance(value, str):
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=UTC), True
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)), False


def point_in_time_rows(values: list[Any], stored: list[EntityFeatures]) -> dict[int, datetime]:
    """Row -> as-of time, for the rows whose as-of value is before their online row's event time (a day
    value: before its day): those must not see the online row, which already holds what happened since.
    Rows on or after their online row's time, and ids with no online row, keep the online features."""
    out: dict[int, datetime] = {}
    for i, (value, s) in enumerate(zip(values, stored, strict=True)):
        latest = max((t for t in s.timestamps.values() if t is not None), default=None)
        parsed = None if latest is None else as_of_time(value)
        if parsed is None or latest is None:
            continue
        at, whole_day = parsed
        if (at.date() < latest.astimezone(UTC).date()) if whole_day else at < latest:
            out[i] = at
    return out


class OnlineFeatures:
    """`aget` is the request path: on Redis, core.online_fast's reader with the HMGETs of concurrent
    requests pipelined in one round trip; on other stores, Feast's get_online_features in a thread."""

    def __init__(self, store: FeatureStore, redis_client: Any = None) -> None:
        self.store = store
        self._services: dict[str, FeatureService] = {}
        self._views: dict[str, dict[str, str]] = {}  # service -> feature -> view
        self._lock = threading.Lock()
        self._redis = redis_client  # redis.asyncio.Redis when the online store is Redis
        self._layouts: dict[str, RedisLayout] = {}
        self._receipt_tags: dict[str, str] | None = None  # cluster node -> its receipt's shard
        self._receipt_heads: dict[int, dict[str, bytes]] = {}  # layout -> node -> its receipt's HMGET
        self._readers: dict[str, MicroBatcher[bytes, list[bytes | None]]] = {}

    @property
    def _cluster(self) -> bool:
        return self._redis is not None and hasattr(self._redis, "nodes_manager")

    async def _read_cluster(self, keys: list[bytes], layout: RedisLayout) -> list[list[bytes | None]]:
        """`read` on a Redis Cluster: the keys grouped by the node owning their hash slot, each group one
        pipelined round trip on that node's connection, all nodes at once, each led by the HMGET of that
        node's own receipt (`core.online_receipt.shard_tags`): a node that restarted empty answers 503 for
        its keys. A slot that moved (MOVED/ASK) refreshes the slot map and reads again, once."""
        from redis.exceptions import ResponseError

        rc = self._redis
        if not rc.nodes_manager.slots_cache:
            await rc.initialize()
        for attempt in (1, 2):
            if self._receipt_tags is None:  # once, and again after the slot map changed
                self._receipt_tags = shard_tags(
                    layout.project,
                    lambda k: rc.get_node_from_key(k).name,
                    [n.name for n in rc.get_primaries()],
                )
                self._receipt_heads = {}
            heads = self._receipt_heads.get(id(layout))
            if heads is None:  # each node's receipt HMGET for this service, encoded once
                heads = self._receipt_heads[id(layout)] = {
                    node: layout.receipt_command_for(receipt_key(layout.project, tag))
                    for node, tag in self._receipt_tags.items()
                }
            groups: dict[str, tuple[Any, list[int]]] = {}
            for i, k in enumerate(keys):
                node = rc.get_node_from_key(k)
                groups.setdefault(node.name, (node, []))[1].append(i)

            async def one(node: Any, idx: list[int], head: bytes) -> tuple[list[str], list[Any]]:
                conn = node.acquire_connection()
                try:
                    await node.disconnect_if_needed(conn)
                    await conn.send_packed_command(head + layout.hmget_commands([keys[i] for i in idx]))
                    missing = layout.missing_receipts(await conn.read_response()) if head else []
                    return missing, [await conn.read_response() for _ in idx]
                except BaseException:
                    await conn.disconnect()
                    raise
                finally:
                    node.release(conn)

            try:
                replies = await asyncio.gather(
                    *(one(node, idx, heads[node.name]) for node, idx in groups.values())
                )
            except (ResponseError, KeyError) as e:  # a moved slot, or a node the tags do not know yet
                if attempt == 2 or (isinstance(e, ResponseError) and not str(e).startswith(("MOVED", "ASK"))):
                    raise
                await rc.nodes_manager.initialize()
                self._receipt_tags = None
                continue
            missing = sorted({v for m, _ in replies for v in m})
            if missing:
                raise OnlineStoreLost(lost_message(missing))
            out: list[list[bytes | None]] = [[] for _ in keys]
            for (_, idx), (_, rows) in zip(groups.values(), replies, strict=True):
                for i, row in zip(idx, rows, strict=True):
                    out[i] = row
            return out
        raise AssertionError("unreachable")

    def _layout(self, name: str) -> RedisLayout:
        layout = self._layouts.get(name)
        if layout is None:
            self._service(name)  # clear errors for a missing registry / service
            try:
                layout = RedisLayout(self.store, name)
            except UNAVAILABLE as e:
                raise OnlineStoreUnavailable(f"feature registry unreachable: {e}") from e
            self._layouts[name] = layout

            async def read(keys: list[bytes], layout: RedisLayout = layout) -> list[list[bytes | None]]:
                if self._cluster:
                    return await self._read_cluster(keys, layout)
                return (await self._read_single(keys, layout))[1]

            self._readers[name] = MicroBatcher(read)
        return layout

    async def _read_single(
        self, keys: list[bytes], layout: RedisLayout, along: bytes = b"", n_along: int = 0
    ) -> tuple[list[Any], list[list[bytes | None]]]:
        """One pipelined round trip with pre-encoded commands (what redis-py's pipeline does, minus
        re-encoding the same arguments for every key): `along` (packed commands owing `n_along` replies,
        returned first), the receipt, then one HMGET per key. The receipt comes first in the same round
        trip: features read from a store that lost its data are never returned as "not found"."""
        receipt = 1 if layout.receipt_command else 0
        replies = await pipelined(
            self._redis,
            along + layout.receipt_command + layout.hmget_commands(keys),
            n_along + receipt + len(keys),
        )
        if receipt:
            missing = layout.missing_receipts(replies[n_along])
            if missing:
                raise OnlineStoreLost(lost_message(missing))
        return replies[:n_along], replies[n_along + receipt :]

    async def aget_along(
        self, feature_service: str, ids: list[Any], along: bytes, n_along: int
    ) -> tuple[list[EntityFeatures], list[Any]]:
        """`aget` in the same round trip as other commands for the same Redis (the stream worker's session
        store writes): `along` is their RESP encoding, owing `n_along` replies, returned as read. On one
        Redis only (the caller checks `can_read_along`); no micro-batching with other callers."""
        layout = self._layouts.get(feature_service)
        if layout is None:
            layout = await run_in_threadpool(self._layout, feature_service)
        try:
            extra, raws = await self._read_single([layout.key(i) for i in ids], layout, along, n_along)
        except UNAVAILABLE as e:
            raise OnlineStoreUnavailable(f"online store unreachable: {type(e).__name__}: {e}") from e
        return [EntityFeatures(*layout.decode(raw)) for raw in raws], extra

    @property
    def can_read_along(self) -> bool:
        """True when `aget_along` works: the features live in one Redis (not a cluster)."""
        return self._redis is not None and not self._cluster

    async def aget(self, feature_service: str, join_key: str, ids: list[Any]) -> list[EntityFeatures]:
        if self._redis is None:
            return await run_in_threadpool(self.get, feature_service, join_key, ids)
        layout = self._layouts.get(feature_service)
        if layout is None:  # the first call: the registry is read synchronously, off the event loop
            layout = await run_in_threadpool(self._layout, feature_service)
        try:
            raws = await self._readers[feature_service].submit([layout.key(i) for i in ids])
        except UNAVAILABLE as e:
            raise OnlineStoreUnavailable(f"online store unreachable: {type(e).__name__}: {e}") from e
        return [EntityFeatures(*layout.decode(raw)) for raw in raws]

    def _service(self, name: str) -> FeatureService:
        svc = self._services.get(name)
        if svc is not None:
            return svc
        with self._lock:
            try:
                svc = self.store.get_feature_service(name, allow_cache=False)
            except UNAVAILABLE as e:
                raise OnlineStoreUnavailable(f"feature registry unreachable: {e}") from e
            except Exception as e:  # FeatureServiceNotFoundException, missing registry file
                raise OnlineStoreUnavailable(
                    f"feature service {name!r} not in the registry ({type(e).__name__}: {e}); run `feast apply`"
                ) from e
            self._views[name] = {f.name: p.name for p in svc.feature_view_projections for f in p.features}
            self._services[name] = svc
            return svc

    def get(self, feature_service: str, join_key: str, ids: list[Any]) -> list[EntityFeatures]:
        svc = self._service(feature_service)
        try:
            resp = self.store.get_online_features(features=svc, entity_rows=[{join_key: i} for i in ids])
            data = resp.to_dict(include_event_timestamps=True)
            # after the read: a store that lost its data before or during it has no receipt now
            lost = missing_views(self.store, sorted(set(self._views[feature_service].values())))
        except UNAVAILABLE as e:
            raise OnlineStoreUnavailable(f"online store unreachable: {type(e).__name__}: {e}") from e
        if lost:
            raise OnlineStoreLost(lost_message(lost))
        views = self._views[feature_service]
        out = []
        for i in range(len(ids)):
            values = {f: data[f][i] for f in views}
            ts: dict[str, datetime | None] = {}
            for f, view in views.items():
                raw = data.get(f + TS_SUFFIX, [0] * len(ids))[i]
                if raw:
                    t = datetime.fromtimestamp(raw, UTC)
                    ts[view] = max(ts.get(view) or t, t)
                else:
                    ts.setdefault(view, None)
            out.append(EntityFeatures(values=values, timestamps=ts))
        return out

    def get_as_of(
        self, feature_service: str, join_key: str, ids: list[Any], times: list[datetime]
    ) -> list[EntityFeatures]:
        """The service's features of each (id, time) as of that time, read by Feast's point-in-time join on
        the offline store (each view's latest row at or before the time, within its ttl; none: None values).
        Event times of the rows used are not returned by Feast: `timestamps` are None."""
        svc = self._service(feature_service)
        views = self._views[feature_service]
        entity_df = pd.DataFrame({join_key: ids, "event_timestamp": pd.to_datetime(times, utc=True)})
        try:
            got = self.store.get_historical_features(
                entity_df=entity_df.drop_duplicates(), features=svc
            ).to_df()
        except Exception as e:  # DuckDB / PostgreSQL / file errors: the request cannot be answered as asked
            log.exception("point-in-time read of %s failed", feature_service)
            raise OfflineStoreUnavailable(
                f"offline store cannot answer a point-in-time read of {feature_service!r}: "
                f"{type(e).__name__}: {e}"
            ) from e
        when = pd.to_datetime(got["event_timestamp"], utc=True).dt.as_unit("ns").astype("int64")
        found = {
            (k, t): {f: (None if pd.isna(r.get(f)) else r.get(f)) for f in views}
            for k, t, r in zip(got[join_key], when, got.to_dict("records"), strict=True)
        }
        return [
            EntityFeatures(
                values=dict(found.get((i, pd.Timestamp(t).as_unit("ns").value)) or dict.fromkeys(views)),
                timestamps=dict.fromkeys(views.values()),
            )
            for i, t in zip(ids, times, strict=True)
        ]

    async def aget_as_of(
        self, feature_service: str, join_key: str, ids: list[Any], times: list[datetime]
    ) -> list[EntityFeatures]:
        return await run_in_threadpool(self.get_as_of, feature_service, join_key, ids, times)

    async def aping(self, feature_service: str, join_key: str) -> None:
        """Raise OnlineStoreUnavailable unless a real read goes through (on Redis: the request path's read,
        receipt check included, so readiness fails with the reason while the store has lost its data). On a
        Redis Cluster one key on every primary node: each node's own receipt is checked."""
        if not self._cluster:
            await self.aget(feature_service, join_key, [0])
            return
        layout = self._layouts.get(feature_service)
        if layout is None:
            layout = await run_in_threadpool(self._layout, feature_service)
        rc = self._redis
        try:
            if not rc.nodes_manager.slots_cache:
                await rc.initialize()
            todo, keys = {n.name for n in rc.get_primaries()}, []
            for i in range(100_000):  # ids whose keys land on each node in turn
                k = layout.key(i)
                node = rc.get_node_from_key(k).name
                if node in todo:
                    todo.discard(node)
                    keys.append(k)
                    if not todo:
                        break
            await self._readers[feature_service].submit(keys)
        except UNAVAILABLE as e:
            raise OnlineStoreUnavailable(f"online store unreachable: {type(e).__name__}: {e}") from e
