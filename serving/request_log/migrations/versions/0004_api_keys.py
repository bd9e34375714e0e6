"""Add the api_key table (serving/auth) and prediction_log.key_id: every logged request names its key.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

A key's secret is stored only as its SHA-256 digest. Rows written before this revision, and the stream
worker's rows (no HTTP request), keep a NULL key_id.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def schema() -> str | None:
    return op.get_context().opts.get("request_log_schema")


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("actions", sa.JSON, nullable=False),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("rate_limit", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotated_from", sa.String(16), nullable=True),
        schema=schema(),
    )
    op.add_column("prediction_log", sa.Column("key_id", sa.String(16), nullable=True), schema=schema())


def downgrade() -> None:
    op.drop_column("prediction_log", "key_id", schema=schema())
    op.drop_table("api_key", schema=schema())
