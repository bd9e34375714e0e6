"""Add prediction_log.registry_version, run_id and feature_service: every logged prediction traces to the
model registry's version, the run that trained it and the FeatureService its features came through.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Rows written before this revision, and predictions of a model served from its folder, keep NULLs.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("registry_version", 20), ("run_id", 64), ("feature_service", 100))


def schema() -> str | None:
    return op.get_context().opts.get("request_log_schema")


def upgrade() -> None:
    for name, length in COLUMNS:
        op.add_column("prediction_log", sa.Column(name, sa.String(length), nullable=True), schema=schema())


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("prediction_log", name, schema=schema())
