"""Read a FeatureService's online features from Redis in Feast's own layout, without Feast's per-call work;
and push rows to it (`RedisPush`, the stream worker's write path, at the end of this module).

Why by hand (measured, see docs/benchmarks.md): `FeatureStore.get_online_features` spends most of its
~0.2-0.6 ms per call re-resolving the feature service against the registry, building request protos,
and assembling an OnlineResponse. None of that changes between calls. Here it is done once:

* the Redis hash fields (`mmh3("<view>:<feature>")` and `_ts:<view>`) are computed at construction,
* the entity key is Feast's `_redis_key(project, serialize_entity_key(...))`,
* values are decoded like Feast's `feast_value_type_to_python_type`: scalars read straight from the
  proto, anything else through Feast's function,
* int64 entity keys are Feast's bytes built from a precomputed prefix, checked against Feast's own
  serialization at construction (any mismatch and Feast's function is used instead),
* the `HMGET` commands are sent pre-encoded (RESP) on one pipelined connection.

All entities of a call are one `HMGET` each in one pipeline round trip. Feast stays the source of truth:
what is read is exactly what `feast materialize` (or `core.fast_materialize`) wrote, and
tests/integration/test_online_fast.py proves the values and timestamps equal `get_online_features`.
Only the Redis online store has a fast path; other stores go through Feast (serving/online.py).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from feast import FeatureStore
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp

from core.fast_materialize import RedisRows, int64_key_prefix, redis_rows
from core.online_receipt import receipt_key, receipted_views


@dataclass(frozen=True)
class ViewFields:
    view: str
    features: list[str]
    field_keys: list[bytes]
    ts_key: bytes


def resp(*args: bytes) -> bytes:
    """One Redis command in RESP, ready to pipeline on a raw connection (`send_packed_command`)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


async def pipelined(client: Any, packed: bytes, n_replies: int) -> list[Any]:
    """Send pre-encoded commands (`resp`) on one pooled connection of a redis.asyncio client and read their
    `n_replies` replies: redis-py's pipeline without re-encoding. A connection that failed mid-way is
    dropped, not returned to the pool with replies unread."""
    pool = client.connection_pool
    conn = await pool.get_connection()
    try:
        await conn.send_packed_command(packed)
        return [await conn.read_response() for _ in range(n_replies)]
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


class RedisLayout:
    """Keys and decoding for one FeatureService, computed once from the registry."""

    def __init__(self, store: FeatureStore, feature_service: str) -> None:
        if store.config.online_store.type != "redis":
            raise ValueError(
                f"fast path is for the redis online store, not {store.config.online_store.type!r}"
            )
        svc = store.get_feature_service(feature_service)
        self.project = store.config.project
        self.key_version = store.config.entity_key_serialization_version
        self.views: list[ViewFields] = []
        join_keys: set[str] = set()
        for proj in svc.feature_view_projections:
            fv = store.get_feature_view(proj.name)
            join_keys.update(c.name for c in fv.entity_columns)
            names = [f.name for f in proj.features]
            self.views.append(
                ViewFields(
                    view=proj.name,
                    features=names,
                    field_keys=[_mmh3(f"{proj.name}:{n}") for n in names],
                    ts_key=f"_ts:{proj.name}".encode(),
                )
            )
        # the materialization receipt of the views materialization fills (core/online_receipt.py),
        # asked for in the same round trip as the features: "HMGET featureplat:receipt:<project> views..."
        self.receipt_views = receipted_views(store, [v.view for v in self.views])
        self.receipt_command = self.receipt_command_for(receipt_key(self.project))
        if len(join_keys) != 1:
            raise ValueError(f"fast path supports one join key; {feature_service} has {sorted(join_keys)}")
        self.join_key = join_keys.pop()
        self.fields: list[bytes] = [k for v in self.views for k in (*v.field_keys, v.ts_key)]
        self.feature_names = [n for v in self.views for n in v.features]
        # RESP encoding of "HMGET <key> <fields...>" = head + key + tail; only the key varies.
        self._resp_head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(self.fields) + 2)
        self._resp_tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in self.fields)
        # Feast's serialized INT64 key is a fixed prefix + the value (derived and checked against Feast
        # in core.fast_materialize); the Redis key appends the project
        self._int_prefix = int64_key_prefix(self.join_key, self.key_version) or b""
        self._project = self.project.encode()
        self._fast_int_keys = bool(self._int_prefix) and all(
            self._fast_int_key(i) == self._feast_key(i) for i in (0, 1, -1, 10_000_001, 2**62)
        )

    def _feast_key(self, entity_id: Any) -> bytes:
        value = (
            ValueProto(int64_val=entity_id)
            if isinstance(entity_id, int)
            else ValueProto(string_val=str(entity_id))
        )
        ek = EntityKeyProto(join_keys=[self.join_key], entity_values=[value])
        return _redis_key(self.project, ek, entity_key_serialization_version=self.key_version)

    def _fast_int_key(self, entity_id: int) -> bytes:
        return self._int_prefix + struct.pack("<q", entity_id) + self._project

    def key(self, entity_id: Any) -> bytes:
        if self._fast_int_keys and type(entity_id) is int:
            return self._fast_int_key(entity_id)
        return self._feast_key(entity_id)

    def hmget_commands(self, keys: Sequence[bytes]) -> bytes:
        """Pre-encoded RESP for one HMGET per key (all fields of the service), ready to pipeline."""
        head, tail = self._resp_head, self._resp_tail
        return b"".join(b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, tail) for k in keys)

    def receipt_command_for(self, key: bytes) -> bytes:
        """RESP for HMGET <receipt key> <the service's receipted views> (b"" when none is receipted); on a
        cluster each node's own receipt key (`core.online_receipt.shard_tags`)."""
        if not self.receipt_views:
            return b""
        return resp(b"HMGET", key, *(v.encode() for v in self.receipt_views))

    def missing_receipts(self, reply: Sequence[bytes | None]) -> list[str]:
        """The views without a receipt, from the reply to `receipt_command`."""
        return [v for v, r in zip(self.receipt_views, reply, strict=True) if r is None]

    def decode(self, raw: Sequence[bytes | None]) -> tuple[dict[str, Any], dict[str, datetime | None]]:
        """One HMGET reply (in `self.fields` order) -> (feature values, event time per view)."""
        values: dict[str, Any] = {}
        stamps: dict[str, datetime | None] = {}
        i = 0
        for v in self.views:
            for name in v.features:
                b = raw[i]
                i += 1
                values[name] = None if b is None else _python_value(ValueProto.FromString(b))
            ts = raw[i]
            i += 1
            stamps[v.view] = (
                None if ts is None else datetime.fromtimestamp(Timestamp.FromString(ts).seconds, UTC)
            )
        return values, stamps


_SCALARS = frozenset(
    {"int64_val", "int32_val", "string_val", "double_val", "float_val", "bool_val", "bytes_val"}
)


def _python_value(v: ValueProto) -> Any:
    """Feast's feast_value_type_to_python_type, with the scalar cases inlined (identical results)."""
    kind = v.WhichOneof("val")
    if kind in _SCALARS:
        return getattr(v, kind)
    return feast_value_type_to_python_type(v)


class RedisPush:
    """`store.push(push_source, df, to=PushMode.ONLINE)` for the Redis online store, on an asyncio client.

    Why (measured by `python -m bench.run --only stream`, docs/benchmarks.md): Feast's push converts the
    DataFrame through Arrow to a proto per cell, a Timestamp and a key serialization per row, and has
    redis-py pack an HMGET and an HSET per entity, synchronously: 50-66 ms for one batch's 45 rows. Here
    each feature view fed by the push source is written with `core.fast_materialize.RedisRows`, the bytes
    `feast materialize` writes (values through Feast's own converter, once per distinct value; floats
    encoded directly, checked against that converter), in two pipelined round trips: the stored
    `_ts:view` of every key, then HSET (+ EXPIRE) of the rows that are newer, which is Feast's rule
    (`skip_dedup` false): 3-4 ms for the same rows. Rows of one key in one push: the one with the greatest
    timestamp wins, the first of equals, as in Feast. Rows are Python dicts: a stream batch is a few dozen
    rows, where Arrow's and pandas' per-column costs would dominate. Feast stays the source of truth: the
    views, fields, project and TTL come from its registry and config.
    tests/integration/test_online_fast.py checks the stored hash equals what `store.push` writes.
    """

    def __init__(self, store: FeatureStore, push_source: str) -> None:
        cfg = store.config.online_store
        if cfg.type != "redis":
            raise ValueError(f"RedisPush is for the redis online store, not {cfg.type!r}")
        views = [
            fv
            for fv in store.list_feature_views()
            if fv.stream_source is not None and fv.stream_source.name == push_source
        ]
        if not views:
            raise ValueError(f"no feature view in the registry reads the push source {push_source!r}")
        self.push_source = push_source
        self.views: list[RedisRows] = [redis_rows(store, fv) for fv in views]
        self.dedup = not cfg.skip_dedup

    async def push(self, client: Any, rows: Sequence[Mapping[str, Any]]) -> int:
        """Write the rows (dicts with the join key, the source's timestamp field and the features) to every
        view of the push source; the number of (view, entity) rows written."""
        if not rows:
            return 0
        plans = []
        for view in self.views:
            missing = [c for c in view.plan.columns if c not in rows[0]]
            if missing:
                raise ValueError(
                    f"push to {self.push_source!r}: columns {missing} of view {view.plan.fv.name!r} missing"
                )
            keys, cmds, ts_us = view.row_values(rows)
            latest: dict[bytes, int] = {}
            for i, (k, t) in enumerate(zip(keys, ts_us.tolist(), strict=True)):
                if k not in latest or t > ts_us[latest[k]]:
                    latest[k] = i
            pick = sorted(latest.values())
            plans.append((view, [keys[i] for i in pick], [cmds[i] for i in pick], ts_us[pick]))
        pool = client.connection_pool
        conn = await pool.get_connection()
        try:
            if self.dedup:
                await conn.send_packed_command(b"".join(r.get_ts(k) for r, k, _, _ in plans))
                for j, (view, keys, cmds, ts) in enumerate(plans):
                    stored = [await conn.read_response() for _ in keys]
                    keep = RedisRows.newer(stored, ts)
                    plans[j] = (view, [keys[i] for i in keep], [cmds[i] for i in keep], ts)
            sets = [r.set(c, k) for r, k, c, _ in plans if c]
            if sets:
                await conn.send_packed_command(b"".join(buf for buf, _ in sets))
                for _ in range(sum(n for _, n in sets)):
                    await conn.read_response()
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            await pool.release(conn)
        return sum(len(c) for _, _, c, _ in plans)
