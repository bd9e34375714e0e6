"""The same platform on Redis (online) and PostgreSQL (offline store + request log), selected by settings.

Each run uses a Feast project and a PostgreSQL schema of its own, removed at the end.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import psycopg
import pytest
from sqlalchemy.engine import make_url

from pipelines.common.offline_tables import pg_connect
from pipelines.materialize import sync_online
from pipelines.tabular.training_set import SPLIT, point_in_time
from tests.conftest import api_client, user_ids
from tests.integration.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_postgres_offline_store_gives_the_same_training_set(services, materialized):
    pg = point_in_time(services, "game_ltv_v1", pd.read_parquet(materialized.labels))
    ref = pd.read_parquet(materialized.training_set)
    cols = [c for c in ref.columns if c != SPLIT]
    pd.testing.assert_frame_equal(pg[cols], ref[cols])  # values and dtypes: same hash, same model version


def test_redis_online_store_serves_the_same_predictions_and_logs_to_postgres(services, materialized):
    assert sync_online(services, force=True) == "materialized"
    assert sync_online(services) == "up-to-date"
    ids = user_ids(materialized, 25)
    with api_client(materialized.settings) as c:
        embedded = c.post("/v1/models/game_ltv/predict", json={"entities": {"user_id": ids}}).json()
    with api_client(services) as c:
        assert c.get("/readyz").status_code == 200
        r = c.post("/v1/models/game_ltv/predict", json={"entities": {"user_id": ids}})
        assert r.status_code == 200, r.text
    got = [p["prediction"] for p in r.json()["predictions"]]
    np.testing.assert_allclose(got, [p["prediction"] for p in embedded["predictions"]], rtol=1e-12)
    with pg_connect(services.database_url) as conn:
        n = conn.execute(f'SELECT count(*) FROM "{services.database_schema}".prediction_log').fetchone()[0]
    assert n == len(ids)


def test_redis_outage_gives_503_and_the_service_recovers_by_itself(services, materialized):
    u = make_url(services.redis_url.replace("redis://", "postgresql://"))  # only to parse host/port
    proxy = TcpProxy(u.host or "127.0.0.1", u.port or 6379).start()
    settings = services.model_copy(update={"redis_url": f"redis://127.0.0.1:{proxy.port}/{u.database or 0}"})
    uid = user_ids(materialized, 1)
    body = {"entities": {"user_id": uid}}
    try:
        with api_client(settings) as c:
            assert c.post("/v1/models/game_ltv/predict", json=body).status_code == 200
            proxy.stop()
            r = c.post("/v1/models/game_ltv/predict", json=body)
            assert r.status_code == 503 and "online store unreachable" in r.json()["detail"]
            assert c.get("/readyz").status_code == 503
            proxy.start()
            deadline, status = time.monotonic() + 10, None
            while time.monotonic() < deadline and status != 200:
                status = c.post("/v1/models/game_ltv/predict", json=body).status_code
                time.sleep(0.1)
            assert status == 200
            assert c.get("/readyz").status_code == 200
    finally:
        proxy.stop()


def test_no_prediction_is_lost_across_a_request_log_outage(services, materialized):
    u = make_url(services.database_url)
    proxy = TcpProxy(u.host or "127.0.0.1", u.port or 5432).start()
    log_url = u.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = services.model_copy(
        update={
            "request_log_url": log_url,
            "database_schema": services.database_schema + "_log",
            "redis_url": services.redis_url,
        }
    )
    sync_online(services)
    ids = user_ids(materialized, 5)
    n = 0
    try:
        with api_client(settings) as c:
            for i in range(30):
                if i == 10:
                    proxy.stop()  # database outage in the middle
                if i == 20:
                    proxy.start()
                r = c.post("/v1/models/game_ltv/predict", json={"entities": {"user_id": [ids[i % 5]]}})
                assert r.status_code == 200, r.text
                n += 1
        with psycopg.connect(
            host=u.host or "127.0.0.1", port=u.port or 5432, dbname=u.database, user=u.username or "postgres"
        ) as conn:
            rows = conn.execute(
                f'SELECT count(*), count(DISTINCT request_id) FROM "{settings.database_schema}".prediction_log'
            ).fetchone()
        assert rows == (n, n)
    finally:
        proxy.stop()
        with pg_connect(services.database_url) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" CASCADE')
            conn.commit()
