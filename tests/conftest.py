"""Shared fixtures: a small but complete game_ltv world, built once per session by the real stages.

Every setting is explicit (never the developer's environment), so the embedded tests stay embedded even
when CI exports REDIS_URL / DATABASE_URL for the integration tests.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.settings import ROOT, Settings
from domain.game_ltv import schema as S
from pipelines.common.params import load_params
from pipelines.game_ltv.params import GameLtvParams


@dataclass
class World:
    params: GameLtvParams
    settings: Settings
    root: Path
    raw: Path
    features: Path  # data/features/game_ltv
    quarantine: Path
    training_set: Path
    model_dir: Path
    metrics: Path
    plots: Path
    ingest_report: dict
    eval_metrics: dict


def small_params() -> GameLtvParams:
    p = load_params(ROOT / "params.yaml").game_ltv
    return p.model_copy(
        update={
            "generate": p.generate.model_copy(
                update={"n_users": 6000, "chunk_size": 2500, "activity_hours": 48}
            ),
            "train": p.train.model_copy(update={"iterations": 300, "early_stopping_rounds": 60}),
        }
    )


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
        request_log_flush_interval_s=0.05,
    )
    values.update(overrides)
    return Settings(**values)


def build_world(root: Path, settings: Settings, p: GameLtvParams) -> World:
    from pipelines.game_ltv import evaluate, ingest, train, training_set
    from synthetic import game_ltv as generate

    raw = root / "data" / "raw" / "game_ltv"
    features = settings.features_dir / "game_ltv"
    w = World(
        params=p,
        settings=settings,
        root=root,
        raw=raw,
        features=features,
        quarantine=root / "data" / "quarantine" / "game_ltv",
        training_set=root / "data" / "training" / "game_ltv.parquet",
        model_dir=settings.models_dir / "game_ltv",
        metrics=root / "metrics" / "game_ltv.json",
        plots=root / "plots",
        ingest_report={},
        eval_metrics={},
    )
    generate.generate(p.generate, raw)
    w.ingest_report = ingest.ingest(
        p.ingest, features, w.quarantine, root / "metrics" / "ingest.json", *ingest.find_inputs(raw)
    )
    df = training_set.build_training_set(settings, p.training_set, features)
    w.training_set.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(w.training_set, index=False)
    train.run(settings, w.training_set, w.model_dir, p.training_set, p.train)
    w.eval_metrics = evaluate.evaluate(
        w.training_set,
        w.model_dir,
        raw / "oracle.parquet",
        p.evaluate,
        p.training_set.prediction_hours,
        w.metrics,
        w.plots,
    )
    return w


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
        lab = set(pd.read_parquet(world.features / f"{S.LABELS_TABLE}.parquet", columns=[S.ID])[S.ID])
        ids = ids[ids.isin(lab) == labeled]
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
