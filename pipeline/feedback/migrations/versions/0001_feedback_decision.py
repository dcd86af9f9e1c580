"""The feedback store's first table: one row per review decision.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback_decision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset", sa.String(128), nullable=False),
        sa.Column("batch_id", sa.String(256), nullable=False),
        sa.Column("record_id", sa.String(256), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.CheckConstraint("label IN ('confirmed', 'dismissed')", name="ck_feedback_decision_label"),
    )
    op.create_index("ix_feedback_decision_alert", "feedback_decision", ["dataset", "batch_id", "record_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_feedback_decision_alert", table_name="feedback_decision")
    op.drop_table("feedback_decision")
