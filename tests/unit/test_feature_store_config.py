import pytest

from core.feature_store import postgres_offline_config, raw_config, redis_connection_string, repo_config
from core.settings import Settings


def test_redis_url_to_feast_connection_string():
    assert redis_connection_string("redis://127.0.0.1:6379/0") == "127.0.0.1:6379,db=0"
    assert (
        redis_connection_string("rediss://:s3cret@cache:6380/2") == "cache:6380,db=2,password=s3cret,ssl=true"
    )
    with pytest.raises(ValueError, match="must start with redis://"):
        redis_connection_string("http://x")


def test_a_redis_cluster_node_url_to_feasts_cluster_config():
    assert redis_connection_string("redis://:pw@node1:7000/0", cluster=True) == "node1:7000,password=pw"
    with pytest.raises(ValueError, match="database 0 only"):
        redis_connection_string("redis://node1:7000/3", cluster=True)
    online = raw_config(Settings(redis_url="redis://node1:7000", redis_cluster=True, database_url=None))[
        "online_store"
    ]
    assert online == {"type": "redis", "redis_type": "redis_cluster", "connection_string": "node1:7000"}
    assert repo_config(
        Settings(redis_url="redis://node1:7000", redis_cluster=True)
    ).online_store.redis_type == ("redis_cluster")
    assert (
        "redis_type"
        not in raw_config(Settings(redis_url="redis://node1:7000", database_url=None))["online_store"]
    )


def test_postgres_offline_config_from_database_url():
    c = postgres_offline_config("postgresql+psycopg://alice:pw@db:5433/feats", "sch")
    assert (c["host"], c["port"], c["database"], c["user"], c["password"], c["db_schema"]) == (
        "db",
        5433,
        "feats",
        "alice",
        "pw",
        "sch",
    )


def test_embedded_default_and_environment_overrides(tmp_path):
    base = Settings(redis_url=None, database_url=None)
    raw = raw_config(base)
    assert raw["online_store"]["type"] == "sqlite" and raw["offline_store"]["type"] == "duckdb"
    assert raw["registry"].endswith("data/feast/registry.db")
    over = Settings(
        redis_url="redis://127.0.0.1:6379/1",
        database_url="postgresql://postgres@127.0.0.1/postgres",
        feast_project="p1",
        feast_registry=tmp_path / "r.db",
    )
    cfg = repo_config(over)
    assert cfg.project == "p1" and cfg.online_store.type == "redis" and cfg.offline_store.type == "postgres"
    assert cfg.registry.path == str(tmp_path / "r.db")


def test_spark_master_selects_feasts_spark_offline_store_and_compute_engine(tmp_path):
    s = Settings(
        redis_url=None,
        database_url="postgresql://postgres@127.0.0.1/postgres",  # the request log's; Spark reads the files
        spark_master="local[2]",
        spark_conf={"spark.driver.memory": "8g", "spark.sql.shuffle.partitions": "4"},
    )
    assert s.offline_store == "spark"
    cfg = repo_config(s)
    assert cfg.offline_store.type == "spark" and cfg.batch_engine.type == "spark.engine"
    for conf in (cfg.offline_store.spark_conf, cfg.batch_engine.spark_conf):
        assert conf["spark.master"] == "local[2]" and conf["spark.sql.session.timeZone"] == "UTC"
        assert conf["spark.driver.memory"] == "8g" and conf["spark.sql.shuffle.partitions"] == "4"
        assert conf["spark.driver.maxResultSize"] == "0"  # a training set larger than 1g can be collected
    assert "batch_engine" not in raw_config(Settings(redis_url=None, database_url=None))


def test_spark_sources_read_the_same_parquet_files(tmp_path):
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    from core.feature_store import parse_definitions

    def sources(**over):
        repo = parse_definitions(Settings(redis_url=None, database_url=None, features_dir=tmp_path, **over))
        return {s.name: s for s in repo.data_sources if s.name.startswith("game_ltv__")}

    files, spark = sources(), sources(spark_master="local[1]")
    assert files.keys() == spark.keys() and files
    for name, src in spark.items():
        assert isinstance(src, SparkSource) and src.file_format == "parquet"
        assert src.path == files[name].path and src.timestamp_field == files[name].timestamp_field
