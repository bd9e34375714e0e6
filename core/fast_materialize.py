"""Fast materialization into Feast's online store, byte-compatible with `FeatureStore.materialize`.

    stats = materialize_fast(store)                                    # every online view, all history
    stats = materialize_fast(store, ["user_activity"], start, end, overwrite=True)

Feast stays the source of truth: feature views, sources, project, online store and its layout come from
the store's registry and config; values are converted by Feast's own `python_values_to_proto_values`
(once per distinct value); keys follow Feast's `serialize_entity_key` (checked byte for byte at run
time); the registry records the interval (`apply_materialization`) as `store.materialize` does, so
`materialize_incremental` and the `feast` CLI keep working. Views this module does not handle are
passed to `store.materialize` for the same interval (see "Scope").

Where Feast's default materialize spends its time
-------------------------------------------------
cProfile of `store.materialize` on 1M users (997k profile rows, 17.4M activity rows; DuckDB offline
store, local compute engine, pandas backend). Redis: 303 s under the profiler (153 s without), 8.7 GB
peak RSS; SQLite: 385 s (272 s without), 8.3 GB:

* writing, 62% (Redis) / 71% (SQLite): Redis: redis-py packs and parses an HMGET and an HSET per entity
  (66 s), `_redis_key` -> `serialize_entity_key` per entity (26 s), `_mmh3` re-hashed for every
  feature of every entity (22 s, 13M calls), a Timestamp proto per entity. SQLite: one
  `conn.execute` of an upsert per feature per entity, 13M of them (173 s), in random key order into
  three B-trees, plus `extract_text_and_num` and the datetime adapter per row;
* converting Arrow rows to protos, 24-31% (`_convert_arrow_to_proto`, 90-95 s): a `ValueProto` per
  cell through `python_values_to_proto_values` (68-70 s) and an `EntityKeyProto` per row (12-13 s);
* reading, 3-5%: DuckDB returns *all* 18.4M rows in the window, pandas sorts and drop_duplicates them
  (8 s): the whole history sits in memory, hence the 8+ GB.

Feast's own options (measured with bench/materialize_bench.py; numbers in the report / docs):
`pull_latest_features` lets DuckDB keep the latest row per entity (less memory, a little less time);
`online_write_batch_size` only bounds the write batches; Redis `skip_dedup` drops the HMGET round;
the polars backend (not a project dependency) only replaces the pandas dedup. None touches the
per-cell protos and per-row Python round trips that take 85-95% of the time, so none comes near 10x.

What this module does instead
-----------------------------
* Read, Parquet `FileSource`: `pyarrow` batches per row group, the window [start, end] (inclusive, as
  Feast), the latest row per entity per batch (the sort is skipped when a vectorised check finds the
  batch already ordered). An entity is released as soon as no later row can belong to it: later row
  groups are bounded by their min-key statistics, later rows of the current row group by a suffix
  minimum of its key column. For a file sorted by entity (what ingest writes) memory is O(batch);
  unsorted input is still correct and degrades to O(entities), never O(rows).
* Read, `PostgreSQLSource`: `SELECT DISTINCT ON (keys) ... ORDER BY keys DESC, ts DESC, created DESC
  NULLS LAST` (a backward scan of the (id, ts) index that `publish_tables` creates) through a
  server-side cursor, rows typed as Feast's PostgreSQL retrieval job types them. Any other source:
  Feast's `pull_latest_from_table_or_query` (correct, not memory-bounded).
* Encode: each column is dictionary-encoded by Arrow; only distinct values go through Feast's
  converter, rows index the serialized bytes. INT64 keys are Feast's prefix + the little-endian value;
  Timestamp protos are built with numpy varints (both tested byte-identical to Feast / protobuf).
* Write, Redis: Feast's layout (key `_redis_key(project, key)`, fields `_mmh3("view:feature")` and
  `_ts:view`), RESP built from per-value fragments and written on one redis-py connection in chunks,
  replies parsed by hiredis, the next chunk encoded while Redis works. Feast's rule that a stored newer
  or equal `_ts:view` is kept is honoured (one pipelined HGET per entity) unless the store says
  `skip_dedup: true` or the caller `overwrite=True`; `key_ttl_seconds` -> EXPIRE. Redis Cluster: the same per node, rows split by
  their key's hash slot (`_RedisClusterWriter`). Any other online store gets Feast's own
  `online_write_batch` fed by the bounded reader.
* Write, SQLite: Feast's table and rows (`entity_key, feature_name, value, value_text, event_ts,
  created_ts`, Feast's upsert). Rows are staged compactly in a scratch SQLite file (one row per entity,
  feature values as codes into a pool of distinct values) and expanded by SQLite itself in one
  `INSERT ... SELECT ... ORDER BY entity_key`, so Feast's three B-trees are appended to in order
  instead of hit at random; the load runs in a thread (SQLite releases the GIL) while the next view is
  read. The load uses `synchronous=OFF` (a crash mid-load means re-materializing, which the receipt in
  `pipelines/materialize.py` does anyway).

Scope and semantics
-------------------
* Handled: plain `FeatureView`s with a batch source and at least one join key. Passed to Feast: stream
  and batch feature views (transformations, aggregations), on-demand views, sources with a field
  mapping, entity-less views, `offline=True` views, online feature view versioning.
* Latest = greatest event timestamp, then greatest created timestamp (null lowest). An exact tie keeps
  the row last in the source; Feast's pandas sort is unstable there, so Feast's choice is undefined.
* Feast reads naive source timestamps as UTC, and so does this module; SQLite stores
  `int(naive_utc.timestamp())` like Feast's sqlite3 adapter (local-time quirk included).
* TTL is not applied when materializing (Feast does not either); it applies when reading.
* Rows with a null join key are skipped (Feast fails on them).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import sqlite3
import struct
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView, FileSource
from feast.data_source import DataSource
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, compute_table_id, extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from core.online_receipt import begin_load, write_receipt

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WRITE_CHUNK = 20_000  # entities per encoded write chunk (bounds the encoded bytes held at once)


class _Unsupported(Exception):
    """This view (or store) is not handled here: hand it to `store.materialize`."""


# --------------------------------------------------------------------------------------------------
# public entry point


def materialize_fast(
    store: FeatureStore,
    feature_views: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    batch_rows: int = 500_000,
    *,
    overwrite: bool | None = None,
) -> dict[str, Any]:
    """Materialize the latest row per entity within [start, end] into the store's online store.

    Args:
        store: the Feast store (its registry must hold the definitions: `feast apply` first).
        feature_views: names to materialize; None = every online, enabled feature view (as Feast).
        start, end: inclusive event-time window; None = from the beginning / up to now (UTC).
        batch_rows: source rows read per batch (the memory knob).
        overwrite: Redis only. None = Feast's rule for the configured store (with `skip_dedup: false`,
            an entity whose stored timestamp is newer or equal is kept); True = always write.

    Returns:
        {"seconds", "rows_read", "entities_written", "online_store", "views": {name: {...}}}.
    """
    t0 = time.perf_counter()
    end = _aware(end) if end is not None else datetime.now(UTC)
    start = _aware(start) if start is not None else None
    if start is not None and start > end:
        raise ValueError(f"start {start} is after end {end}")
    views = store._get_feature_views_to_materialize(feature_views)
    # a load from the beginning vouches for the views it loaded with a receipt (core/online_receipt.py)
    token = begin_load(store) if start is None or start <= EPOCH else None
    out: dict[str, Any] = {"online_store": store.config.online_store.type, "views": {}}
    delegated: list[str] = []
    work = []
    for fv in views:  # every writer is set up (online store DDL) before any load runs
        try:
            plan = _plan(store, fv)
            work.append((fv, _reader(store, plan, start, end, batch_rows), _writer(store, plan, overwrite)))
        except _Unsupported as e:
            log.info("%s: %s; materializing it with Feast", fv.name, e)
            delegated.append(fv.name)
    loads: list[tuple[Any, _ViewStats, float, list[Future[None]]]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fast-materialize-load") as loader:
        for i, (fv, reader, writer) in enumerate(work):
            tv = time.perf_counter()
            stats = _ViewStats(reader=reader.name, writer=writer.name)
            try:
                for table in reader.batches(stats):
                    for chunk in table.to_batches(max_chunksize=WRITE_CHUNK):
                        writer.write(chunk, stats)
                jobs = writer.close(stats)
            except BaseException:
                for _, _, w in work[i:]:
                    w.abort()
                raise
            loads.append((fv, stats, tv, [loader.submit(job) for job in jobs]))
        for fv, stats, tv, futures in loads:  # in order; a failed load raises here
            for f in futures:
                f.result()
            store.registry.apply_materialization(fv, store.project, start or EPOCH, end)
            stats.seconds = round(time.perf_counter() - tv, 3)
            out["views"][fv.name] = stats.as_dict()
            log.info("%s: %s", fv.name, out["views"][fv.name])
    if delegated:
        td = time.perf_counter()
        cfg = store.config.online_store
        dedup = getattr(cfg, "skip_dedup", None)
        if overwrite and dedup is not None:  # Feast's Redis writer: no timestamp check, as the fast writer's
            cfg.skip_dedup = True
        try:
            store.materialize(start or EPOCH, end, feature_views=delegated)
        finally:
            if dedup is not None:
                cfg.skip_dedup = dedup
        for name in delegated:
            out["views"][name] = {"reader": "feast", "writer": "feast"}
        out["feast_seconds"] = round(time.perf_counter() - td, 3)
    # last: the receipt says the store holds these views (core/online_receipt.py); a load that failed
    # above raised before it, so a store reloaded from empty has none until every row is in
    write_receipt(store, token, {fv.name: out["views"][fv.name] for fv in views}, end)
    out["rows_read"] = sum(v.get("rows_read", 0) for v in out["views"].values())
    out["entities_written"] = sum(v.get("entities_written", 0) for v in out["views"].values())
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


@dataclass
class _ViewStats:
    rows_read: int = 0
    rows_in_window: int = 0
    entities: int = 0
    entities_written: int = 0
    entities_kept_newer: int = 0
    null_keys_skipped: int = 0
    seconds: float = 0.0
    reader: str = ""
    writer: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------------
# what to read


@dataclass
class _Plan:
    fv: FeatureView
    source: DataSource
    join_keys: list[str]
    key_types: list[ValueType]
    features: list[str]
    feature_types: list[ValueType]
    ts: str
    created: str | None
    key_version: int
    columns: list[str] = field(default_factory=list)


def batch_engine(store: FeatureStore) -> str:
    """The configured compute engine's type: "local" (this process) unless feature_store.yaml names one."""
    cfg = store.config.batch_engine_config
    return str(cfg.get("type", "local") if isinstance(cfg, dict) else cfg or "local")


def _plan(store: FeatureStore, fv: Any) -> _Plan:
    if batch_engine(store) != "local":  # a distributed engine does the whole job (core/feature_store.py)
        raise _Unsupported(f"the batch engine is {batch_engine(store)}")
    if type(fv) is not FeatureView:
        raise _Unsupported(f"{type(fv).__name__} is materialized by Feast")
    src = fv.batch_source
    if src is None:
        raise _Unsupported("no batch source")
    if src.field_mapping:
        raise _Unsupported("the source has a field mapping")
    if getattr(fv, "offline", False):
        raise _Unsupported("offline write-back is enabled")
    if getattr(fv, "aggregations", None) or getattr(fv, "feature_transformation", None):
        raise _Unsupported("aggregations/transformations")
    if store.config.registry.enable_online_feature_view_versioning:
        raise _Unsupported("online feature view versioning is enabled")
    join_keys = [c.name for c in fv.entity_columns]
    if not join_keys or "__dummy_id" in join_keys:
        raise _Unsupported("entity-less feature view")
    created = src.created_timestamp_column or None
    plan = _Plan(
        fv=fv,
        source=src,
        join_keys=join_keys,
        key_types=[c.dtype.to_value_type() for c in fv.entity_columns],
        features=[f.name for f in fv.features],
        feature_types=[f.dtype.to_value_type() for f in fv.features],
        ts=src.timestamp_field,
        created=created,
        key_version=store.config.entity_key_serialization_version,
    )
    plan.columns = list(dict.fromkeys([*join_keys, *plan.features, plan.ts, *([created] if created else [])]))
    return plan


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _ts_ns(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Event timestamps as int64 ns since the epoch, UTC (naive = UTC, as Feast); NaT -> min int."""
    if not pa.types.is_timestamp(col.type):
        raise _Unsupported(f"timestamp column of type {col.type}")
    ns = pc.cast(col, pa.timestamp("ns", tz=col.type.tz or "UTC"))
    arr = pc.cast(ns, pa.int64()).fill_null(np.iinfo(np.int64).min)
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def _dt_ns(ts: datetime) -> int:
    delta = _aware(ts) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


# --------------------------------------------------------------------------------------------------
# latest row per entity


def _latest(t: pa.Table, plan: _Plan) -> pa.Table:
    """One row per entity: greatest (ts, created), ties -> the last row of `t` (the sort is stable)."""
    n = t.num_rows
    if n <= 1:
        return t
    if not _is_sorted(t, plan):
        cols = [*plan.join_keys, plan.ts, *([plan.created] if plan.created else [])]
        t = t.take(pc.sort_indices(t, sort_keys=[(c, "ascending", "at_start") for c in cols]))
    last = np.zeros(n, dtype=bool)
    last[-1] = True
    for k in plan.join_keys:
        col = t.column(k)
        if pa.types.is_integer(col.type):
            a = col.to_numpy()
            last[:-1] |= a[1:] != a[:-1]
        else:
            ne = pc.not_equal(col.slice(1), col.slice(0, n - 1))
            last[:-1] |= np.asarray(ne.to_numpy(zero_copy_only=False), dtype=bool)
    return t.filter(pa.array(last))


def _is_sorted(t: pa.Table, plan: _Plan) -> bool:
    """Cheap check that `t` is already ordered by (key, ts[, created]) with one integer key."""
    if len(plan.join_keys) != 1:
        return False
    kc = t.column(plan.join_keys[0])
    if not pa.types.is_integer(kc.type) or kc.null_count:
        return False
    k = kc.to_numpy()
    dk = k[1:] - k[:-1] if k.dtype.kind == "i" else None
    if dk is None or (dk < 0).any():
        return False
    same = dk == 0
    if not same.any():
        return True
    ts = _ts_ns(t.column(plan.ts))
    dts = ts[1:] - ts[:-1]
    if (same & (dts < 0)).any():
        return False
    if plan.created:
        tie = same & (dts == 0)
        if tie.any():
            return False  # let the sort decide created-timestamp ties
    return True


def _concat(tables: list[pa.Table]) -> pa.Table:
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


class _ParquetReader:
    """Latest rows per entity from a Parquet FileSource, streamed by row group (see module doc)."""

    name = "parquet"

    def __init__(self, store: FeatureStore, plan: _Plan, start: datetime | None, end: datetime, batch: int):
        src = plan.fv.batch_source
        assert isinstance(src, FileSource)
        uri = FileSource.get_uri_for_file_path(repo_path=store.config.repo_path, uri=src.path)
        fs, path = FileSource.create_filesystem_and_path(uri, src.file_options.s3_endpoint_override)
        try:
            self.pf = pq.ParquetFile(fs.open_input_file(path) if fs else path)
        except (OSError, pa.ArrowInvalid) as e:  # a directory / partitioned dataset
            raise _Unsupported(f"{uri} is not a single Parquet file ({e})") from e
        schema = self.pf.schema_arrow
        missing = [c for c in plan.columns if c not in schema.names]
        if missing:
            raise _Unsupported(f"columns {missing} not in {uri}")
        if not pa.types.is_timestamp(schema.field(plan.ts).type):
            raise _Unsupported(f"{plan.ts} is {schema.field(plan.ts).type}, not a timestamp")
        self.plan, self.batch = plan, batch
        self.lo = _dt_ns(start) if start is not None else None
        self.hi = _dt_ns(end)
        self.bounds = self._suffix_min_keys()

    def _suffix_min_keys(self) -> list[Any]:
        """bounds[i]: every key in row groups after i is >= bounds[i] (None: unknown; +inf after last)."""
        md = self.pf.metadata
        idx = self.pf.schema_arrow.get_field_index(self.plan.join_keys[0])
        mins: list[Any] = []
        for i in range(md.num_row_groups):
            st = md.row_group(i).column(idx).statistics
            mins.append(st.min if st is not None and st.has_min_max else None)
        out: list[Any] = [None] * md.num_row_groups
        running: Any = _INF
        for i in range(md.num_row_groups - 1, -1, -1):
            out[i] = running
            m = mins[i]
            if running is None or m is None:
                running = None
            elif running is _INF or m < running:
                running = m
        return out

    def _window(self, t: pa.Table, stats: _ViewStats) -> pa.Table:
        ts = _ts_ns(t.column(self.plan.ts))
        keep = ts <= self.hi
        keep &= ts != np.iinfo(np.int64).min
        if self.lo is not None:
            keep &= ts >= self.lo
        for k in self.plan.join_keys:
            nulls = t.column(k).null_count
            if nulls:
                stats.null_keys_skipped += nulls
                keep &= np.asarray(t.column(k).is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        if keep.all():
            return t
        return t.filter(pa.array(keep))

    def _inner_bounds(self, rg: int) -> np.ndarray | None:
        """For an integer key: out[i] = min(key[i:]) within row group rg (what later batches can hold)."""
        key = self.plan.join_keys[0]
        if not pa.types.is_integer(self.pf.schema_arrow.field(key).type):
            return None
        col = self.pf.read_row_group(rg, columns=[key]).column(key)
        if col.null_count:
            return None
        k = col.to_numpy()
        return np.minimum.accumulate(k[::-1])[::-1]

    def batches(self, stats: _ViewStats) -> Iterator[pa.Table]:
        """Yield latest rows per entity, each entity once, as soon as no later row can change them."""
        pending: list[pa.Table] = []
        lows: list[Any] = []  # the smallest key of each pending table
        compacted = 0
        key = self.plan.join_keys[0]
        for rg in range(self.pf.metadata.num_row_groups):
            after = self.bounds[rg]  # every key in later row groups is >= after
            inner = self._inner_bounds(rg) if after is not None else None
            done = 0
            for b in self.pf.iter_batches(batch_size=self.batch, row_groups=[rg], columns=self.plan.columns):
                stats.rows_read += b.num_rows
                done += b.num_rows
                t = self._window(pa.Table.from_batches([b]), stats)
                stats.rows_in_window += t.num_rows
                if t.num_rows:
                    pending.append(_latest(t, self.plan))
                    lows.append(pc.min(pending[-1].column(key)).as_py())
                bound: Any = None  # unknown: keep everything pending
                if after is not None and done >= self.pf.metadata.row_group(rg).num_rows:
                    bound = after
                elif inner is not None:
                    nxt = int(inner[done])
                    bound = nxt if after is _INF else min(nxt, after)
                if pending and bound is not None and (bound is _INF or _lt(min(lows), bound)):
                    final, pending = self._release(pending, bound)
                    lows = [pc.min(p.column(key)).as_py() for p in pending]
                    compacted = sum(p.num_rows for p in pending)
                    if final is not None:
                        stats.entities += final.num_rows
                        yield final
                elif len(pending) > 1 and sum(p.num_rows for p in pending) > max(2 * compacted, self.batch):
                    pending = [_latest(_concat(pending), self.plan)]  # unsorted input: stay O(entities)
                    lows = [min(lows)]
                    compacted = pending[0].num_rows
        if pending:
            final = _latest(_concat(pending), self.plan)
            stats.entities += final.num_rows
            yield final

    def _release(self, pending: list[pa.Table], bound: Any) -> tuple[pa.Table | None, list[pa.Table]]:
        """Split the pending latest rows into final (key < bound) and still pending."""
        merged = _latest(_concat(pending), self.plan)
        if bound is _INF:
            return merged, []
        col = merged.column(self.plan.join_keys[0])
        try:
            is_final = pc.less(col, pa.scalar(bound, type=col.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None, [merged]
        final, rest = merged.filter(is_final), merged.filter(pc.invert(is_final))
        return (final if final.num_rows else None), ([rest] if rest.num_rows else [])


def _lt(a: Any, b: Any) -> bool:
    try:
        return bool(a < b)
    except TypeError:
        return False


class _Inf:
    def __repr__(self) -> str:
        return "+inf"


_INF: Any = _Inf()


class _PostgresReader:
    """`SELECT DISTINCT ON (keys)` through a server-side cursor; types as Feast's PostgreSQL job."""

    name = "postgres"

    def __init__(self, store: FeatureStore, plan: _Plan, start: datetime | None, end: datetime, batch: int):
        self.store, self.plan, self.start, self.end = store, plan, start, end
        self.batch = min(batch, 100_000)  # Python tuples are ~10x the Arrow size

    def batches(self, stats: _ViewStats) -> Iterator[pa.Table]:
        from feast.infra.utils.postgres.connection_utils import _get_conn
        from feast.type_map import pg_type_code_to_arrow

        p = self.plan
        q = '"{}"'.format
        order = (
            [f"{q(k)} DESC" for k in p.join_keys]  # descending: a backward scan of an (id, ts) index
            + [f"{q(p.ts)} DESC"]
            + ([f"{q(p.created)} DESC NULLS LAST"] if p.created else [])
        )
        where = [f"{q(p.ts)} <= %(end)s"] + ([f"{q(p.ts)} >= %(start)s"] if self.start else [])
        where += [f"{q(k)} IS NOT NULL" for k in p.join_keys]
        sql = (
            f"SELECT DISTINCT ON ({', '.join(q(k) for k in p.join_keys)}) {', '.join(q(c) for c in p.columns)} "
            f"FROM {p.source.get_table_query_string()} AS a "
            f"WHERE {' AND '.join(where)} ORDER BY {', '.join(order)}"
        )
        with _get_conn(self.store.config.offline_store) as conn:
            conn.read_only = True
            with conn.transaction(), conn.cursor(name="feast_materialize_fast") as cur:
                cur.itersize = self.batch
                cur.execute(sql, {"start": self.start, "end": self.end})
                schema = None
                while rows := cur.fetchmany(self.batch):
                    if schema is None:
                        assert cur.description is not None
                        schema = pa.schema(
                            [(c.name, pg_type_code_to_arrow(c.type_code)) for c in cur.description]
                        )
                    cols = list(zip(*rows, strict=True))
                    t = pa.Table.from_arrays(
                        [pa.array(c, type=f.type) for c, f in zip(cols, schema, strict=True)], schema=schema
                    )
                    stats.rows_read += t.num_rows
                    stats.rows_in_window += t.num_rows
                    stats.entities += t.num_rows
                    yield t


class _FeastOfflineReader:
    """Any other source: Feast's own pull_latest (whole result in memory), then sliced."""

    name = "feast-offline-store"

    def __init__(self, store: FeatureStore, plan: _Plan, start: datetime | None, end: datetime, batch: int):
        self.store, self.plan, self.start, self.end, self.batch = store, plan, start, end, batch

    def batches(self, stats: _ViewStats) -> Iterator[pa.Table]:
        p = self.plan
        provider = self.store._get_provider()
        job = provider.offline_store.pull_latest_from_table_or_query(
            config=self.store.config,
            data_source=p.source,
            join_key_columns=p.join_keys,
            feature_name_columns=p.features,
            timestamp_field=p.ts,
            created_timestamp_column=p.created,
            start_date=self.start or EPOCH,
            end_date=self.end,
        )
        t = job.to_arrow().select(p.columns)
        stats.rows_read += t.num_rows
        stats.rows_in_window += t.num_rows
        t = _latest(t, p)
        stats.entities += t.num_rows
        for off in range(0, t.num_rows, self.batch):
            yield t.slice(off, self.batch)


def _reader(store: FeatureStore, plan: _Plan, start: datetime | None, end: datetime, batch: int) -> Any:
    src = plan.fv.batch_source
    if isinstance(src, FileSource) and (
        src.file_format is None or type(src.file_format).__name__ == "ParquetFormat"
    ):
        return _ParquetReader(store, plan, start, end, batch)
    if type(src).__name__ == "PostgreSQLSource" and store.config.offline_store.type == "postgres":
        return _PostgresReader(store, plan, start, end, batch)
    return _FeastOfflineReader(store, plan, start, end, batch)


# --------------------------------------------------------------------------------------------------
# encoding: Feast's bytes, computed once per distinct value


@dataclass
class _Col:
    """One feature column of a chunk: row i holds pool[codes[i]] (serialized ValueProto)."""

    codes: np.ndarray
    pool: list[bytes]
    texts: list[str | None] | None  # SQLite value_text per pool entry

    def rows(self, pool: Sequence[Any] | None = None) -> list[Any]:
        arr = np.empty(len(self.pool), dtype=object)
        arr[:] = self.pool if pool is None else pool
        return arr[self.codes].tolist()


@dataclass
class _Encoded:
    n: int
    keys: list[bytes]  # serialize_entity_key(...) per row
    cols: list[_Col]  # per feature
    ts_us: np.ndarray  # event timestamp, microseconds (Feast goes through datetime)
    created_us: np.ndarray | None  # NULL_TS where null
    table: pa.RecordBatch


NULL_TS = np.iinfo(np.int64).min


def _encode(plan: _Plan, b: pa.RecordBatch, texts: bool, keys: bool = True) -> _Encoded:
    cols = [
        _encode_column(b.column(name), vtype, texts)
        for name, vtype in zip(plan.features, plan.feature_types, strict=True)
    ]
    ts = _ts_ns(b.column(plan.ts)) // 1000
    created = None
    if plan.created:
        c = _ts_ns(b.column(plan.created))
        created = np.where(c == NULL_TS, c, c // 1000)
    return _Encoded(b.num_rows, _entity_keys(plan, b) if keys else [], cols, ts, created, b)


def _encode_column(col: pa.Array, vtype: ValueType, with_text: bool) -> _Col:
    """Serialized ValueProtos as Feast's `_convert_arrow_fv_to_proto` makes them, per distinct value."""
    try:
        enc = pc.dictionary_encode(col)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        enc = None
    if enc is None:  # lists, maps...: Feast's conversion row by row
        protos = python_values_to_proto_values(col.to_numpy(zero_copy_only=False), vtype)
        codes = np.arange(len(protos))
    else:
        dictionary = enc.dictionary
        if col.null_count and pa.types.is_integer(dictionary.type):
            dictionary = dictionary.cast(
                pa.float64(), safe=False
            )  # what Feast sees: ints with nulls -> float64
        uniq = dictionary.to_numpy(zero_copy_only=False)
        protos = list(python_values_to_proto_values(uniq, vtype)) if len(uniq) else []
        codes = enc.indices.fill_null(len(protos)).to_numpy(zero_copy_only=False)
        protos.append(ValueProto())  # null
    pool = [p.SerializeToString() for p in protos]
    txt = [extract_text_and_num(p, False)[0] for p in protos] if with_text else None
    return _Col(codes, pool, txt)


_KEY_PREFIX_CACHE: dict[tuple[str, int], bytes | None] = {}


def int64_key_prefix(join_key: str, version: int) -> bytes | None:
    """Feast's serialized key for one INT64 join key is prefix + '<q' value: derive it, and verify."""
    cache_key = (join_key, version)
    if cache_key not in _KEY_PREFIX_CACHE:

        def feast_key(v: int) -> bytes:
            ek = EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=v)])
            return serialize_entity_key(ek, entity_key_serialization_version=version)

        prefix: bytes | None = feast_key(0)[:-8]
        samples = [0, 1, -1, 255, 10000001, 2**63 - 1, -(2**63), 123456789012345]
        if any(feast_key(v) != (prefix or b"") + struct.pack("<q", v) for v in samples):
            prefix = None
        _KEY_PREFIX_CACHE[cache_key] = prefix
    return _KEY_PREFIX_CACHE[cache_key]


def _entity_keys(plan: _Plan, b: pa.RecordBatch, before: bytes = b"", after: bytes = b"") -> list[bytes]:
    """before + serialize_entity_key(row's key) + after, per row.

    With a fixed-width key (one INT64 join key), `before` may hold the RESP length header: `fixed_width`
    says whether the fast path applies.
    """
    if _fixed_width(plan, b):
        prefix = before + (int64_key_prefix(plan.join_keys[0], plan.key_version) or b"")
        raw = np.asarray(b.column(plan.join_keys[0]).to_numpy(), dtype="<i8").tobytes()
        return [prefix + raw[i : i + 8] + after for i in range(0, len(raw), 8)]
    # any other key: Feast's own conversion and serializer, row by row
    per_key = [
        python_values_to_proto_values(b.column(k).to_numpy(zero_copy_only=False), t)
        for k, t in zip(plan.join_keys, plan.key_types, strict=True)
    ]
    return [
        before
        + serialize_entity_key(
            EntityKeyProto(join_keys=plan.join_keys, entity_values=list(vals)),
            entity_key_serialization_version=plan.key_version,
        )
        + after
        for vals in zip(*per_key, strict=True)
    ]


def _fixed_width(plan: _Plan, b: pa.RecordBatch) -> int | None:
    """The serialized key length when every key of `b` takes the INT64 fast path, else None."""
    if len(plan.join_keys) != 1 or plan.key_types[0] != ValueType.INT64:
        return None
    col = b.column(plan.join_keys[0])
    prefix = int64_key_prefix(plan.join_keys[0], plan.key_version)
    if prefix is None or not pa.types.is_integer(col.type) or col.null_count:
        return None
    return len(prefix) + 8


def _varints(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of uint64 values: (n, 10) bytes left-aligned, and their lengths."""
    v = v.astype(np.uint64)
    groups = np.stack([(v >> np.uint64(7 * i)) & np.uint64(0x7F) for i in range(10)], axis=1).astype(np.uint8)
    length = np.ones(len(v), dtype=np.int64)
    for i in range(1, 10):
        length += (v >> np.uint64(7 * i)) != 0
    cont = np.arange(10)[None, :] < (length[:, None] - 1)
    groups |= np.where(cont, 0x80, 0).astype(np.uint8)
    return groups, length


SMALL_BATCH = 128  # rows up to which protobuf's own serializer beats the vectorised encoding


def timestamp_protos(us: np.ndarray, frame: bytes | None = None) -> list[bytes]:
    """`Timestamp(seconds, nanos).SerializeToString()` per microsecond epoch value, vectorised.

    Feast builds the Timestamp from a Python datetime, so the value is floored to microseconds:
    seconds = us // 10**6, nanos = (us % 10**6) * 1000; zero fields are omitted, negative seconds are
    10-byte two's-complement varints. With `frame`, each item is `frame + RESP bulk string(proto)`.
    """
    us = np.asarray(us, dtype=np.int64)
    n = len(us)
    if n == 0:
        return []
    if n <= SMALL_BATCH:  # a stream push of a few rows: numpy's per-call overhead would be most of it
        out = [
            Timestamp(seconds=u // 1_000_000, nanos=(u % 1_000_000) * 1000).SerializeToString()
            for u in us.tolist()
        ]
        return out if frame is None else [frame + b"$%d\r\n" % len(p) + p + b"\r\n" for p in out]
    secs = us // 1_000_000
    nanos = (us % 1_000_000) * 1000
    sv, sl = _varints(secs.view(np.uint64))
    nv, nl = _varints(nanos.astype(np.uint64))
    m = np.zeros((n, 22), dtype=np.uint8)
    mask = np.zeros((n, 22), dtype=bool)
    has_s, has_n = secs != 0, nanos != 0
    m[:, 0], m[:, 1:11], m[:, 11], m[:, 12:22] = 0x08, sv, 0x10, nv
    cols = np.arange(10)[None, :]
    mask[:, 0] = has_s
    mask[:, 1:11] = (cols < sl[:, None]) & has_s[:, None]
    mask[:, 11] = has_n
    mask[:, 12:22] = (cols < nl[:, None]) & has_n[:, None]
    if frame is not None:  # frame + b"$<len>\r\n" before, b"\r\n" after, all in the same gather
        length = mask.sum(axis=1)
        heads = [frame + b"$%d\r\n" % i for i in range(23)]
        width = max(len(h) for h in heads)
        head_m = np.zeros((23, width), dtype=np.uint8)
        for i, h in enumerate(heads):
            head_m[i, : len(h)] = np.frombuffer(h, dtype=np.uint8)
        head_len = np.array([len(h) for h in heads])[length]
        crlf = np.tile(np.frombuffer(b"\r\n", dtype=np.uint8), (n, 1))
        m = np.hstack([head_m[length], m, crlf])
        mask = np.hstack([np.arange(width)[None, :] < head_len[:, None], mask, np.ones((n, 2), dtype=bool)])
    buf = m[mask].tobytes()
    ends = np.cumsum(mask.sum(axis=1)).tolist()
    return [buf[a:z] for a, z in zip([0, *ends[:-1]], ends, strict=True)]


def _sqlite_epoch_seconds(us: np.ndarray) -> list[int]:
    """What Feast's SQLite store keeps: int(naive_utc_datetime.timestamp()) (the sqlite3 adapter).

    A naive datetime's .timestamp() reads it as *local* time; with a UTC local zone that is
    floor(us / 1e6) (+1 for negative values with a fraction: int() truncates toward zero).
    """
    if time.timezone == 0 and not time.daylight:
        s = us // 1_000_000
        frac = (us % 1_000_000) != 0
        return np.where((s < 0) & frac, s + 1, s).tolist()
    uniq, inv = np.unique(us, return_inverse=True)
    naive = [(EPOCH + timedelta(microseconds=int(u))).replace(tzinfo=None) for u in uniq.tolist()]
    return np.array([int(d.timestamp()) for d in naive], dtype=np.int64)[inv].tolist()


# --------------------------------------------------------------------------------------------------
# writers


def _writer(store: FeatureStore, plan: _Plan, overwrite: bool | None) -> Any:
    cfg = store.config.online_store
    kind = type(cfg).__name__
    if kind == "RedisOnlineStoreConfig" and getattr(cfg, "redis_type", None) in ("redis", "redis_sentinel"):
        return _RedisWriter(store, plan, overwrite)
    if kind == "RedisOnlineStoreConfig" and getattr(cfg, "redis_type", None) == "redis_cluster":
        return _RedisClusterWriter(store, plan, overwrite)
    if (
        kind == "SqliteOnlineStoreConfig"
        and not getattr(cfg, "vector_enabled", False)
        and not getattr(cfg, "enable_openai_compatible_store", False)
    ):
        return _SqliteWriter(store, plan)
    return _FeastWriter(store, plan)


def _bulk(p: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(p), p)


def _double_cell(field: bytes) -> Callable[[float], bytes] | None:
    """field + RESP bulk of Feast's proto of a DOUBLE feature's Python float, by hand (tag 0x29 = field 5,
    64-bit), or None if that is not what Feast's converter gives on samples (then every value goes
    through Feast's converter)."""
    pack = struct.Struct("<d").pack

    def cell(v: float) -> bytes:
        return b"%s$9\r\n\x29%s\r\n" % (field, pack(v))

    for v in (0.0, 1.5, -2.25, 1e300, 5e-324, -0.0, float("inf")):
        if cell(v) != field + _bulk(
            python_values_to_proto_values([v], ValueType.DOUBLE)[0].SerializeToString()
        ):
            return None
    return cell


class RedisRows:
    """Feast's Redis layout for one feature view: the RESP commands `online_write_batch` amounts to.

    HSET key {mmh3(view:feature): ValueProto bytes, "_ts:view": Timestamp bytes} (+ EXPIRE with
    `key_ttl_seconds`), with Feast's rule that a stored `_ts:view` newer than or equal to the new one is
    kept (`newer`). Shared by the bulk writer below and the stream's push (core/online_fast.py).
    """

    def __init__(self, project: str, plan: _Plan, ttl: int | None) -> None:
        self.plan = plan
        self.project = project.encode()
        view = plan.fv.name
        self.ts_field = _bulk(f"_ts:{view}".encode())
        self.fields = [_bulk(_mmh3(f"{view}:{f}")) for f in plan.features]
        self.hset = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * (len(plan.features) + 1))
        self.ttl = ttl
        self._cells: dict[tuple[str, type, Any], bytes] = {}  # (feature, value) -> field + bulk(proto)
        self._doubles = [
            _double_cell(f) if t == ValueType.DOUBLE else None
            for f, t in zip(self.fields, plan.feature_types, strict=True)
        ]

    def keys(self, b: pa.RecordBatch) -> list[bytes]:
        """The Redis key of each row, as a RESP bulk string."""
        project = self.project
        width = _fixed_width(self.plan, b)
        if width is None:
            return [_bulk(k + project) for k in _entity_keys(self.plan, b)]
        # built in one pass with the length header and the trailer
        return _entity_keys(self.plan, b, b"$%d\r\n" % (width + len(project)), project + b"\r\n")

    def get_ts(self, keys: Sequence[bytes]) -> bytes:
        """HGET key _ts:view per key (one reply each): the stored event times `newer` compares with."""
        hget = b"*3\r\n$4\r\nHGET\r\n"
        return hget + (self.ts_field + hget).join(keys) + self.ts_field

    def values(self, keys: list[bytes], b: pa.RecordBatch) -> tuple[list[bytes], np.ndarray]:
        """The HSET arguments per row (key included), and the rows' event times in microseconds."""
        e = _encode(self.plan, b, texts=False, keys=False)
        ts = timestamp_protos(e.ts_us, frame=self.ts_field)
        cols = [c.rows([f + _bulk(v) for v in c.pool]) for f, c in zip(self.fields, e.cols, strict=True)]
        return list(map(b"".join, zip(keys, *cols, ts, strict=True))), e.ts_us

    def row_values(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[bytes], list[bytes], np.ndarray]:
        """`keys` and `values` for a few Python rows (the stream's push), without Arrow's per-column cost.

        Each (feature, value) goes through Feast's `python_values_to_proto_values` once and is cached, so
        the bytes are those of Feast's own conversion of that Python value.
        """
        p = self.plan
        if len(p.join_keys) == 1 and p.key_types[0] == ValueType.INT64:
            prefix = int64_key_prefix(p.join_keys[0], p.key_version)
        else:
            prefix = None
        keys = []
        for r in rows:
            k = r[p.join_keys[0]]
            if prefix is not None and type(k) is int:
                raw = prefix + struct.pack("<q", k)
            else:
                ek = EntityKeyProto(
                    join_keys=p.join_keys,
                    entity_values=[
                        python_values_to_proto_values([r[j]], t)[0]
                        for j, t in zip(p.join_keys, p.key_types, strict=True)
                    ],
                )
                raw = serialize_entity_key(ek, entity_key_serialization_version=p.key_version)
            keys.append(_bulk(raw + self.project))
        if len(self._cells) > 100_000:  # bound the cache on long runs of distinct values
            self._cells.clear()
        cells, doubles = self._cells, self._doubles
        cmds = []
        for key, r in zip(keys, rows, strict=True):
            parts = [key]
            for name, vtype, fld, double in zip(
                p.features, p.feature_types, self.fields, doubles, strict=True
            ):
                v = r[name]
                if double is not None and type(v) is float and v == v:  # continuous: encoded, not cached
                    parts.append(double(v))
                    continue
                ck = (name, type(v), v if v == v else "NaN")  # NaN != NaN: one key for all of them
                cell = cells.get(ck)
                if cell is None:  # Feast's converter, once per distinct value
                    cell = fld + _bulk(python_values_to_proto_values([v], vtype)[0].SerializeToString())
                    cells[ck] = cell
                parts.append(cell)
            cmds.append(b"".join(parts))
        ts_us = np.array([_dt_ns(r[p.ts]) // 1000 for r in rows], dtype=np.int64)
        ts = timestamp_protos(ts_us, frame=self.ts_field)
        return keys, [c + t for c, t in zip(cmds, ts, strict=True)], ts_us

    def set(self, cmds: Sequence[bytes], keys: Sequence[bytes]) -> tuple[bytes, int]:
        """The HSET (and EXPIRE) commands for `values`' rows, and how many replies they owe."""
        head = self.hset
        if not self.ttl:
            return head + head.join(cmds), len(cmds)
        expire = b"*3\r\n$6\r\nEXPIRE\r\n"
        ttl = _bulk(str(int(self.ttl)).encode())
        return b"".join(head + c + expire + k + ttl for c, k in zip(cmds, keys, strict=True)), 2 * len(cmds)

    @staticmethod
    def newer(stored: Sequence[bytes | None], ts_us: np.ndarray) -> list[int]:
        """Rows to write under Feast's rule (skip_dedup: false): those newer than their stored _ts:view."""
        if not any(stored):
            return list(range(len(stored)))
        keep = []
        new_ns = (ts_us * 1000).tolist()
        for i, p in enumerate(stored):
            if p:
                t = Timestamp.FromString(p)
                prev_ns = t.seconds * 1_000_000_000 + t.nanos
                if prev_ns and new_ns[i] <= prev_ns:
                    continue
            keep.append(i)
        return keep


def redis_rows(store: FeatureStore, fv: FeatureView) -> RedisRows:
    """The `RedisRows` of a view in this store (ValueError when this module leaves the view to Feast)."""
    try:
        plan = _plan(store, fv)
    except _Unsupported as e:
        raise ValueError(f"{fv.name}: {e}") from e
    return RedisRows(store.project, plan, store.config.online_store.key_ttl_seconds)


class _RedisWriter:
    """Writes `RedisRows` commands on one redis-py connection in chunks, the next encoded while Redis works."""

    name = "redis"

    def __init__(self, store: FeatureStore, plan: _Plan, overwrite: bool | None, client: Any = None):
        """`client`: a redis-py client of one node (a cluster's, from `_RedisClusterWriter`); default
        Feast's own."""
        cfg = store.config.online_store
        online: Any = store._get_provider().online_store
        self.client = client if client is not None else online._get_client(cfg)
        self.rows = RedisRows(store.project, plan, cfg.key_ttl_seconds)
        self.dedup = not (overwrite if overwrite is not None else cfg.skip_dedup)
        self.conn = self.client.connection_pool.get_connection()
        self.conn.connect()
        self.reader: Any = None
        try:  # replies are read with hiredis straight from the socket when both are there
            import hiredis

            if getattr(self.conn, "_sock", None) is not None:
                self.reader = hiredis.Reader()
        except ImportError:
            pass
        self.in_flight: list[int] = []  # replies owed, per chunk sent

    def _read(self, n: int) -> list[Any]:
        """The next n replies. Raw: hiredis over the socket redis-py connected (one C call per reply)."""
        if self.reader is None:
            rr = self.conn.read_response
            return [rr() for _ in range(n)]
        out: list[Any] = []
        gets, feed, recv = self.reader.gets, self.reader.feed, self.conn._sock.recv
        while len(out) < n:
            r = gets()
            if r is False:
                data = recv(1 << 20)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                feed(data)
            else:
                out.append(r)
        errors = [r for r in out if isinstance(r, Exception)]
        if errors:
            raise errors[0]
        return out

    def _drain(self, keep: int) -> None:
        while len(self.in_flight) > keep:
            self._read(self.in_flight.pop(0))

    def _send(self, buf: bytes, replies: int) -> None:
        self.conn.send_packed_command([buf], check_health=False)
        self.in_flight.append(replies)

    def write(self, b: pa.RecordBatch, stats: _ViewStats) -> None:
        if not b.num_rows:
            return
        rows = self.rows
        keys = rows.keys(b)
        if self.dedup:  # ask for the stored timestamps first: Redis answers while we encode
            self._send(rows.get_ts(keys), len(keys))
        cmds, ts_us = rows.values(keys, b)
        if self.dedup:
            # the HGETs (the last group in flight) queued behind the previous chunk's HSETs
            n = self.in_flight.pop()
            self._drain(keep=0)
            keep = rows.newer(self._read(n), ts_us)
            stats.entities_kept_newer += len(cmds) - len(keep)
            if len(keep) < len(cmds):
                cmds, keys = [cmds[i] for i in keep], [keys[i] for i in keep]
        if cmds:
            self._send(*rows.set(cmds, keys))
            stats.entities_written += len(cmds)
        self._drain(keep=1)  # Redis works on this chunk while the next one is read and encoded

    def close(self, stats: _ViewStats) -> list[Callable[[], None]]:
        try:
            self._drain(keep=0)
        except BaseException:
            self.abort()
            raise
        self.client.connection_pool.release(self.conn)
        return []

    def abort(self) -> None:
        """Unread replies may be pending: drop the connection rather than return it to the pool."""
        self.conn.disconnect()
        self.client.connection_pool.release(self.conn)


class _RedisClusterWriter:
    """`_RedisWriter` per node of a Redis Cluster: each batch's rows are split by the node that owns their
    key's hash slot (the slot map of Feast's own RedisCluster client) and each node's share goes down that
    node's connection, with the same pipelining and the same rule on stored newer rows. A slot that moves
    during the load makes the node answer MOVED: the load fails loudly (rerun it) rather than writing
    elsewhere. redis-py's cluster pipeline would route the same commands, re-encoding each one: the
    single-node writer's pre-encoded RESP is what makes it fast (docs/benchmarks.md)."""

    name = "redis_cluster"

    def __init__(self, store: FeatureStore, plan: _Plan, overwrite: bool | None):
        self.store, self.plan, self.overwrite = store, plan, overwrite
        online: Any = store._get_provider().online_store
        self.cluster = online._get_client(store.config.online_store)  # redis.cluster.RedisCluster
        self.rows = RedisRows(store.project, plan, store.config.online_store.key_ttl_seconds)
        self.writers: dict[str, _RedisWriter] = {}

    def _writer(self, node: Any) -> _RedisWriter:
        w = self.writers.get(node.name)
        if w is None:
            client = self.cluster.get_redis_connection(node)
            w = self.writers[node.name] = _RedisWriter(self.store, self.plan, self.overwrite, client)
        return w

    def write(self, b: pa.RecordBatch, stats: _ViewStats) -> None:
        if not b.num_rows:
            return
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for i, k in enumerate(self.rows.keys(b)):
            raw = k[k.index(b"\r\n") + 2 : -2]  # the key inside its RESP bulk string
            node = self.cluster.get_node_from_key(raw)
            by_node.setdefault(node.name, (node, []))[1].append(i)
        for node, rows in by_node.values():
            self._writer(node).write(b.take(pa.array(rows)), stats)

    def close(self, stats: _ViewStats) -> list[Callable[[], None]]:
        for i, w in enumerate(list(self.writers.values())):
            try:
                w.close(stats)
            except BaseException:
                for rest in list(self.writers.values())[i + 1 :]:
                    rest.abort()
                raise
        return []

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()


class _SqliteWriter:
    """Feast's SQLite rows (one per entity and feature, Feast's upsert), loaded in key order.

    Random-order inserts into the three B-trees of Feast's table (rows, primary key, entity-key index)
    are what makes Feast's SQLite materialization slow. Here each chunk is staged in a scratch SQLite
    file, one narrow row per entity (key, timestamps, integer codes of the feature values; the distinct
    serialized values and their value_text in a pool table), and one `INSERT ... SELECT ... ORDER BY
    entity_key ... ON CONFLICT DO UPDATE` (Feast's upsert) expands them inside SQLite, so the B-trees
    are appended to in order. That load is returned as a job: `materialize_fast` runs the jobs one at a
    time in a thread (SQLite releases the GIL) while the next view is read and encoded. Staging is on
    disk, not in memory; a segment is handed over early if its pool passes POOL_LIMIT distinct values.
    """

    name = "sqlite"
    POOL_LIMIT = 1_000_000  # distinct values per segment: codes stay below 2**CODE_BITS
    CODE_BITS, PER_SLOT = 21, 3

    def __init__(self, store: FeatureStore, plan: _Plan):
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        config = store.config
        online = store._get_provider().online_store
        # Feast's own DDL (what `feast apply` ran), idempotent: the table exists before we write
        online.update(config, [], [plan.fv], [], [], partial=True)
        self.path = SqliteOnlineStore._get_db_path(config)
        table = compute_table_id(store.project, plan.fv, False).replace('"', '""')
        self.plan = plan
        n = len(plan.features)
        self.slots = -(-n // self.PER_SLOT)  # feature codes packed PER_SLOT to an integer column
        self.stage_sql = f"INSERT INTO stage VALUES ({', '.join('?' * (self.slots + 3))})"
        mask, bits = (1 << self.CODE_BITS) - 1, self.CODE_BITS
        pick = " ".join(
            f"WHEN {j} THEN ((s.c{j // self.PER_SLOT} >> {bits * (j % self.PER_SLOT)}) & {mask})"
            for j in range(n)
        )
        cols = ["entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts"]
        self.final_sql = (
            f'INSERT INTO main."{table}" ({", ".join(cols)}) '
            "SELECT s.k, f.name, p.v, p.tx, s.ts, s.cr FROM fm.stage AS s CROSS JOIN fm.names AS f "
            f"JOIN fm.pool AS p ON p.code = (CASE f.i {pick} END) WHERE true ORDER BY s.k "
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in cols[2:])
        )
        self.jobs: list[Callable[[], None]] = []
        self._new_segment()

    def _new_segment(self) -> None:
        fd, self.stage_path = tempfile.mkstemp(prefix="fast_materialize_", suffix=".db")
        os.close(fd)
        self.conn = sqlite3.connect(self.stage_path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-32768"):
            self.conn.execute(f"PRAGMA {pragma}")
        codes = ", ".join(f"c{j} INTEGER" for j in range(self.slots))
        self.conn.execute(f"CREATE TABLE stage (k BLOB NOT NULL, ts INTEGER, cr INTEGER, {codes})")
        self.conn.execute("CREATE TABLE pool (code INTEGER PRIMARY KEY, v BLOB, tx TEXT)")
        self.conn.execute("CREATE TABLE names (i INTEGER PRIMARY KEY, name TEXT)")
        self.conn.executemany("INSERT INTO names VALUES (?, ?)", list(enumerate(self.plan.features)))
        self.codes: dict[bytes, int] = {}

    def write(self, b: pa.RecordBatch, stats: _ViewStats) -> None:
        # a chunk adds at most rows * features codes: keep every code below 2**CODE_BITS
        most = max(1, (2**self.CODE_BITS - self.POOL_LIMIT - 1) // max(1, len(self.plan.features)))
        for off in range(0, b.num_rows, most):
            self._write(b.slice(off, most), stats)

    def _write(self, b: pa.RecordBatch, stats: _ViewStats) -> None:
        if not b.num_rows:
            return
        e = _encode(self.plan, b, texts=True)
        ts = _sqlite_epoch_seconds(e.ts_us)
        created: Any = itertools.repeat(None)
        if e.created_us is not None:
            valid = e.created_us != NULL_TS
            conv = _sqlite_epoch_seconds(np.where(valid, e.created_us, 0))
            created = [v if ok else None for v, ok in zip(conv, valid.tolist(), strict=True)]
        self.conn.execute("BEGIN")
        codes = [self._global_codes(c) for c in e.cols]
        packed = [
            functools.reduce(
                np.bitwise_or,
                [c << (self.CODE_BITS * i) for i, c in enumerate(codes[slot : slot + self.PER_SLOT])],
            ).tolist()
            for slot in range(0, len(codes), self.PER_SLOT)
        ]
        self.conn.executemany(self.stage_sql, zip(e.keys, ts, created, *packed, strict=False))
        self.conn.execute("COMMIT")
        stats.entities_written += e.n
        if len(self.codes) > self.POOL_LIMIT:
            self._hand_over()
            self._new_segment()

    def _global_codes(self, col: _Col) -> np.ndarray:
        """This chunk's codes in the segment's pool (same bytes -> same value_text: both from the proto)."""
        assert col.texts is not None
        known = self.codes
        local = np.empty(len(col.pool), dtype=np.int64)
        new = []
        for i, v in enumerate(col.pool):
            code = known.get(v)
            if code is None:
                code = known[v] = len(known)
                new.append((code, v, col.texts[i]))
            local[i] = code
        if new:
            self.conn.executemany("INSERT INTO pool VALUES (?, ?, ?)", new)
        return local[col.codes]

    def _hand_over(self) -> None:
        self.conn.close()
        self.jobs.append(functools.partial(_sqlite_load, self.path, self.stage_path, self.final_sql))

    def close(self, stats: _ViewStats) -> list[Callable[[], None]]:
        """The loads still to run (in order), for `materialize_fast`'s loader thread."""
        self._hand_over()
        jobs, self.jobs = self.jobs, []
        return jobs

    def abort(self) -> None:
        self.conn.close()
        with contextlib.suppress(OSError):
            os.unlink(self.stage_path)


def _sqlite_load(db_path: str, stage_path: str, final_sql: str) -> None:
    """Expand one staged segment into Feast's table, in entity-key order, in one transaction."""
    t0 = time.perf_counter()
    conn = sqlite3.connect(db_path, timeout=600, isolation_level=None, check_same_thread=False)
    try:
        for pragma in ("synchronous=OFF", "cache_size=-131072"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("ATTACH DATABASE ? AS fm", (stage_path,))
        # read the staged rows in key order from a covering index (not by rowid from the table)
        cols = [r[1] for r in conn.execute("PRAGMA fm.table_info(stage)")]
        conn.execute(f"CREATE INDEX fm.stage_k ON stage ({', '.join(cols)})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(final_sql)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("DETACH DATABASE fm")
        log.debug("loaded %s into %s in %.1f s", stage_path, db_path, time.perf_counter() - t0)
    finally:
        conn.close()
        with contextlib.suppress(OSError):
            os.unlink(stage_path)


class _FeastWriter:
    """Any other online store: Feast's `_convert_arrow_to_proto` + `online_write_batch` per chunk."""

    name = "feast-online-write-batch"

    def __init__(self, store: FeatureStore, plan: _Plan):
        self.store, self.plan = store, plan
        self.online = store._get_provider().online_store
        self.join_keys = {c.name: c.dtype.to_value_type() for c in plan.fv.entity_columns}

    def write(self, b: pa.RecordBatch, stats: _ViewStats) -> None:
        from feast.utils import _convert_arrow_to_proto

        if not b.num_rows:
            return
        rows = _convert_arrow_to_proto(b, self.plan.fv, self.join_keys)
        self.online.online_write_batch(self.store.config, self.plan.fv, rows, progress=None)
        stats.entities_written += b.num_rows

    def close(self, stats: _ViewStats) -> list[Callable[[], None]]:
        return []

    def abort(self) -> None:
        pass
