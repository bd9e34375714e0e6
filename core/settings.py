"""The platform's settings: the only place that reads the environment.

Embedded defaults (SQLite online store, Parquet offline store, SQLite request log) need no variable at all.
Setting ``REDIS_URL`` moves the online store to Redis; setting ``DATABASE_URL`` to a PostgreSQL URL moves
the request log and the Feast offline store to PostgreSQL (schema ``DATABASE_SCHEMA``); setting
``SPARK_MASTER`` runs training sets and materialization on Spark (docs/scaling.md); setting ``AMQP_URL``
connects the stream worker to RabbitMQ. The model registry (MLflow) follows DATABASE_URL unless
``MLFLOW_TRACKING_URI`` names another store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    # --- external services (unset = embedded default) ---
    redis_url: str | None = Field(
        default=None, description="Redis online store, e.g. redis://127.0.0.1:6379/0"
    )
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL names a node of a Redis Cluster (Feast's redis_type: redis_cluster): keys "
        "spread over its slots, reads and writes grouped per node; database 0 only",
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL for the request log and the Feast offline store, "
        "e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    )
    database_schema: str = Field(default="featureplat", description="PostgreSQL schema of all our tables")
    spark_master: str | None = Field(
        default=None,
        description="Spark master URL, e.g. local[2] or spark://host:7077: training sets through Feast's Spark "
        "offline store and materialization through its Spark compute engine (docs/scaling.md); unset: "
        "Feast's DuckDB offline store and the fast materializer, in the job's own process",
    )
    spark_conf: dict[str, str] = Field(
        default={},
        description="more Spark settings, as JSON, over the defaults of core/feature_store.py, e.g. "
        '{"spark.driver.memory": "16g"}',
    )

    # --- feature store ---
    feature_repo: Path = ROOT / "feature_repo"
    features_dir: Path = Field(default=ROOT / "data" / "features", description="Parquet feature tables")
    feast_project: str | None = Field(default=None, description="Override the Feast project name")
    feast_registry: Path | None = Field(default=None, description="Override the Feast registry file")
    feast_sqlite_path: Path | None = Field(default=None, description="Override the SQLite online store file")

    # --- models and serving ---
    models_dir: Path = ROOT / "models"
    specs_dir: Path = Field(
        default=ROOT / "specs", description="model specs (core/spec.py), one YAML per model"
    )
    data_dir: Path = ROOT / "data"
    request_log_url: str | None = Field(
        default=None, description="Request-log database; default DATABASE_URL, else SQLite in data/"
    )
    request_log_batch_size: int = 500
    request_log_flush_interval_s: float = 0.25
    request_log_max_buffer: int = 20_000
    request_log_spool_dir: Path | None = None

    # --- model registry (core/model_registry.py) ---
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking and registry store; default: DATABASE_URL (PostgreSQL, schema "
        "<DATABASE_SCHEMA>_mlflow) when set, else SQLite at data/mlflow/mlflow.db",
    )
    mlflow_artifacts_dir: Path | None = Field(
        default=None, description="MLflow run artifacts (local disk); default data/mlflow/artifacts"
    )
    model_poll_s: float = Field(
        default=10.0,
        ge=0,
        description="how often the API asks the registry for a new champion (0: only at start)",
    )

    # --- API keys, rate limits, browsers (serving/auth; docs/security.md) ---
    api_auth: bool = Field(
        default=True,
        description="require an API key on every route but /healthz and /readyz; false only to measure the "
        "check's cost (the API logs a warning)",
    )
    api_key_cache_s: float = Field(
        default=5.0, ge=0, description="how long a worker trusts a looked-up key (a revocation's delay)"
    )
    api_key_stale_s: float = Field(
        default=300.0,
        ge=0,
        description="while the key database is down, keys verified this recently still work",
    )
    api_rate_limit: str = Field(
        default="100/second",
        description="each key's rate limit unless the key has its own ('limits' notation)",
    )
    rate_limit_storage: str = Field(
        default="async+memory://",
        description="where rate-limit counters live: per process (default) or shared, e.g. async+redis://host:6379",
    )
    cors_origins: list[str] = Field(
        default=[], description='browser origins allowed to call the API (CORS), e.g. ["https://app.example"]'
    )

    # --- streaming (serving/stream: the purchase_propensity worker and producer) ---
    amqp_url: str | None = Field(
        default=None, description="RabbitMQ, e.g. amqp://guest:guest@127.0.0.1:5672/; unset: in-process queue"
    )
    stream_events_queue: str = Field(default="purchase_propensity.page_views", description="page views in")
    stream_predictions_queue: str = Field(default="purchase_propensity.predictions", description="scores out")
    stream_dead_letter_queue: str = Field(
        default="purchase_propensity.page_views.dead", description="rejected page views, with the reason"
    )
    stream_max_batch: int = Field(default=256, description="most messages the worker handles at once")
    stream_prefetch: int = Field(
        default=2000, description="unacknowledged messages the broker may send ahead"
    )
    stream_pipeline_depth: int = Field(
        default=8,
        ge=1,
        description="processed batches that may wait for their confirms and commit while the next is processed",
    )
    stream_finish_linger_ms: float = Field(
        default=5.0,
        ge=0,
        description="how long the worker lets processed batches gather before one commit and ack for all of "
        "them (predictions are published before; fewer commits cost less CPU per event)",
    )
    stream_session_ttl_s: int = Field(default=6 * 3600, description="how long a session's events are kept")
    stream_metrics_port: int | None = Field(
        default=None, description="port of the worker's Prometheus metrics (unset: not served)"
    )
    stream_metrics_addr: str = Field(default="127.0.0.1", description="address the worker's metrics bind to")
    stream_crash_before_ack: int | None = Field(
        default=None,
        description="fault injection for tests: exit abruptly after the Nth batch's work, before its ack",
    )

    @field_validator("database_url", "request_log_url")
    @classmethod
    def _psycopg3(cls, v: str | None) -> str | None:
        """postgres:// and postgresql:// mean the installed driver, psycopg 3."""
        if v and v.split("://", 1)[0] in {"postgres", "postgresql"}:
            return "postgresql+psycopg://" + v.split("://", 1)[1]
        return v

    @property
    def online_store(self) -> Literal["sqlite", "redis"]:
        return "redis" if self.redis_url else "sqlite"

    @property
    def offline_store(self) -> Literal["file", "postgres", "spark"]:
        """Spark (reading the Parquet tables) when SPARK_MASTER is set, whatever DATABASE_URL says (the
        request log and the registry still follow DATABASE_URL); else PostgreSQL or Parquet files."""
        if self.spark_master:
            return "spark"
        return "postgres" if self.database_url and self.database_url.startswith("postgres") else "file"

    @property
    def effective_request_log_url(self) -> str:
        if self.request_log_url:
            return self.request_log_url
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'request_log.db'}"

    @property
    def effective_mlflow_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if self.database_url and self.database_url.startswith("postgres"):
            sep = "&" if "?" in self.database_url else "?"
            return f"{self.database_url}{sep}options=-csearch_path%3D{self.mlflow_schema}"
        return f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_schema(self) -> str:
        """On PostgreSQL, MLflow's tables live in a schema of their own next to ours."""
        return f"{self.database_schema}_mlflow"

    @property
    def effective_mlflow_artifacts_dir(self) -> Path:
        return self.mlflow_artifacts_dir or self.data_dir / "mlflow" / "artifacts"

    @property
    def model_cache_dir(self) -> Path:
        """Where the API keeps the registry's model bundles it downloaded (one folder per version)."""
        return self.data_dir / "mlflow" / "serving_cache"

    @property
    def effective_spool_dir(self) -> Path:
        return self.request_log_spool_dir or self.data_dir / "request_log_spool"

    @property
    def request_log_schema(self) -> str | None:
        """Schema for the request-log tables: ours on PostgreSQL, none on SQLite."""
        return None if self.effective_request_log_url.startswith("sqlite") else self.database_schema


@lru_cache
def get_settings() -> Settings:
    return Settings()


_active: Settings | None = None


def active_settings() -> Settings:
    """Settings for code Feast imports (feature_repo/): the ones `core.feature_store` is applying, else env."""
    return _active or Settings()


@contextmanager
def activated(settings: Settings) -> Iterator[Settings]:
    global _active
    previous, _active = _active, settings
    try:
        yield settings
    finally:
        _active = previous
