"""Redis + PostgreSQL settings shared by the integration tests: own Feast project and schema, removed after."""

from __future__ import annotations

import uuid

import pytest

from core.feature_store import open_store
from core.online_receipt import teardown
from pipelines.common.offline_tables import pg_connect
from tests.conftest import env_or_skip


@pytest.fixture(scope="session")
def services(materialized, tmp_path_factory):
    redis_url = env_or_skip("REDIS_URL")
    database_url = env_or_skip("DATABASE_URL")
    tag = uuid.uuid4().hex[:10]
    tmp = tmp_path_factory.mktemp("services")
    settings = materialized.settings.model_copy(
        update={
            "redis_url": redis_url,
            "database_url": database_url,
            "database_schema": f"test_{tag}",
            "feast_project": f"it{tag}",
            "feast_registry": tmp / "registry.db",
            "request_log_url": None,
            "request_log_spool_dir": tmp / "spool",
            "data_dir": tmp,
        }
    )
    yield settings
    try:
        teardown(open_store(settings))  # deletes this project's keys and receipt from Redis
    finally:
        with pg_connect(database_url) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "test_{tag}" CASCADE')
            conn.execute(f'DROP SCHEMA IF EXISTS "test_{tag}_mlflow" CASCADE')
            conn.commit()
