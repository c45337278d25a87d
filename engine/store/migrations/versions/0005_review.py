"""review: the decisions audit trail; one approved proposal per study

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)
APPROVED = sa.text("status = 'approved'")


def upgrade() -> None:
    op.create_table(
        "review_decisions",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("proposal_id", Id, nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_id", Id, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("previous_status", sa.String(length=12), nullable=False),
        sa.Column("reviewer", sa.String(length=100), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("decided_at", Time, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("snapshot", sa.Text(), nullable=False),
        sa.Column("message_id", Id, nullable=True),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["proposals.id"],
            name=op.f("fk_review_decisions_proposal_id_proposals"),
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_review_decisions_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_decisions")),
    )
    op.create_index("ix_review_decisions_proposal_id", "review_decisions", ["proposal_id"])
    op.create_index("ix_review_decisions_decided_at", "review_decisions", ["decided_at"])
    # One orphan, one patient: a second approval for the same study cannot be stored.
    op.create_index(
        "uq_proposals_approved_study",
        "proposals",
        ["study_uid"],
        unique=True,
        sqlite_where=APPROVED,
        postgresql_where=APPROVED,
    )


def downgrade() -> None:
    op.drop_index("uq_proposals_approved_study", table_name="proposals")
    op.drop_index("ix_review_decisions_decided_at", table_name="review_decisions")
    op.drop_index("ix_review_decisions_proposal_id", table_name="review_decisions")
    op.drop_table("review_decisions")
