"""patient keys by patient: the blocking keys clustered on the patient, indexed by key

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04

A first reconcile run appends every patient's keys in patient order and builds the index by
key once, instead of inserting millions of keys in key order and then indexing the patients.
The keys are not copied: the reconciler's keys version 4 makes the next run rebuild them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _create(columns: tuple[str, str], index: str, indexed: list[str]) -> None:
    def column(name: str) -> sa.Column[int] | sa.Column[str]:
        if name == "patient_id":
            return sa.Column(name, Id, nullable=False)
        return sa.Column(name, sa.String(length=64), nullable=False)

    op.create_table(
        "patient_keys",
        *(column(name) for name in columns),
        sa.PrimaryKeyConstraint(*columns, name=op.f("pk_patient_keys")),
        sqlite_with_rowid=False,
    )
    op.create_index(index, "patient_keys", indexed)


def upgrade() -> None:
    op.drop_index("ix_patient_keys_patient_id", table_name="patient_keys")
    op.drop_table("patient_keys")
    _create(("patient_id", "key"), "ix_patient_keys_key", ["key", "patient_id"])


def downgrade() -> None:
    op.drop_index("ix_patient_keys_key", table_name="patient_keys")
    op.drop_table("patient_keys")
    _create(("key", "patient_id"), "ix_patient_keys_patient_id", ["patient_id"])
