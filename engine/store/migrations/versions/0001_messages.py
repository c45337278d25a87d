"""messages: every received HL7 message, as received, with the ACK sent back

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("listener", sa.String(64), nullable=False),
        sa.Column("peer", sa.String(128), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("charset", sa.String(32), nullable=True),
        sa.Column("sending_application", sa.String(227), nullable=False),
        sa.Column("sending_facility", sa.String(227), nullable=False),
        sa.Column("receiving_application", sa.String(227), nullable=False),
        sa.Column("receiving_facility", sa.String(227), nullable=False),
        sa.Column("message_datetime", sa.String(32), nullable=False),
        sa.Column("message_type", sa.String(64), nullable=False),
        sa.Column("message_code", sa.String(8), nullable=False),
        sa.Column("trigger_event", sa.String(8), nullable=False),
        sa.Column("control_id", sa.String(199), nullable=False),
        sa.Column("processing_id", sa.String(8), nullable=False),
        sa.Column("version_id", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=False),
        sa.Column("duplicate_of", Id, nullable=True),
        sa.Column("ack_code", sa.String(8), nullable=False),
        sa.Column("ack", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["duplicate_of"], ["messages.id"], name="fk_messages_duplicate_of_messages"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index("ix_messages_received_at", "messages", ["received_at"])
    op.create_index(
        "ix_messages_dedup",
        "messages",
        ["control_id", "sending_application", "sending_facility", "received_at"],
    )
    op.create_index(
        "ix_messages_message_code_trigger_event", "messages", ["message_code", "trigger_event"]
    )
    op.create_index("ix_messages_status_id", "messages", ["status", "id"])


def downgrade() -> None:
    op.drop_table("messages")
