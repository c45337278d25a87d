"""messages and deliveries keep MSH-3/4/5/6 and MSH-10 whole; duplicates found by a digest

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Before, MSH-10 was cut to 199 characters and MSH-3/4 to 227: two different messages sharing
the first 199 characters of MSH-10 were taken for copies, and a destination's ACK of a long
MSH-10 never matched its delivery. The columns become unbounded text (SQLite never bounded
them), the duplicate check looks messages up by ``dedup_key`` (a digest of the whole MSH-3,
MSH-4 and MSH-10; see ``engine.store.operations.duplicate_key``), and MSH-10 searches use an
index of their own (a hash index on PostgreSQL, whose B-trees refuse values over ~2.7 kB).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.store.operations import duplicate_key

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

WHOLE = {
    "messages": (
        "sending_application",
        "sending_facility",
        "receiving_application",
        "receiving_facility",
        "control_id",
    ),
    "deliveries": ("control_id",),
}
_POSTGRES_KEY = """
left(encode(sha256(convert_to(
    length(sending_application) || ':' || sending_application
    || length(sending_facility) || ':' || sending_facility || control_id, 'UTF8')), 'hex'), 32)
"""
"""``duplicate_key`` in SQL (the test of this migration compares the two)."""


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    for table, columns in WHOLE.items():
        # SQLite never enforced the lengths; it rewrites the table to change the declared type.
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.alter_column(column, type_=sa.Text(), existing_nullable=False)
    op.add_column(
        "messages", sa.Column("dedup_key", sa.String(32), nullable=False, server_default="")
    )
    if postgres:
        op.execute(f"UPDATE messages SET dedup_key = {_POSTGRES_KEY}")
    else:
        sqlite = bind.connection.driver_connection
        assert sqlite is not None
        sqlite.create_function("crosswalk_duplicate_key", 3, duplicate_key, deterministic=True)
        op.execute(
            "UPDATE messages SET dedup_key ="
            " crosswalk_duplicate_key(sending_application, sending_facility, control_id)"
        )
    op.drop_index("ix_messages_dedup", table_name="messages")
    op.create_index("ix_messages_dedup", "messages", ["dedup_key", "received_at"])
    op.create_index("ix_messages_control_id", "messages", ["control_id"], postgresql_using="hash")


def downgrade() -> None:
    op.drop_index("ix_messages_control_id", table_name="messages")
    op.drop_index("ix_messages_dedup", table_name="messages")
    op.create_index(
        "ix_messages_dedup",
        "messages",
        ["control_id", "sending_application", "sending_facility", "received_at"],
    )
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("dedup_key")
