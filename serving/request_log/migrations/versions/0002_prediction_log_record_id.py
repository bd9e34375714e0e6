"""Add prediction_log.record_id: one unique id per logged prediction, so a batch written twice is not
stored twice (the writer inserts with ON CONFLICT DO NOTHING on it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

Rows written before this revision keep a NULL record_id (a unique index allows any number of NULLs).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def schema() -> str | None:
    return op.get_context().opts.get("request_log_schema")


def upgrade() -> None:
    op.add_column("prediction_log", sa.Column("record_id", sa.String(36), nullable=True), schema=schema())
    op.create_index(
        "ux_prediction_log_record_id", "prediction_log", ["record_id"], unique=True, schema=schema()
    )


def downgrade() -> None:
    op.drop_index("ux_prediction_log_record_id", table_name="prediction_log", schema=schema())
    op.drop_column("prediction_log", "record_id", schema=schema())
