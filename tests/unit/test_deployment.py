"""docker-compose.yml, the Dockerfile and CI must agree with the settings the code reads (no Docker here)."""

from __future__ import annotations

import re

import yaml
from sqlalchemy.engine import make_url

from core.settings import ROOT, Settings

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def _port(service: str) -> int:
    (mapping,) = COMPOSE["services"][service]["ports"]
    host, container = mapping.split(":")
    assert host == container
    return int(container)


def test_services_and_ports():
    assert set(COMPOSE["services"]) == {"redis", "postgres", "api"}
    assert _port("redis") == 6379 and _port("postgres") == 5432 and _port("api") == 8000
    assert "EXPOSE 8000" in DOCKERFILE and '"--port", "8000"' in DOCKERFILE


def test_api_environment_names_are_settings_fields_and_parse():
    env = COMPOSE["services"]["api"]["environment"]
    fields = {name.upper() for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    s = Settings(**{k.lower(): v for k, v in env.items()})
    assert s.online_store == "redis" and s.offline_store == "postgres"
    redis = re.match(r"redis://(\w+):(\d+)/", env["REDIS_URL"])
    assert redis and redis.group(1) == "redis" and int(redis.group(2)) == _port("redis")
    db = make_url(env["DATABASE_URL"])
    pg_env = COMPOSE["services"]["postgres"]["environment"]
    assert db.host == "postgres" and db.port == _port("postgres")
    assert db.username == pg_env["POSTGRES_USER"] and db.database == pg_env["POSTGRES_DB"]


def test_ci_selects_the_same_services_by_the_same_variables():
    for name in ("REDIS_URL", "DATABASE_URL"):
        assert f"export {name}=" in CI
    ci_db = make_url(re.search(r'DATABASE_URL:-([^}"]+)', CI).group(1))
    compose_db = make_url(COMPOSE["services"]["api"]["environment"]["DATABASE_URL"])
    assert (ci_db.drivername, ci_db.port, ci_db.username, ci_db.database) == (
        compose_db.drivername,
        compose_db.port,
        compose_db.username,
        compose_db.database,
    )
    assert re.search(r"REDIS_URL:-redis://127\.0\.0\.1:6379/", CI)
    assert "make test" in CI


def test_image_carries_every_package_the_service_imports_and_no_pipeline():
    for package in ("core", "domain", "serving", "feature_repo", "specs"):
        assert f"COPY {package} {package}" in DOCKERFILE
    assert "COPY pipelines" not in DOCKERFILE and "COPY synthetic" not in DOCKERFILE
    assert "requirements.txt" in DOCKERFILE


def test_postgres_urls_use_the_installed_driver():
    assert Settings(database_url="postgresql://u@h/db").database_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="postgres://u@h/db").database_url == "postgresql+psycopg://u@h/db"
