"""Point-in-time training sets from Feast, through a FeatureService (the model's contract)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from core.feature_store import apply_definitions, open_store
from core.settings import Settings
from pipelines.common.offline_tables import publish_tables

log = logging.getLogger(__name__)


def historical_features(settings: Settings, feature_service: str, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Features of `feature_service` as of each row's event_timestamp.

    Definitions are applied to a throw-away registry, so building a training set never changes the
    registry that serving reads (that is `feast apply`'s job).
    """
    if settings.offline_store == "postgres":
        model = feature_service.rsplit("_v", 1)[0]
        publish_tables(settings, model)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = settings.model_copy(
            update={
                "feast_registry": Path(tmp) / "registry.db",
                "feast_sqlite_path": Path(tmp) / "online.db",
                "redis_url": None,
            }
        )
        store = open_store(scratch)
        apply_definitions(store, scratch)
        service = store.get_feature_service(feature_service)
        job = store.get_historical_features(entity_df=entity_df, features=service)
        df = normalize_dtypes(job.to_df(), service)
    log.info("training set: %s rows x %s columns from %s", len(df), df.shape[1], feature_service)
    return df


PANDAS_DTYPES = {
    "String": "string",
    "Int64": "Int64",
    "Int32": "Int64",
    "Float64": "float64",
    "Float32": "float64",
    "Bool": "boolean",
}


def normalize_dtypes(df: pd.DataFrame, service) -> pd.DataFrame:
    """Same dtypes whichever offline store answered (Parquet/dask and PostgreSQL differ in timestamp
    units, time zones, and nullable ints), so the training set, its hash and the model version are too."""
    for proj in service.feature_view_projections:
        for f in proj.features:
            if f.name in df:
                df[f.name] = df[f.name].astype(PANDAS_DTYPES.get(str(f.dtype), "object"))
    for c in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[c]):
            df[c] = pd.to_datetime(df[c], utc=True).dt.as_unit("ns")
    return df


def feature_service_features(settings: Settings, feature_service: str) -> list[tuple[str, str]]:
    """Ordered (name, feast value type) of a FeatureService, read from the definitions."""
    from core.feature_store import parse_definitions

    repo = parse_definitions(settings)
    service = next(s for s in repo.feature_services if s.name == feature_service)
    out = []
    for proj in service.feature_view_projections:
        for f in proj.features:
            out.append((f.name, str(f.dtype)))
    return out
