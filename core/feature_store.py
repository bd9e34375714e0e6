"""Feast access for pipelines, serving and tests: `feature_store.yaml` plus the environment's overrides.

`feature_repo/feature_store.yaml` holds the embedded defaults and is what a plain `feast` command reads.
`repo_config(settings)` loads it the way Feast does (``${VAR}`` expansion included) and applies the
overrides the settings ask for: Redis online store (REDIS_URL), PostgreSQL offline store (DATABASE_URL),
Spark offline store and compute engine (SPARK_MASTER), project and file locations (tests). `python -m core.feast_cli` runs the feast CLI with the same result.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig
from sqlalchemy.engine import make_url

from core.settings import Settings, activated


def redis_connection_string(url: str, cluster: bool = False) -> str:
    """redis://[:password@]host[:port][/db] -> Feast's "host:port,db=N,password=...,ssl=true" (a cluster's
    startup node takes no db: a Redis Cluster has database 0 only)."""
    u = urlsplit(url)
    if u.scheme not in {"redis", "rediss"}:
        raise ValueError(f"REDIS_URL must start with redis:// or rediss://, got {url!r}")
    parts = [f"{u.hostname or '127.0.0.1'}:{u.port or 6379}"]
    db = (u.path or "/0").lstrip("/") or "0"
    if cluster and db != "0":
        raise ValueError(f"a Redis Cluster has database 0 only; REDIS_URL asks for {db}: {url!r}")
    if not cluster:
        parts.append(f"db={db}")
    if u.password:
        parts.append(f"password={unquote(u.password)}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def postgres_offline_config(url: str, schema: str) -> dict[str, Any]:
    u = make_url(url)
    if not u.drivername.startswith("postgres"):
        raise ValueError(f"DATABASE_URL is not PostgreSQL: {u.drivername}")
    return {
        "type": "postgres",
        "host": u.host or "127.0.0.1",
        "port": u.port or 5432,
        "database": u.database or "postgres",
        "db_schema": schema,
        "user": u.username or "postgres",
        "password": u.password or "",
        "sslmode": str(u.query.get("sslmode", "prefer")),
    }


def raw_config(settings: Settings) -> dict[str, Any]:
    """The effective feature_store.yaml content as a dict (paths made absolute)."""
    repo = settings.feature_repo
    with open(repo / "feature_store.yaml") as f:
        raw: dict[str, Any] = yaml.safe_load(os.path.expandvars(f.read()))

    def absolute(p: str | Path) -> str:
        return str(p if Path(p).is_absolute() else (repo / p).resolve())

    if settings.feast_project:
        raw["project"] = settings.feast_project
    registry = raw.get("registry")
    if isinstance(registry, str):
        raw["registry"] = absolute(settings.feast_registry or registry)
    elif isinstance(registry, dict) and registry.get("registry_type", "file") == "file":
        registry["path"] = absolute(settings.feast_registry or registry["path"])
    if settings.redis_url:
        raw["online_store"] = {
            "type": "redis",
            "connection_string": redis_connection_string(settings.redis_url, settings.redis_cluster),
        }
        if settings.redis_cluster:
            raw["online_store"]["redis_type"] = "redis_cluster"
    elif raw.get("online_store", {}).get("type") == "sqlite":
        raw["online_store"]["path"] = absolute(settings.feast_sqlite_path or raw["online_store"]["path"])
    if settings.offline_store == "spark":
        conf = spark_conf(settings)
        raw["offline_store"] = {"type": "spark", "spark_conf": conf}
        raw["batch_engine"] = {"type": "spark.engine", "spark_conf": conf}
    elif settings.offline_store == "postgres":
        assert settings.database_url
        raw["offline_store"] = postgres_offline_config(settings.database_url, settings.database_schema)
    return raw


SPARK_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",  # Feast's point-in-time SQL compares UTC timestamps
    "spark.sql.execution.arrow.pyspark.enabled": "true",  # entity frames in and training sets out via Arrow
    "spark.driver.memory": "4g",  # the training set is collected on the driver (JVM default: 1g)
    # ... so the driver's memory is the bound, not Spark's 1g cap on collected results, which aborts
    # a 10M-user training set ("Total size of serialized results ... bigger than maxResultSize")
    "spark.driver.maxResultSize": "0",
}


def spark_conf(settings: Settings) -> dict[str, str]:
    """The Spark session's settings: SPARK_MASTER, the defaults above, then SPARK_CONF's."""
    assert settings.spark_master
    return {"spark.master": settings.spark_master, **SPARK_DEFAULTS, **settings.spark_conf}


def repo_config(settings: Settings) -> RepoConfig:
    config = RepoConfig(**raw_config(settings))
    config.repo_path = settings.feature_repo
    return config


def open_store(settings: Settings) -> FeatureStore:
    config = repo_config(settings)
    Path(config.registry.path).parent.mkdir(parents=True, exist_ok=True)
    if config.online_store.type == "sqlite":
        Path(config.online_store.path).parent.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(settings.feature_repo), config=config)


def apply_definitions(store: FeatureStore, settings: Settings) -> None:
    """What `feast apply` does: register every object of feature_repo/ and delete the ones removed."""
    from feast.repo_operations import apply_total_with_repo_instance

    repo = parse_definitions(settings)
    apply_total_with_repo_instance(
        store, store.config.project, store.registry, repo, skip_source_validation=True
    )


def parse_definitions(settings: Settings):
    """Import feature_repo/ afresh (so sources follow `settings`) and return Feast's RepoContents."""
    from feast.project import Project
    from feast.repo_operations import get_repo_files, parse_repo

    repo_path = Path(settings.feature_repo).resolve()
    sys.path.insert(0, str(repo_path))
    cwd = os.getcwd()
    try:
        os.chdir(repo_path)
        for f in get_repo_files(repo_path):
            module = ".".join(f.relative_to(repo_path).with_suffix("").parts)
            for name in [module, module.split(".")[0]]:
                sys.modules.pop(name, None)
        with activated(settings):
            repo = parse_repo(repo_path)
        if not repo.projects:
            repo.projects.append(Project(name=repo_config(settings).project, description=""))
        return repo
    finally:
        os.chdir(cwd)
        sys.path.remove(str(repo_path))
