"""core.fast_materialize writes what Feast's own `store.materialize` writes (SQLite online store).

A tiny feature repo is built in tmp: int64 and string entities; several rows per entity, rows outside
the window, nulls in every type, event-time ties broken by a created timestamp, a file sorted by entity
with many small row groups (entities span row groups) and the same rows shuffled. One store is filled by
Feast, the other by `materialize_fast`; their online reads (values and event timestamps) must be equal.
The byte-level helpers are checked against Feast's and protobuf's own functions.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.types import Bool, Float32, Float64, Int32, Int64, String
from google.protobuf.timestamp_pb2 import Timestamp

from core import fast_materialize as fm

T0 = datetime(2026, 9, 1, tzinfo=UTC)
FEATURES = [
    Field(name="f_str", dtype=String),
    Field(name="f_int", dtype=Int64),
    Field(name="f_float", dtype=Float64),
    Field(name="f_f32", dtype=Float32),
    Field(name="f_i32", dtype=Int32),
    Field(name="f_bool", dtype=Bool),
]


# --------------------------------------------------------------------------------------------------
# a tiny feature repo


def feature_rows(
    n_entities: int, seed: int = 0, key: str = "driver_id", str_keys: bool = False
) -> pd.DataFrame:
    """1-6 rows per entity over 10 days, nulls everywhere, some event-time ties (created decides)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 7, n_entities)
    ids = np.repeat(np.arange(1, n_entities + 1) * 7 + 1000, counts)
    n = len(ids)
    ts = T0 + pd.to_timedelta(rng.integers(0, 10 * 86400, n), unit="s")
    ts = pd.Series(ts).dt.floor("s") + pd.to_timedelta(rng.integers(0, 1_000_000, n), unit="us")
    tie = rng.random(n) < 0.15  # same event time as the previous row of the entity
    ts_arr = ts.to_numpy().copy()
    same = np.r_[False, ids[1:] == ids[:-1]] & tie
    ts_arr[same] = ts_arr[np.flatnonzero(same) - 1]
    df = pd.DataFrame(
        {
            key: [f"shop-{i}" for i in ids] if str_keys else ids.astype("int64"),
            "event_timestamp": pd.to_datetime(ts_arr, utc=True).as_unit("us"),
            "created": (T0 + pd.to_timedelta(rng.permutation(n), unit="s")).as_unit("us"),
            "f_str": pd.array(rng.choice(["a", "b", "ü", ""], n), dtype=object),
            "f_int": pd.array(rng.integers(-(2**40), 2**40, n), dtype="Int64"),
            "f_float": rng.normal(size=n),
            "f_f32": rng.normal(size=n).astype("float32"),
            "f_i32": pd.array(rng.integers(-1000, 1000, n), dtype="Int32"),
            "f_bool": pd.array(rng.random(n) < 0.5, dtype="boolean"),
        }
    )
    for col in ["f_str", "f_int", "f_float", "f_f32", "f_i32", "f_bool"]:
        df.loc[rng.random(n) < 0.1, col] = None
    df.loc[rng.random(n) < 0.05, "f_float"] = np.nan
    return df.sort_values([key, "event_timestamp", "created"], kind="stable").reset_index(drop=True)


def write_tables(data: Path) -> dict[str, Any]:
    data.mkdir(parents=True, exist_ok=True)
    d = feature_rows(400, seed=1)
    pq.write_table(pa.Table.from_pandas(d, preserve_index=False), data / "sorted.parquet", row_group_size=64)
    shuffled = d.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pq.write_table(
        pa.Table.from_pandas(shuffled, preserve_index=False), data / "shuffled.parquet", row_group_size=97
    )
    s = feature_rows(150, seed=2, key="shop_id", str_keys=True)
    pq.write_table(pa.Table.from_pandas(s, preserve_index=False), data / "shops.parquet")
    m = d.rename(columns={"f_str": "raw_str"})
    pq.write_table(pa.Table.from_pandas(m, preserve_index=False), data / "mapped.parquet")
    return {"drivers": sorted(set(d["driver_id"].tolist())), "shops": sorted(set(s["shop_id"].tolist()))}


def definitions(data: Path) -> list[Any]:
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    shop = Entity(name="shop", join_keys=["shop_id"], value_type=ValueType.STRING)

    def source(name: str, **kw: Any) -> FileSource:
        return FileSource(
            name=name,
            path=str(data / f"{name}.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
            **kw,
        )

    def view(name: str, entity: Entity, src: FileSource) -> FeatureView:
        return FeatureView(
            name=name, entities=[entity], ttl=timedelta(0), schema=FEATURES, source=src, online=True
        )

    return [
        driver,
        shop,
        view("sorted_view", driver, source("sorted")),
        view("shuffled_view", driver, source("shuffled")),
        view("shop_view", shop, source("shops")),
        view("mapped_view", driver, source("mapped", field_mapping={"raw_str": "f_str"})),
    ]


VIEWS = ["sorted_view", "shuffled_view", "shop_view", "mapped_view"]


def make_store(root: Path, data: Path, online: dict[str, Any]) -> FeatureStore:
    project = f"fm{uuid.uuid4().hex[:10]}"
    repo = root / project
    repo.mkdir(parents=True)
    if online.get("type") == "sqlite":
        online = {**online, "path": str(repo / "online.db")}
    (repo / "feature_store.yaml").write_text(
        "\n".join(
            [
                f"project: {project}",
                "provider: local",
                f"registry: {repo / 'registry.db'}",
                f"online_store: {online}",
                "offline_store:\n  type: duckdb",
                "entity_key_serialization_version: 3",
            ]
        )
    )
    store = FeatureStore(repo_path=str(repo))
    store.apply(definitions(data))
    return store


def online_reads(store: FeatureStore, ids: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    out = {}
    for view in VIEWS:
        key, entities = ("shop_id", ids["shops"]) if view == "shop_view" else ("driver_id", ids["drivers"])
        rows = [{key: e} for e in [*entities, *(["nope"] if key == "shop_id" else [-5, 0])]]
        refs = [f"{view}:{f.name}" for f in FEATURES]
        out[view] = store.get_online_features(features=refs, entity_rows=rows).to_dict(
            include_event_timestamps=True
        )
    return out


def assert_same_reads(a: dict, b: dict) -> None:
    for view in a:
        assert a[view].keys() == b[view].keys()
        for col in a[view]:
            va, vb = a[view][col], b[view][col]
            same = [
                x == y or (isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y))
                for x, y in zip(va, vb, strict=True)
            ]
            assert all(same), (view, col, [(x, y) for x, y, s in zip(va, vb, same, strict=True) if not s][:5])


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("fast_materialize")
    data = root / "data"
    return root, data, write_tables(data)


WINDOWS = [
    (None, None),  # everything up to now
    (T0 + timedelta(days=2, hours=3), T0 + timedelta(days=6, minutes=7)),  # rows on both sides are cut
]


@pytest.mark.parametrize("window", WINDOWS, ids=["all", "window"])
def test_sqlite_reads_equal_feast_materialize(repo, window) -> None:
    root, data, ids = repo
    start, end = window
    end = end or datetime.now(UTC)
    feast_store = make_store(root, data, {"type": "sqlite"})
    fast_store = make_store(root, data, {"type": "sqlite"})
    try:
        feast_store.materialize(start or datetime(1970, 1, 1, tzinfo=UTC), end)
        stats = fm.materialize_fast(fast_store, start=start, end=end, batch_rows=50)
        expected, got = online_reads(feast_store, ids), online_reads(fast_store, ids)
        assert_same_reads(expected, got)
        assert stats["views"]["mapped_view"]["writer"] == "feast"  # field mapping: delegated to Feast
        assert stats["views"]["sorted_view"]["reader"] == "parquet"
        assert stats["views"]["sorted_view"]["writer"] == "sqlite"
        rows = pd.read_parquet(data / "sorted.parquet", columns=["driver_id", "event_timestamp"])
        in_window = (rows["event_timestamp"] <= end) & (rows["event_timestamp"] >= (start or T0))
        n_in_window = rows.loc[in_window, "driver_id"].nunique()
        assert stats["views"]["sorted_view"]["entities_written"] == n_in_window
        if start is not None:  # the window really cuts: some entities have nothing in it
            assert 0 < n_in_window < len(ids["drivers"])
        # the registry knows, as after store.materialize
        fv = fast_store.registry.get_feature_view("sorted_view", fast_store.project)
        assert fv.materialization_intervals[-1][1] == end
    finally:
        feast_store.teardown()
        fast_store.teardown()


def test_sqlite_segments_and_code_packing(repo, monkeypatch) -> None:
    """Tiny pools: many staged segments, each loaded on its own, and chunks split to keep codes small."""
    root, data, ids = repo
    monkeypatch.setattr(fm._SqliteWriter, "POOL_LIMIT", 40)
    monkeypatch.setattr(fm._SqliteWriter, "CODE_BITS", 7)  # 128 codes: 14 rows per slice of 6 features
    loads = []
    real_load = fm._sqlite_load
    monkeypatch.setattr(fm, "_sqlite_load", lambda *a: (loads.append(a[1]), real_load(*a)))
    end = datetime.now(UTC)
    feast_store = make_store(root, data, {"type": "sqlite"})
    fast_store = make_store(root, data, {"type": "sqlite"})
    try:
        feast_store.materialize(datetime(1970, 1, 1, tzinfo=UTC), end)
        fm.materialize_fast(fast_store, start=None, end=end, batch_rows=100)
        assert len(loads) > 20
        assert_same_reads(online_reads(feast_store, ids), online_reads(fast_store, ids))
    finally:
        feast_store.teardown()
        fast_store.teardown()


def test_sorted_file_streams_in_bounded_pieces(repo) -> None:
    """Sorted by entity: entities are released row group by row group, not all at the end."""
    root, data, ids = repo
    store = make_store(root, data, {"type": "sqlite"})
    try:
        for view, streamed in [("sorted_view", True), ("shuffled_view", False)]:
            plan = fm._plan(store, store.get_feature_view(view))
            reader = fm._ParquetReader(store, plan, None, datetime.now(UTC), 50)
            stats = fm._ViewStats()
            pieces = [t.num_rows for t in reader.batches(stats)]
            assert sum(pieces) == len(ids["drivers"]) == stats.entities
            assert (len(pieces) > 5) is streamed, pieces
            assert max(pieces) < len(ids["drivers"]) or not streamed
    finally:
        store.teardown()


# --------------------------------------------------------------------------------------------------
# byte-level helpers against Feast's and protobuf's own


def test_timestamp_protos_are_protobufs_bytes() -> None:
    us = np.array(
        [
            0,
            1,
            999_999,
            1_000_000,
            1_700_000_000_123_456,
            1_700_000_000_000_000,
            -1,
            -1_500_000,
            -(10**15),
            2**52,
        ],
        dtype=np.int64,
    )
    rng = np.random.default_rng(0)
    us = np.r_[us, rng.integers(-(2**55), 2**55, 2000)]
    want = []
    for u in us.tolist():
        t = Timestamp(seconds=u // 1_000_000, nanos=(u % 1_000_000) * 1000)
        want.append(t.SerializeToString())
    assert len(us) > fm.SMALL_BATCH  # the vectorised path ...
    assert fm.timestamp_protos(us) == want
    framed = fm.timestamp_protos(us, frame=b"F")
    assert framed == [b"F$%d\r\n%s\r\n" % (len(w), w) for w in want]
    small = fm.SMALL_BATCH  # ... and the few rows of a stream push
    assert fm.timestamp_protos(us[:small]) == want[:small]
    assert fm.timestamp_protos(us[-small:], frame=b"F") == framed[-small:]


def test_timestamp_matches_feast_datetime_path() -> None:
    """Feast: pandas ns timestamp -> datetime (floored to us) -> Timestamp.FromDatetime."""
    ns = pd.to_datetime(
        ["2026-10-01 12:00:00.123456789", "1969-12-31 23:59:59.5", "2026-01-01"], utc=True, format="ISO8601"
    )
    for value, got in zip(ns, fm.timestamp_protos(ns.as_unit("ns").asi8 // 1000), strict=True):
        t = Timestamp()
        t.FromDatetime(value.to_pydatetime(warn=False))
        assert got == t.SerializeToString()


def test_int64_entity_keys_are_feast_keys() -> None:
    values = [0, 1, -1, 255, 256, 10_000_001, 2**63 - 1, -(2**63), 2**40 + 7]
    plan = fm._Plan(
        fv=None,
        source=None,
        join_keys=["user_id"],
        key_types=[ValueType.INT64],
        features=[],  # type: ignore[arg-type]
        feature_types=[],
        ts="ts",
        created=None,
        key_version=3,
    )
    got = fm._entity_keys(plan, pa.record_batch({"user_id": pa.array(values, pa.int64())}))
    for v, g in zip(values, got, strict=True):
        ek = EntityKeyProto(join_keys=["user_id"], entity_values=[ValueProto(int64_val=v)])
        assert g == serialize_entity_key(ek, entity_key_serialization_version=3)
        assert g + b"proj" == _redis_key("proj", ek, entity_key_serialization_version=3)
    plan.key_types = [ValueType.STRING]
    plan.join_keys = ["shop"]
    got = fm._entity_keys(plan, pa.record_batch({"shop": pa.array(["a", "ü"])}))
    ek = EntityKeyProto(join_keys=["shop"], entity_values=[ValueProto(string_val="ü")])
    assert got[1] == serialize_entity_key(ek, entity_key_serialization_version=3)


@pytest.mark.parametrize(
    ("array", "vtype"),
    [
        (pa.array(["x", None, "y", "x", ""]), ValueType.STRING),
        (pa.array([1, None, 2**60, 1], pa.int64()), ValueType.INT64),
        (pa.array([1, 3, 2**60], pa.int64()), ValueType.INT64),
        (pa.array([1.5, None, float("nan"), 1.5], pa.float64()), ValueType.DOUBLE),
        (pa.array([0.1, None], pa.float32()), ValueType.FLOAT),
        (pa.array([3, None, -3], pa.int32()), ValueType.INT32),
        (pa.array([True, None, False]), ValueType.BOOL),
        (pa.array([[1, 2], None, [3]], pa.list_(pa.int64())), ValueType.INT64_LIST),
        (pa.array([None, None], pa.string()), ValueType.STRING),
    ],
)
def test_encoded_values_are_feasts(array: pa.Array, vtype: ValueType) -> None:
    from feast.infra.online_stores.helpers import extract_text_and_num

    col = fm._encode_column(array, vtype, with_text=True)
    feast = python_values_to_proto_values(array.to_numpy(zero_copy_only=False), vtype)
    assert col.rows() == [p.SerializeToString() for p in feast]
    assert col.rows(col.texts) == [extract_text_and_num(p, False)[0] for p in feast]


def test_sqlite_epoch_seconds_is_the_sqlite3_adapter() -> None:
    us = np.array([0, 1, 1_700_000_000_999_999, -1, -1_000_000, -1_500_001], dtype=np.int64)
    want = [int((datetime(1970, 1, 1) + timedelta(microseconds=int(u))).timestamp()) for u in us]
    assert fm._sqlite_epoch_seconds(us) == want
