"""core.fast_materialize reading a PostgreSQL offline store: the same online reads as Feast's materialize.

The tiny repo of tests/unit/test_fast_materialize.py, its tables copied to a PostgreSQL schema of this
run's own (dropped at the end), read through `SELECT DISTINCT ON` on a server-side cursor.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from feast import Entity, FeatureStore, FeatureView, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

from core import fast_materialize as fm
from core.feature_store import postgres_offline_config
from core.settings import Settings
from pipelines.common.offline_tables import pg_connect
from tests.conftest import env_or_skip
from tests.unit.test_fast_materialize import FEATURES, T0, assert_same_reads, feature_rows

pytestmark = pytest.mark.integration
PG_TYPES = {"int64": "BIGINT", "Int64": "BIGINT", "Int32": "INTEGER", "float64": "DOUBLE PRECISION",
            "float32": "REAL", "boolean": "BOOLEAN", "object": "TEXT"}  # fmt: skip


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    url = Settings(database_url=env_or_skip("DATABASE_URL")).database_url
    assert url
    schema = f"test_fm_{uuid.uuid4().hex[:8]}"
    frames = {
        "drivers": feature_rows(300, seed=5),
        "shops": feature_rows(100, seed=6, key="shop_id", str_keys=True),
    }
    with pg_connect(url) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        for name, df in frames.items():
            cols = ", ".join(
                f'"{c}" {"TIMESTAMPTZ" if "datetime" in str(t) else PG_TYPES[str(t)]}'
                for c, t in df.dtypes.items()
            )
            conn.execute(f'CREATE TABLE "{schema}"."{name}" ({cols})')
            with conn.cursor() as cur:
                rows = [
                    tuple(
                        None if pd.isna(v) else (v.to_pydatetime() if isinstance(v, pd.Timestamp) else v)
                        for v in r
                    )
                    for r in df.itertuples(index=False)
                ]
                cur.executemany(
                    f'INSERT INTO "{schema}"."{name}" VALUES ({", ".join(["%s"] * len(df.columns))})', rows
                )
        conn.commit()
    ids = {
        "drivers": sorted(set(frames["drivers"]["driver_id"])),
        "shops": sorted(set(frames["shops"]["shop_id"])),
    }
    yield url, schema, tmp_path_factory.mktemp("fm_pg"), ids
    with pg_connect(url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.commit()


def make_pg_store(url: str, schema: str, root: Path) -> FeatureStore:
    project = f"fmpg{uuid.uuid4().hex[:10]}"
    repo = root / project
    repo.mkdir(parents=True)
    config = {
        "project": project,
        "provider": "local",
        "registry": str(repo / "registry.db"),
        "online_store": {"type": "sqlite", "path": str(repo / "online.db")},
        "offline_store": postgres_offline_config(url, schema),
        "entity_key_serialization_version": 3,
    }
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    store = FeatureStore(repo_path=str(repo))
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    shop = Entity(name="shop", join_keys=["shop_id"], value_type=ValueType.STRING)
    objects: list[Any] = [driver, shop]
    for name, entity in (("drivers", driver), ("shops", shop)):
        src = PostgreSQLSource(
            name=name,
            table=f"{schema}.{name}",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        )
        objects.append(
            FeatureView(name=f"{name}_view", entities=[entity], ttl=timedelta(0), schema=FEATURES, source=src)
        )
    store.apply(objects)
    return store


def reads(store: FeatureStore, ids: dict[str, list[Any]]) -> dict[str, dict[str, list[Any]]]:
    out = {}
    for name, key in (("drivers", "driver_id"), ("shops", "shop_id")):
        refs = [f"{name}_view:{f.name}" for f in FEATURES]
        rows = [{key: e} for e in ids[name]]
        out[name] = store.get_online_features(features=refs, entity_rows=rows).to_dict(
            include_event_timestamps=True
        )
    return out


@pytest.mark.parametrize(
    "window", [(None, None), (T0 + timedelta(days=2, hours=3), T0 + timedelta(days=6))], ids=["all", "window"]
)
def test_postgres_source_reads_equal_feast_materialize(pg, window) -> None:
    url, schema, root, ids = pg
    start, end = window
    end = end or datetime.now(UTC)
    feast_store, fast_store = make_pg_store(url, schema, root), make_pg_store(url, schema, root)
    try:
        feast_store.materialize(start or datetime(1970, 1, 1, tzinfo=UTC), end)
        stats = fm.materialize_fast(fast_store, start=start, end=end, batch_rows=40)
        assert {v["reader"] for v in stats["views"].values()} == {"postgres"}
        expected = reads(feast_store, ids)
        assert_same_reads(expected, reads(fast_store, ids))
        assert 0 < stats["views"]["drivers_view"]["entities_written"] <= len(ids["drivers"])
        assert sum(v is not None for v in expected["drivers"]["f_str"]) > len(ids["drivers"]) // 3
    finally:
        feast_store.teardown()
        fast_store.teardown()
