"""The model registry: MLflow's, for every model the platform trains.

What lives where:
- a *registered model* per platform model (its name), each *model version* pointing at the run's
  ``bundle`` artifact: the very folder `core.model_bundle` writes (``metadata.json`` + ``model.cbm``), so
  serving loads a registry version exactly as it loads a folder;
- model-version tags: ``bundle_version`` (the content hash in metadata.json: the same training inputs give
  the same hash, which makes registration idempotent), ``feature_service``, ``feature_service_version``,
  ``training_data_hash``, ``git_commit``, and the gate's decision (``gate``, ``gate_reason``);
- aliases (MLflow's own mechanism): ``champion`` is what the API serves, ``challenger`` a candidate that
  did not pass the gate; the registered model's tag ``champion_history`` (JSON list of versions) is what
  `rollback` walks back.

Store: SQLite under data/mlflow by default, the PostgreSQL database of DATABASE_URL when set (MLflow's own
tables, schema ``<DATABASE_SCHEMA>_mlflow``), or any store named by MLFLOW_TRACKING_URI; artifacts on the
local disk (Settings.effective_mlflow_artifacts_dir). `mlflow ui
--backend-store-uri <that URI>` browses it (docs/lifecycle.md).

This module is what serving needs (read the champion, fetch its bundle) plus the alias moves; logging runs
and the gate are pipelines/lifecycle.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from core.model_bundle import METADATA_FILE
from core.settings import Settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
BUNDLE_ARTIFACT = "bundle"
HISTORY_TAG = "champion_history"


@dataclass(frozen=True)
class Served:
    """Which registry version a loaded model is: shown by GET /v1/models/{name}, stored in the request log."""

    name: str
    version: str  # MLflow's model version number
    run_id: str
    alias: str
    bundle_version: str
    feature_service: str

    def as_dict(self) -> dict[str, str]:
        return {
            "registry_version": self.version,
            "run_id": self.run_id,
            "alias": self.alias,
            "bundle_version": self.bundle_version,
            "feature_service": self.feature_service,
        }


@cache
def _client_for(uri: str) -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per bundle in the logs
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    schema = re.search(r"options=-csearch_path%3D(\w+)", uri)
    if uri.startswith("postgresql") and schema:  # MLflow does not create the schema its path names
        from sqlalchemy import create_engine, text

        engine = create_engine(uri.split("?", 1)[0])
        try:
            with engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema.group(1)}"'))
        finally:
            engine.dispose()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def client(settings: Settings) -> Any:
    """An MlflowClient on the settings' store (one per store and process: creating one runs MLflow's
    schema check)."""
    return _client_for(settings.effective_mlflow_uri)


def _not_found(e: Exception) -> bool:
    code = getattr(e, "error_code", "")
    return code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"} or "not found" in str(e).lower()


def store_exists(settings: Settings) -> bool:
    """False for an SQLite store whose file is not there yet (nothing registered; opening would create it)."""
    uri = settings.effective_mlflow_uri
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


def registered_names(settings: Settings) -> list[str]:
    return sorted(m.name for m in client(settings).search_registered_models(max_results=1000))


def version_by_alias(settings: Settings, name: str, alias: str = CHAMPION) -> Any | None:
    """The ModelVersion the alias points at, or None (no such model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if _not_found(e):
            return None
        raise


def served(mv: Any, alias: str) -> Served:
    t = mv.tags or {}
    return Served(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or "",
        alias=alias,
        bundle_version=t.get("bundle_version", ""),
        feature_service=t.get("feature_service", ""),
    )


def fetch_bundle(settings: Settings, mv: Any) -> Path:
    """A local folder holding the version's bundle (downloaded once into Settings.model_cache_dir)."""
    import mlflow.artifacts

    dest = settings.model_cache_dir / mv.name / str(mv.version)
    if (dest / METADATA_FILE).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{mv.version}-", dir=dest.parent))
    try:
        got = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=mv.source, dst_path=str(tmp), tracking_uri=settings.effective_mlflow_uri
            )
        )
        if not (got / METADATA_FILE).exists():
            raise FileNotFoundError(
                f"model {mv.name} version {mv.version}: no {METADATA_FILE} at {mv.source}"
            )
        try:
            got.rename(dest)  # atomic: another process may have won the race, then use its copy
        except OSError:
            if not (dest / METADATA_FILE).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def history(settings: Settings, name: str) -> list[str]:
    rm = client(settings).get_registered_model(name)
    return json.loads((rm.tags or {}).get(HISTORY_TAG, "[]"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def promote(settings: Settings, name: str, version: str, reason: str) -> None:
    """Make `version` the champion (the API picks it up at its next poll) and remember the order."""
    c = client(settings)
    current = version_by_alias(settings, name, CHAMPION)
    if current is not None and str(current.version) == str(version):
        return
    hist = history(settings, name)
    if not hist and current is not None:
        hist = [str(current.version)]
    hist.append(str(version))
    c.set_registered_model_alias(name, CHAMPION, str(version))
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(hist))
    challenger = version_by_alias(settings, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(version):
        c.delete_registered_model_alias(name, CHALLENGER)
    c.set_model_version_tag(name, str(version), "promoted_at", _now())
    c.set_model_version_tag(name, str(version), "gate_reason", reason)
    log.info("%s: version %s is the champion (%s)", name, version, reason)


def keep_as_challenger(settings: Settings, name: str, version: str, reason: str) -> None:
    c = client(settings)
    c.set_registered_model_alias(name, CHALLENGER, str(version))
    c.set_model_version_tag(name, str(version), "gate", "rejected")
    c.set_model_version_tag(name, str(version), "gate_reason", reason)
    log.info("%s: version %s stays a challenger (%s)", name, version, reason)


def rollback(settings: Settings, name: str) -> tuple[str, str]:
    """Point `champion` back at the version that held it before the current one: (from, to)."""
    c = client(settings)
    hist = history(settings, name)
    current = version_by_alias(settings, name, CHAMPION)
    if current is None:
        raise ValueError(f"model {name!r} has no champion to roll back")
    if len(hist) < 2 or hist[-1] != str(current.version):
        raise ValueError(
            f"model {name!r}: no earlier champion recorded before version {current.version} (history {hist})"
        )
    frm, to = hist.pop(), hist[-1]
    c.set_registered_model_alias(name, CHAMPION, to)
    c.set_registered_model_tag(name, HISTORY_TAG, json.dumps(hist))
    c.set_model_version_tag(name, frm, "rolled_back_at", _now())
    log.info("%s: champion rolled back from version %s to %s", name, frm, to)
    return frm, to


def champion_folder(settings: Settings, name: str) -> tuple[Path | None, Served | None]:
    """Where the model `name` that serving should use lives: its champion's bundle (and which version that
    is) when the registry has one, else (None, None): the caller falls back to models/<name>/. For the
    processes that load one model once (the batch job, the stream worker); the API polls (serving/models.py)."""
    if not store_exists(settings):
        return None, None
    mv = version_by_alias(settings, name, CHAMPION)
    if mv is None:
        return None, None
    return fetch_bundle(settings, mv), served(mv, CHAMPION)
