"""reconciler: blocking keys, runs, proposals

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "patient_keys",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("patient_id", Id, nullable=False),
        sa.PrimaryKeyConstraint("key", "patient_id", name=op.f("pk_patient_keys")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_patient_keys_patient_id", "patient_keys", ["patient_id"])

    op.create_table(
        "reconcile_runs",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("finished_at", Time, nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("since", sa.String(length=8), nullable=False),
        sa.Column("orphans", sa.Integer(), nullable=False),
        sa.Column("pairs", sa.Integer(), nullable=False),
        sa.Column("proposals", sa.Integer(), nullable=False),
        sa.Column("keys_watermark", Id, nullable=True),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconcile_runs")),
    )
    op.create_table(
        "proposals",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_id", Id, nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("match_weight", sa.Float(), nullable=False),
        sa.Column("band", sa.String(length=10), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("run_id", Id, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_proposals_patient_id_patients")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["reconcile_runs.id"], name=op.f("fk_proposals_run_id_reconcile_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proposals")),
        sa.UniqueConstraint(
            "study_uid", "patient_id", name=op.f("uq_proposals_study_uid_patient_id")
        ),
    )
    op.create_index("ix_proposals_patient_id", "proposals", ["patient_id"])
    op.create_index("ix_proposals_status_probability", "proposals", ["status", "probability"])


def downgrade() -> None:
    op.drop_index("ix_proposals_status_probability", table_name="proposals")
    op.drop_index("ix_proposals_patient_id", table_name="proposals")

    op.drop_table("proposals")
    op.drop_table("reconcile_runs")
    op.drop_index("ix_patient_keys_patient_id", table_name="patient_keys")

    op.drop_table("patient_keys")
