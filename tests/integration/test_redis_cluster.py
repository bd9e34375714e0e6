"""Redis Cluster as the online store: three local `redis-server` nodes in cluster mode, started here.

The fast materializer writes the small game_ltv world into the cluster (rows split by their key's hash
slot, one pipelined connection per node) and Feast's own reads of the cluster give what the embedded
store gives; the API's reader (keys grouped per node, the receipt asked of its own node) answers the same
predictions as the embedded API, and a cluster that lost its data answers 503, not "not found".
"""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime

import pandas as pd
import pytest

from bench.redis_cluster_bench import _cli, start_cluster
from core.fast_materialize import materialize_fast
from core.feature_store import open_store
from core.online_receipt import teardown
from pipelines.materialize import EPOCH, present_views, sync_online
from tests.conftest import api_client, env_or_skip, user_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    env_or_skip("REDIS_URL")  # the machine's Redis is there: so are redis-server and redis-cli
    assert shutil.which("redis-server") and shutil.which("redis-cli")
    with start_cluster(tmp_path_factory.mktemp("redis_cluster"), NODES) as ports:
        yield ports


@pytest.fixture(scope="module")
def on_cluster(materialized, cluster, tmp_path_factory):
    """The small game_ltv world's settings with the cluster as the online store (own project)."""
    tmp = tmp_path_factory.mktemp("cluster_registry")
    s = materialized.settings.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{cluster[0]}/0",
            "redis_cluster": True,
            "feast_project": f"rc{uuid.uuid4().hex[:10]}",
            "feast_registry": tmp / "registry.db",
        }
    )
    assert sync_online(s) == "materialized"
    yield s
    teardown(open_store(s))


def _features(settings, ids: list[int]) -> pd.DataFrame:
    store = open_store(settings)
    svc = store.get_feature_service(f"{materialized_service(settings)}")
    return pd.DataFrame(
        store.get_online_features(features=svc, entity_rows=[{"user_id": i} for i in ids]).to_dict()
    )


def materialized_service(settings) -> str:
    from core.model_bundle import load_bundle

    _, meta = load_bundle(settings.models_dir / "game_ltv")
    return meta.feature_service


def test_the_fast_materializer_spreads_keys_over_every_node_and_feast_reads_them_back(
    materialized, cluster, on_cluster
):
    sizes = [int(_cli(p, "dbsize").strip()) for p in cluster]
    assert all(n > 0 for n in sizes), sizes  # keys on every node: the rows were split by slot
    ids = user_ids(materialized, 200)
    got, want = _features(on_cluster, ids), _features(materialized.settings, ids)
    assert len(got) == 200 and got.notna().sum().sum() > 0
    pd.testing.assert_frame_equal(got[sorted(got.columns)], want[sorted(want.columns)])
    # again without overwrite: Feast's rule holds per node (a stored row as new is kept, nothing written)
    store = open_store(on_cluster)
    again = materialize_fast(
        store, present_views(store, on_cluster), EPOCH, datetime.now(UTC), overwrite=False
    )
    for view in again["views"].values():
        assert view["writer"] == "redis_cluster", view
        assert view["entities_written"] == 0 and view["entities_kept_newer"] == view["entities"] > 0, view


def test_the_api_on_the_cluster_answers_as_the_embedded_api(materialized, on_cluster):
    ids = user_ids(materialized, 60)
    body = {"entities": {"user_id": ids}}
    with api_client(materialized.settings) as c:
        want = c.post("/v1/models/game_ltv/predict", json=body).json()["predictions"]
    with api_client(on_cluster) as c:
        r = c.post("/v1/models/game_ltv/predict", json=body)
        assert r.status_code == 200, r.text
        got = r.json()["predictions"]
        assert c.get("/readyz").status_code == 200
    assert [p["prediction"] for p in got] == pytest.approx([p["prediction"] for p in want], rel=1e-9)
    assert [p["found_in_online_store"] for p in got] == [p["found_in_online_store"] for p in want]
    assert sum(p["found_in_online_store"] for p in got) > 30


def test_one_node_that_lost_its_data_answers_503_and_materialization_notices(
    materialized, cluster, on_cluster
):
    """Each node holds its own receipt: one node restarted empty (flushed here) makes the requests that read
    its keys answer 503, never "not found", and the next materialization reloads."""
    ids = user_ids(materialized, 60)  # spread over the three nodes
    body = {"entities": {"user_id": ids}}
    with api_client(on_cluster) as c:
        assert c.post("/v1/models/game_ltv/predict", json=body).status_code == 200
        _cli(cluster[1], "flushall")
        r = c.post("/v1/models/game_ltv/predict", json=body)
        assert r.status_code == 503 and "lost its data" in r.json()["detail"], r.text
        assert c.get("/readyz").status_code == 503
        # the missing receipt is seen: a reload, not "up to date"
        assert sync_online(on_cluster) == "materialized"
        r = c.post("/v1/models/game_ltv/predict", json=body)
        assert r.status_code == 200 and sum(p["found_in_online_store"] for p in r.json()["predictions"]) > 30
