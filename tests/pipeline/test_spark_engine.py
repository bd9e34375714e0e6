"""SPARK_MASTER: the same training set and the same online store as the embedded path, on the small world.

Spark runs in local mode (`local[2]`, the tested default of the engine mode: docs/scaling.md) through
Feast's Spark offline store (training sets) and Spark compute engine (materialization), reading the
world's Parquet tables; the embedded path is DuckDB and the fast materializer.
"""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from core.feature_store import open_store
from core.online_receipt import read_receipt, teardown
from pipelines.materialize import sync_online
from pipelines.tabular.training_set import point_in_time
from tests.conftest import World, env_or_skip

pytestmark = pytest.mark.slow
SERVICE = "game_ltv_v1"


def spark(settings, tmp_path, **over):
    return settings.model_copy(
        update={
            "spark_master": "local[2]",
            "spark_conf": {"spark.sql.shuffle.partitions": "4"},  # small data: fewer, bigger tasks
            "feast_project": f"spark{uuid.uuid4().hex[:8]}",
            "feast_registry": tmp_path / "registry.db",
            "feast_sqlite_path": tmp_path / "online.db",
            "data_dir": tmp_path,
            **over,
        }
    )


def test_training_set_on_spark_equals_embedded(world: World, tmp_path) -> None:
    labels = pd.read_parquet(world.labels)
    embedded = point_in_time(world.settings, SERVICE, labels)
    on_spark = point_in_time(spark(world.settings, tmp_path), SERVICE, labels)
    assert len(on_spark) == len(labels)
    pd.testing.assert_frame_equal(on_spark, embedded)


def online_reads(settings, ids: list[int]) -> pd.DataFrame:
    store = open_store(settings)
    service = store.get_feature_service(SERVICE)
    rows = store.get_online_features(features=service, entity_rows=[{"user_id": i} for i in ids])
    df = pd.DataFrame(rows.to_dict(include_event_timestamps=True))
    return df[sorted(df.columns)]


def all_user_ids(world: World) -> list[int]:
    return pd.read_parquet(world.features / "user_profile.parquet", columns=["user_id"])["user_id"].tolist()


def assert_same_online_store(world: World, embedded, on_spark) -> None:
    assert sync_online(embedded) == "materialized" and sync_online(on_spark) == "materialized"
    ids = [*all_user_ids(world), -1]  # and one unknown user: nulls on both
    a, b = online_reads(embedded, ids), online_reads(on_spark, ids)
    assert a.drop(columns="user_id").notna().any(axis=None)
    pd.testing.assert_frame_equal(b, a)
    assert sync_online(on_spark) == "up-to-date"  # its receipt is written: the spot check passes


def test_materialize_on_spark_into_sqlite_equals_embedded(world: World, tmp_path) -> None:
    embedded = world.settings.model_copy(
        update={
            "feast_project": "embedded",
            "feast_sqlite_path": tmp_path / "embedded.db",
            "data_dir": tmp_path,
        }
    )
    assert_same_online_store(world, embedded, spark(world.settings, tmp_path / "spark", redis_url=None))


@pytest.mark.integration
def test_materialize_on_spark_into_redis_equals_embedded(world: World, tmp_path) -> None:
    redis_url = env_or_skip("REDIS_URL")
    embedded = world.settings.model_copy(
        update={
            "redis_url": redis_url,
            "feast_project": f"emb{uuid.uuid4().hex[:8]}",
            "feast_registry": tmp_path / "registry.db",
            "data_dir": tmp_path,
        }
    )
    on_spark = spark(world.settings, tmp_path / "spark", redis_url=redis_url)
    try:
        assert_same_online_store(world, embedded, on_spark)
        store = open_store(on_spark)
        assert set(read_receipt(store)) == {
            p.name for p in store.get_feature_service(SERVICE).feature_view_projections
        }
    finally:
        for s in (embedded, on_spark):
            teardown(open_store(s))
