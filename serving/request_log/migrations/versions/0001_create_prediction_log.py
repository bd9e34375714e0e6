"""Create prediction_log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

The target schema is chosen at run time (see env.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def schema() -> str | None:
    return op.get_context().opts.get("request_log_schema")


def upgrade() -> None:
    op.create_table(
        "prediction_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("model", sa.String(100), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("entity_key", sa.JSON(), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("prediction", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema(),
    )
    op.create_index("ix_prediction_log_request_id", "prediction_log", ["request_id"], schema=schema())
    op.create_index("ix_prediction_log_created_at", "prediction_log", ["created_at"], schema=schema())


def downgrade() -> None:
    op.drop_index("ix_prediction_log_created_at", table_name="prediction_log", schema=schema())
    op.drop_index("ix_prediction_log_request_id", table_name="prediction_log", schema=schema())
    op.drop_table("prediction_log", schema=schema())
