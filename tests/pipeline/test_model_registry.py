"""The MLflow registry for a spec'd model: registration with its lineage (idempotent), the gate on the same
hold-out, challenger and rollback, and the API following the champion without a restart, every logged
prediction naming the registry version, run and FeatureService."""

from __future__ import annotations

import threading
import time

import mlflow
import pytest
import yaml
from sqlalchemy import create_engine, select

from core import model_registry as mr
from core.layout import Layout
from core.model_bundle import load_metadata
from pipelines.lifecycle import registry as reg
from pipelines.lifecycle.params import GateParams, LifecycleParams
from pipelines.materialize import sync_online
from pipelines.tabular import evaluate, ingest, train, training_set
from serving.request_log import make_table
from tests.conftest import api_client, embedded_settings
from tests.tabular_world import write_spec, write_world

pytestmark = pytest.mark.slow


def _train(settings, spec: dict) -> None:
    write_spec(settings.specs_dir, spec)
    layout = Layout.of(settings, spec["name"])
    for stage in (ingest, training_set, train, evaluate):
        stage.run(settings, layout)


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    spec = write_world(root, "binary")
    spec["sources"][1]["columns"]["leak"]["feature"] = False  # an honest model: the leak is tested elsewhere
    settings = embedded_settings(root, specs_dir=root / "specs", model_poll_s=0.1)
    _train(settings, spec)
    return settings, spec


def test_registration_logs_the_lineage_once(shop):
    settings, _ = shop
    mv = reg.register(settings, "shop")
    tags = mv.tags
    assert (
        str(mv.version) == "1"
        and tags["feature_service"] == "shop_v1"
        and tags["feature_service_version"] == "1"
    )
    assert (
        len(tags["training_data_hash"]) == 64
        and tags["git_commit"]
        and tags["bundle_version"].startswith("shop-")
    )
    run = mr.client(settings).get_run(mv.run_id)
    assert run.data.metrics["roc_auc"] > 0.7 and "baseline_pr_auc" in run.data.metrics
    assert (
        run.data.params["depth"] == "4" and run.data.tags["training_data_hash"] == tags["training_data_hash"]
    )
    arts = {a.path for a in mr.client(settings).list_artifacts(mv.run_id)}
    assert {"bundle", "plots", "metrics", "monitoring"} <= arts
    # the same bundle again: the same version, no second run
    again = reg.register(settings, "shop")
    assert again.version == mv.version and again.run_id == mv.run_id
    assert len(mr.client(settings).search_model_versions("name='shop'")) == 1
    d = reg.register_and_gate(settings, "shop")
    assert d.promote and d.reason == "no champion yet"
    assert str(mr.version_by_alias(settings, "shop", mr.CHAMPION).version) == "1"
    store = settings.effective_mlflow_uri
    assert store.startswith("sqlite:///") and str(settings.data_dir) in store  # the world's own store


def test_the_api_follows_the_champion_without_restart_and_rollback_is_one_call(shop):
    settings, spec = shop
    sync_online(settings)
    ids = list(range(1001, 1051))
    errors: list[str] = []
    seen: list[str] = []
    # Feast's MLflow integration resolves the served model to its FeatureService from our tags
    from feast.mlflow_integration.model_resolver import FeastMlflowModelResolver

    from core.feature_store import open_store

    resolver = FeastMlflowModelResolver(open_store(settings), mlflow, mr.client(settings))
    assert resolver.resolve("models:/shop/champion") == "shop_v1"
    with api_client(settings) as client:
        info = client.get("/v1/models/shop").json()["served"]
        assert info["registry_version"] == "1" and info["alias"] == "champion"
        assert info["feature_service"] == "shop_v1" and info["run_id"]

        # a worse challenger (3 shallow trees) is kept as a challenger, with the reason
        weak = yaml.safe_load(yaml.safe_dump(spec))
        weak["model"]["params"] = {"iterations": 3, "depth": 1, "learning_rate": 0.01}
        _train(settings, weak)
        d = reg.register_and_gate(settings, "shop")
        assert not d.promote and "does not beat" in d.reason and "same" in d.reason
        ch = mr.version_by_alias(settings, "shop", mr.CHALLENGER)
        assert str(ch.version) == "2" and "does not beat" in ch.tags["gate_reason"]
        assert str(mr.version_by_alias(settings, "shop", mr.CHAMPION).version) == "1"

        # a stronger one is promoted while requests keep coming: none fails, and the answers switch over
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                r = client.post(
                    "/v1/models/shop/predict",
                    json={"entities": {"customer_id": ids[:5]}, "features": {"offer": ["gift"] * 5}},
                )
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    seen.append(r.json()["registry_version"])

        t = threading.Thread(target=hammer)
        t.start()
        strong = yaml.safe_load(yaml.safe_dump(spec))
        strong["model"]["params"] = {"iterations": 400, "depth": 4, "learning_rate": 0.05}
        _train(settings, strong)
        lp = LifecycleParams(gate=GateParams(min_improvement=-1.0))  # any challenger beats the weak one
        d = reg.register_and_gate(settings, "shop", lp)
        assert d.promote, d.reason
        deadline = time.time() + 20
        while time.time() < deadline and (not seen or seen[-1] != "3"):
            time.sleep(0.1)
        time.sleep(0.3)
        stop.set()
        t.join()
        assert not errors, errors[:3]
        assert seen[0] == "1" and seen[-1] == "3" and set(seen) == {"1", "3"}
        switch = seen.index("3")
        assert all(v == "3" for v in seen[switch:])  # once switched, never back

        # rollback: one call, and the API follows
        assert mr.rollback(settings, "shop") == ("3", "1")
        deadline = time.time() + 20
        while time.time() < deadline:
            r = client.post(
                "/v1/models/shop/predict",
                json={"entities": {"customer_id": ids[:1]}, "features": {"offer": ["gift"]}},
            )
            if r.json()["registry_version"] == "1":
                break
            time.sleep(0.1)
        assert r.json()["registry_version"] == "1"
        with pytest.raises(ValueError, match="no earlier champion"):
            mr.rollback(settings, "shop")
    # the batch job scores with the champion too, not with the latest folder under models/
    from serving.batch_job import _load_model

    v1 = mr.client(settings).get_model_version("shop", "1").tags["bundle_version"]
    assert load_metadata(settings.models_dir / "shop").version != v1  # the folder holds version 3's bundle
    assert _load_model(settings, "shop")[1].version == v1
    # every logged prediction names its registry version, run and FeatureService
    engine = create_engine(settings.effective_request_log_url)
    t = make_table(None)
    with engine.connect() as conn:
        rows = conn.execute(select(t.c.registry_version, t.c.run_id, t.c.feature_service)).fetchall()
    assert rows and all(
        r.registry_version in {"1", "3"} and r.run_id and r.feature_service == "shop_v1" for r in rows
    )
    runs = {r.registry_version: r.run_id for r in rows}
    for version, run_id in runs.items():
        assert mr.client(settings).get_model_version("shop", version).run_id == run_id
