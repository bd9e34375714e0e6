"""Shared fixtures: a small but complete game_ltv world, built once per session by the real stages
(the generator, game_ltv's preparation, then the generic stages of specs/game_ltv.yaml).

Every setting is explicit (never the developer's environment), so the embedded tests stay embedded even
when CI exports REDIS_URL / DATABASE_URL for the integration tests.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from core.settings import ROOT, Settings
from domain.game_ltv import schema as S
from pipelines.common.params import load_params
from pipelines.game_ltv.params import GameLtvParams

GAME_LTV_SPEC = ROOT / "specs" / "game_ltv.yaml"


@dataclass
class World:
    params: GameLtvParams  # the generator's and preparation's
    spec: dict  # specs/game_ltv.yaml as this world runs it (fewer trees)
    settings: Settings
    root: Path
    raw: Path
    prepared: Path  # data/prepared/game_ltv: what the spec declares
    features: Path  # data/features/game_ltv: what Feast reads (the generic ingest's output)
    quarantine: Path  # data/quarantine/game_ltv_raw: the raw files' rejects
    labels: Path  # data/clean/game_ltv/labels.parquet
    training_set: Path
    model_dir: Path
    metrics: Path
    plots: Path
    prepare_report: dict
    eval_metrics: dict


def small_params() -> GameLtvParams:
    p = load_params(ROOT / "params.yaml").game_ltv
    return p.model_copy(
        update={
            "generate": p.generate.model_copy(
                update={"n_users": 6000, "chunk_size": 2500, "activity_hours": 48}
            ),
        }
    )


def small_spec() -> dict:
    spec = yaml.safe_load(GAME_LTV_SPEC.read_text())
    spec["model"]["params"].update(iterations=300, early_stopping_rounds=60)
    return spec


def embedded_settings(root: Path, **overrides) -> Settings:
    values = dict(
        redis_url=None,
        database_url=None,
        request_log_url=f"sqlite:///{root / 'request_log.db'}",
        data_dir=root / "data",
        features_dir=root / "data" / "features",
        feast_registry=root / "data" / "feast" / "registry.db",
        feast_sqlite_path=root / "data" / "feast" / "online.db",
        feast_project=f"t{uuid.uuid4().hex[:10]}",
        models_dir=root / "models",
        specs_dir=root / "specs",
        request_log_flush_interval_s=0.05,
    )
    values.update(overrides)
    return Settings(**values)


def api_client(settings: Settings, actions=("admin",), models=("*",)):
    """A TestClient of the API whose requests carry a new API key (every action and model unless narrowed),
    as every client of the API must (serving/auth)."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tests.live import new_key

    token = new_key(settings, tuple(actions), tuple(models))
    return TestClient(create_app(settings), headers={"Authorization": f"Bearer {token}"})


def platform_overrides(settings: Settings) -> dict[str, str]:
    """`settings` as the overrides a Dagster run's Platform resource takes (pipelines/lifecycle/orchestrator.py),
    the services explicitly off."""
    fields = (
        "data_dir",
        "features_dir",
        "feast_registry",
        "feast_sqlite_path",
        "feast_project",
        "models_dir",
    )
    out = {f: str(getattr(settings, f)) for f in (*fields, "specs_dir", "request_log_url")}
    return out | {"redis_url": "", "database_url": "", "mlflow_tracking_uri": ""}


def build_world(
    root: Path, settings: Settings, p: GameLtvParams, spec: dict | None = None, raw: Path | None = None
) -> World:
    """Generate (unless `raw` holds the data already), prepare, then the generic stages `dvc repro` runs."""
    from core.layout import Layout
    from pipelines.game_ltv import prepare
    from pipelines.tabular import evaluate, ingest, score, train, training_set
    from synthetic import game_ltv as generate
    from tests.tabular_world import write_spec

    spec = spec or small_spec()
    write_spec(settings.specs_dir, spec)
    if raw is None:
        raw = root / "data" / "raw" / "game_ltv"
        generate.generate(p.generate, raw)
    layout = Layout.of(settings, "game_ltv")
    prepared = root / "data" / "prepared" / "game_ltv"
    quarantine = root / "data" / "quarantine" / "game_ltv_raw"
    report = prepare.prepare(
        p.prepare, prepared, quarantine, root / "metrics" / "game_ltv_prepare.json", *prepare.find_inputs(raw)
    )
    for stage in (ingest, training_set, train, evaluate, score):
        stage.run(settings, layout)
    return World(
        params=p,
        spec=spec,
        settings=settings,
        root=root,
        raw=raw,
        prepared=prepared,
        features=layout.features,
        quarantine=quarantine,
        labels=layout.labels,
        training_set=layout.training_set,
        model_dir=layout.model_dir,
        metrics=layout.metrics,
        plots=layout.plots,
        prepare_report=report,
        eval_metrics=json.loads(layout.metrics.read_text()),
    )


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    return build_world(root, embedded_settings(root), small_params())


@pytest.fixture(scope="session")
def materialized(world: World) -> World:
    from pipelines.materialize import sync_online

    assert sync_online(world.settings) == "materialized"
    return world


def env_or_skip(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set")
    return value


def user_ids(world: World, n: int = 20, labeled: bool | None = None) -> list[int]:
    import pandas as pd

    prof = pd.read_parquet(world.features / f"{S.PROFILE_TABLE}.parquet", columns=[S.ID])
    ids = prof[S.ID]
    if labeled is not None:
        lab = pd.read_parquet(world.labels, columns=[S.ID, S.LABEL])
        ids = ids[ids.isin(set(lab.loc[lab[S.LABEL].notna(), S.ID])) == labeled]
    return [int(i) for i in ids.sample(n=min(n, len(ids)), random_state=0)]


@dataclass
class PurchaseWorld:
    settings: Settings
    root: Path
    raw: Path
    features: Path  # data/features/purchase_propensity
    training_set: Path
    model_dir: Path
    metrics: dict
    ingest: dict


def build_purchase_world(root: Path, settings: Settings) -> PurchaseWorld:
    """A small purchase_propensity world, built by the real stage functions."""
    from pipelines.purchase_propensity import ingest, train, training_set
    from synthetic import purchase_propensity as generate

    p = load_params(ROOT / "params.yaml").purchase_propensity
    raw = root / "data" / "raw" / "purchase_propensity"
    features = settings.features_dir / "purchase_propensity"
    generate.generate(
        p.generate.model_copy(update={"n_customers": 3000, "days": 14, "defect_rate": 0.02}), raw
    )
    report = ingest.ingest(
        p.features.model_copy(update={"raw_dir": str(raw)}),
        features,
        root / "quarantine",
        root / "ingest.json",
    )
    ts_params = p.training_set.model_copy(update={"test_days": 4})
    df = training_set.build_training_set(settings, ts_params, features)
    ts_path = root / "data" / "training" / "purchase_propensity.parquet"
    ts_path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(ts_path, index=False)
    model_dir = settings.models_dir / "purchase_propensity"
    metrics = train.run(
        settings,
        ts_path,
        model_dir,
        ts_params,
        p.train.model_copy(update={"iterations": 300, "early_stopping_rounds": 50}),
        raw / "oracle.parquet",
        root / "metrics.json",
        root / "plots",
    )
    return PurchaseWorld(settings, root, raw, features, ts_path, model_dir, metrics, report)


@pytest.fixture(scope="session")
def purchase_world(tmp_path_factory: pytest.TempPathFactory) -> PurchaseWorld:
    from pipelines.materialize import sync_online

    root = tmp_path_factory.mktemp("purchase_world")
    w = build_purchase_world(root, embedded_settings(root))
    assert sync_online(w.settings) == "materialized"
    return w


def pytest_collection_modifyitems(config, items) -> None:
    """Markers tell the truth: every test under tests/integration talks to a service (`integration`), every
    test under tests/pipeline builds a world with the real stages (`slow`); `make test-fast` relies on it."""
    wrong = []
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts and item.get_closest_marker("integration") is None:
            wrong.append(f"{item.nodeid}: under tests/integration but not marked integration")
        if "pipeline" in parts and item.get_closest_marker("slow") is None:
            wrong.append(f"{item.nodeid}: under tests/pipeline but not marked slow")
    if wrong:
        raise pytest.UsageError("test markers do not tell the truth:\n" + "\n".join(wrong))
