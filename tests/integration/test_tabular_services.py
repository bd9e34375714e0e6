"""A spec'd model on the services: a source read from a PostgreSQL table, the PostgreSQL offline store for
the training set, Redis as the online store for the API. Same training set and predictions as the embedded
run on the same data. Own Feast project and schema, removed at the end."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest

from core import model_registry as mr
from core.feature_store import open_store
from core.layout import Layout
from core.online_receipt import teardown
from pipelines.common.offline_tables import pg_connect
from pipelines.lifecycle.registry import register_and_gate
from pipelines.materialize import sync_online
from pipelines.tabular import evaluate, ingest, score, train, training_set
from tests.conftest import api_client, embedded_settings, env_or_skip
from tests.tabular_world import write_spec, write_world

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(settings, spec: dict) -> Layout:
    write_spec(settings.specs_dir, spec)
    layout = Layout.of(settings, spec["name"])
    for stage in (ingest, training_set, train, evaluate, score):
        stage.run(settings, layout)
    return layout


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    redis_url, database_url = env_or_skip("REDIS_URL"), env_or_skip("DATABASE_URL")
    tag = uuid.uuid4().hex[:10]
    schema = f"test_{tag}"
    embedded_root, services_root = tmp_path_factory.mktemp("emb"), tmp_path_factory.mktemp("svc")
    spec = write_world(embedded_root, "binary")
    write_world(services_root, "binary")
    embedded = _run(embedded_settings(embedded_root, specs_dir=embedded_root / "specs"), spec)

    services = embedded_settings(
        services_root,
        specs_dir=services_root / "specs",
        redis_url=redis_url,
        database_url=database_url,
        database_schema=schema,
        feast_project=f"it{tag}",
    )
    act = pd.read_csv(services_root / "data" / "raw" / "shop" / "activity.csv")
    with pg_connect(database_url) as conn:  # the user's table, typed as a database would hold it
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(
            f'CREATE TABLE "{schema}".shop_activity (customer_id BIGINT, snapshot_time TIMESTAMPTZ, '
            "visits BIGINT, spend DOUBLE PRECISION, leak BIGINT)"
        )
        with conn.cursor().copy(f'COPY "{schema}".shop_activity FROM STDIN WITH (FORMAT csv)') as copy:
            copy.write(act.to_csv(index=False, header=False))
        conn.commit()
    spec_pg = {
        **spec,
        "sources": [spec["sources"][0], {**spec["sources"][1], "table": f"{schema}.shop_activity"}],
    }
    spec_pg["sources"][1].pop("path")
    try:
        yield embedded, _run(services, spec_pg), services
    finally:
        try:
            teardown(open_store(services))
        finally:
            with pg_connect(database_url) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}_mlflow" CASCADE')
                conn.commit()


def test_a_postgres_source_and_offline_store_give_the_embedded_training_set(worlds):
    embedded, services, _ = worlds
    ref = pd.read_parquet(embedded.training_set)
    got = pd.read_parquet(services.training_set)
    assert len(got) == len(ref) > 4000
    pd.testing.assert_frame_equal(got, ref)  # values, dtypes, split: the same model version follows
    assert pd.read_parquet(services.features / "activity.parquet").equals(
        pd.read_parquet(embedded.features / "activity.parquet")
    )


def test_redis_serves_the_registry_champion_with_the_scoring_files_prediction(worlds):
    """The model registry on PostgreSQL (DATABASE_URL, its own schema): registered, promoted, served."""
    _, services, settings = worlds
    assert sync_online(settings) == "materialized"
    assert settings.effective_mlflow_uri.startswith("postgresql") and settings.mlflow_schema.endswith(
        "_mlflow"
    )
    d = register_and_gate(settings, "shop")
    assert d.promote and str(mr.version_by_alias(settings, "shop", mr.CHAMPION).version) == "1"
    with pg_connect(settings.database_url) as conn:
        n = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'model_versions'",
            (settings.mlflow_schema,),
        ).fetchone()[0]
    assert n == 1  # MLflow's tables in the schema next to ours
    scored = pd.read_csv(services.scoring_path).head(20)
    body = {
        "entities": {"customer_id": scored["customer_id"].tolist()},
        "features": {"offer": scored["offer"].tolist()},
    }
    with api_client(settings) as client:
        r = client.post("/v1/models/shop/predict", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["registry_version"] == "1"
    got = [p["prediction"] for p in r.json()["predictions"]]
    np.testing.assert_allclose(got, scored["prediction"], atol=2e-6)
