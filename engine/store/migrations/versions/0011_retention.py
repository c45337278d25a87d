"""retention: where pruning got to, and the indexes that let it drop a message's references

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# What refers to a message: pruning its metadata clears these references (or keeps the
# message), which without an index would read the whole table each batch.
REFERENCES = (
    ("ix_messages_duplicate_of", "messages", "duplicate_of"),
    ("ix_patient_events_message_id", "patient_events", "message_id"),
    ("ix_orders_message_id", "orders", "message_id"),
    ("ix_review_decisions_message_id", "review_decisions", "message_id"),
)


def upgrade() -> None:
    op.create_table(
        "retention_progress",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("after_id", Id, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_retention_progress")),
    )
    for name, table, column in REFERENCES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _column in REFERENCES:
        op.drop_index(name, table_name=table)
    op.drop_table("retention_progress")
