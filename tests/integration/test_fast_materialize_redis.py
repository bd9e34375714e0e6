"""core.fast_materialize on a real Redis: the same online reads as Feast's own `store.materialize`.

Same tiny repo as tests/unit/test_fast_materialize.py (several rows per entity, rows outside the
window, nulls of every type, created-timestamp ties, sorted and shuffled files, a string key, a view
handed to Feast), each store in a Feast project of its own, torn down at the end (its keys deleted).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from feast.infra.online_stores.helpers import _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from core import fast_materialize as fm
from core.feature_store import redis_connection_string
from core.online_receipt import teardown
from tests.conftest import env_or_skip
from tests.unit.test_fast_materialize import T0, assert_same_reads, make_store, online_reads, write_tables

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_online() -> dict:
    return {"type": "redis", "connection_string": redis_connection_string(env_or_skip("REDIS_URL"))}


@pytest.fixture(scope="module")
def repo(tmp_path_factory, redis_online):
    root = tmp_path_factory.mktemp("fast_materialize_redis")
    return root, root / "data", write_tables(root / "data")


@pytest.fixture
def stores(repo, redis_online):
    root, data, _ = repo
    made = []

    def make(**online):
        store = make_store(root, data, {**redis_online, **online})
        made.append(store)
        return store

    yield make
    for store in made:
        teardown(store)  # deletes this project's keys and receipt


@pytest.mark.parametrize(
    "window",
    [(None, None), (T0 + timedelta(days=2, hours=3), T0 + timedelta(days=6, minutes=7))],
    ids=["all", "window"],
)
def test_redis_reads_equal_feast_materialize(repo, stores, window) -> None:
    _, _, ids = repo
    start, end = window
    end = end or datetime.now(UTC)
    feast_store, fast_store = stores(), stores()
    feast_store.materialize(start or datetime(1970, 1, 1, tzinfo=UTC), end)
    stats = fm.materialize_fast(fast_store, start=start, end=end, batch_rows=50)
    assert stats["views"]["sorted_view"]["writer"] == "redis"
    assert stats["views"]["mapped_view"]["writer"] == "feast"
    assert_same_reads(online_reads(feast_store, ids), online_reads(fast_store, ids))


def test_redis_keeps_newer_values_like_feast(repo, stores) -> None:
    """Feast's Redis rule: a second, older materialization does not overwrite newer timestamps."""
    _, _, ids = repo
    late, early = (T0 + timedelta(days=8), T0 + timedelta(days=11)), (T0, T0 + timedelta(days=3))
    feast_store, fast_store = stores(), stores()
    for start, end in (late, early):
        feast_store.materialize(start, end)
        stats = fm.materialize_fast(fast_store, start=start, end=end)
    assert stats["views"]["sorted_view"]["entities_kept_newer"] > 0
    assert_same_reads(online_reads(feast_store, ids), online_reads(fast_store, ids))


def test_skip_dedup_and_ttl_are_honoured(repo, stores) -> None:
    _, _, ids = repo
    late, early = (T0 + timedelta(days=8), T0 + timedelta(days=11)), (T0, T0 + timedelta(days=3))
    feast_store = stores(skip_dedup=True, key_ttl_seconds=3600)
    fast_store = stores(skip_dedup=True, key_ttl_seconds=3600)
    for start, end in (late, early):  # without dedup the older window overwrites
        feast_store.materialize(start, end)
        fm.materialize_fast(fast_store, start=start, end=end)
    assert_same_reads(online_reads(feast_store, ids), online_reads(fast_store, ids))
    client = fast_store._get_provider().online_store._get_client(fast_store.config.online_store)
    entity = EntityKeyProto(join_keys=["driver_id"], entity_values=[ValueProto(int64_val=ids["drivers"][0])])
    assert 0 < client.ttl(_redis_key(fast_store.project, entity)) <= 3600
