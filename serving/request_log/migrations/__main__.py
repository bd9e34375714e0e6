"""Bring every database the services use to its current schema, once, before they start.

    python -m serving.request_log.migrations

The request-log and API-key tables (Alembic, `migrate`) at REQUEST_LOG_URL / DATABASE_URL, and the model
registry's own tables (MLflow creates them when a client first opens the store). The API and the stream
worker do the same at start-up and are safe to run concurrently; running it first as a one-shot job (the
compose stack's `migrate`, the Kubernetes Job) keeps a schema change out of the replicas' start-up path and
spares two workers racing to create MLflow's tables on a fresh database.
"""

from __future__ import annotations

import logging

from core import model_registry
from core.cli import configure_logging
from core.settings import Settings
from serving.request_log.migrations import migrate

log = logging.getLogger("serving.migrate")


def main() -> None:
    configure_logging()
    settings = Settings()
    migrate(settings.effective_request_log_url, settings.request_log_schema)
    log.info("request log and API keys: at head (%s)", settings.request_log_schema or "default schema")
    names = model_registry.registered_names(settings)  # opens the store: MLflow creates or upgrades it
    log.info("model registry: ready, %d registered model(s)", len(names))


if __name__ == "__main__":
    main()
