"""Offline sources: Parquet files by default (read by Spark when SPARK_MASTER is set), PostgreSQL tables
when DATABASE_URL is PostgreSQL.

The choice follows core.settings (the only reader of the environment); the tables are the ones the
ingest stages write (and publish to PostgreSQL), named by pipelines.*.schema.
"""

from feast import FileSource, PushSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

from core.settings import active_settings
from domain.api_anomaly import schema as api_anomaly
from domain.customer_risk import feature_spec as customer_risk
from domain.purchase_propensity import features as purchase_propensity

_settings = active_settings()


def offline_source(model: str, table: str, timestamp_field: str):
    name = f"{model}__{table}"
    if _settings.offline_store == "postgres":
        return PostgreSQLSource(
            name=name, table=f"{_settings.database_schema}.{name}", timestamp_field=timestamp_field
        )
    path = str(_settings.features_dir / model / f"{table}.parquet")
    if _settings.offline_store == "spark":  # the same Parquet files, read by Spark
        return SparkSource(name=name, path=path, file_format="parquet", timestamp_field=timestamp_field)
    return FileSource(
        name=name,
        path=path,
        timestamp_field=timestamp_field,
    )


customer_profile_source = offline_source(
    "customer_risk", customer_risk.PROFILE_TABLE, customer_risk.EVENT_TIMESTAMP
)
customer_transactions_source = offline_source(
    "customer_risk", customer_risk.TRANSACTIONS_TABLE, customer_risk.EVENT_TIMESTAMP
)
segment_baseline_source = offline_source(
    "api_anomaly", api_anomaly.BASELINE_TABLE, api_anomaly.EVENT_TIMESTAMP
)
customer_purchases_source = offline_source(
    "purchase_propensity", purchase_propensity.PURCHASE_TABLE, purchase_propensity.EVENT_TIMESTAMP
)
# The stream worker pushes session features here (serving/stream); the batch source holds the same
# features after every recorded page view (pipelines/purchase_propensity/ingest.py), for training.
session_activity_push = PushSource(
    name=purchase_propensity.PUSH_SOURCE,
    batch_source=offline_source(
        "purchase_propensity", purchase_propensity.SESSION_TABLE, purchase_propensity.EVENT_TIMESTAMP
    ),
)
