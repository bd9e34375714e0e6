"""Redis Cluster as the online store: three local `redis-server` nodes in cluster mode, started here.

The fast materializer writes the small game_ltv world into the cluster (rows split by their key's hash
slot, one pipelined connection per node) and Feast's own reads of the cluster give what the embedded
store gives; the API's reader (keys grouped per node, the receipt asked of its own node) answers the same
predictions as the embedded API, and a cluster that lost its data answers 503, not "not found".
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
import uuid
from datetime import UTC, datetime

import pandas as pd
import pytest

from core.fast_materialize import materialize_fast
from core.feature_store import open_store
from core.online_receipt import teardown
from pipelines.materialize import EPOCH, present_views, sync_online
from tests.conftest import api_client, env_or_skip, user_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]
NODES = 3


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """n ports whose cluster bus ports (port + 10000, Redis's rule) are free too."""
    ports: list[int] = []
    for p in random.sample(range(20000, 40000), 400):
        if _free(p) and _free(p + 10000):
            ports.append(p)
            if len(ports) == n:
                return ports
    raise AssertionError("no free ports for the cluster")


def _cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    env_or_skip("REDIS_URL")  # the machine's Redis is there: so are redis-server and redis-cli
    assert shutil.which("redis-server") and shutil.which("redis-cli")
    tmp = tmp_path_factory.mktemp("redis_cluster")
    ports = _free_ports(NODES)
    procs = [
        subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(p),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{p}.conf",
                "--cluster-node-timeout",
                "5000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    try:
        for p in ports:
            for _ in range(100):
                try:
                    if _cli(p, "ping").strip() == "PONG":
                        break
                except subprocess.CalledProcessError:
                    pass
                time.sleep(0.05)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in _cli(p, "cluster", "info") for p in ports):
            assert time.monotonic() < deadline, "the cluster did not reach cluster_state:ok"
            time.sleep(0.2)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


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


def test_a_cluster_that_lost_its_data_answers_503(materialized, cluster, on_cluster):
    ids = user_ids(materialized, 5)
    with api_client(on_cluster) as c:
        assert c.post("/v1/models/game_ltv/predict", json={"entities": {"user_id": ids}}).status_code == 200
        for p in cluster:
            _cli(p, "flushall")
        r = c.post("/v1/models/game_ltv/predict", json={"entities": {"user_id": ids}})
        assert r.status_code == 503 and "lost its data" in r.json()["detail"], r.text
    assert sync_online(on_cluster) == "materialized"  # and back
