"""the MPI and the study index encrypted at rest: demographic columns hold ciphertext, look-ups
keyed hashes beside them

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

Names, birth dates, sex, address and phone become text without a length (AES-GCM ciphertext is
longer than the value); identifiers get an encrypted copy beside their keyed hash; patients and
their other names get the keyed hashes searches use. In a clear store the new columns stay NULL
and the values are as before (docs/security.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

DEMOGRAPHICS = {
    "family_name": 100,
    "given_name": 100,
    "middle_name": 100,
    "birth_date": 8,
    "sex": 1,
    "street": 200,
    "city": 100,
    "state": 50,
    "postal_code": 20,
    "phone": 50,
}
WIDENED = {
    "patients": DEMOGRAPHICS,
    "patient_names": {k: DEMOGRAPHICS[k] for k in ("family_name", "given_name", "middle_name")},
    "studies": dict(DEMOGRAPHICS, birth_date=64, sex=16),
}
KEYS = {"patients": ("birth_key", "family_key"), "patient_names": ("family_key",)}


def _partial(name: str, table: str, column: str) -> None:
    where = sa.text(f"{column} IS NOT NULL")
    op.create_index(name, table, [column], sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table) as batch:
            for column, length in columns.items():
                batch.alter_column(
                    column,
                    type_=sa.Text(),
                    existing_type=sa.String(length),
                    existing_nullable=False,
                )
            for key in KEYS.get(table, ()):
                batch.add_column(sa.Column(key, sa.String(32), nullable=True))
    op.add_column("patient_identifiers", sa.Column("value_sealed", sa.Text(), nullable=True))
    op.add_column("studies", sa.Column("patient_id_sealed", sa.Text(), nullable=True))
    _partial("ix_patients_birth_key", "patients", "birth_key")
    _partial("ix_patients_family_key", "patients", "family_key")
    _partial("ix_patient_names_family_key", "patient_names", "family_key")


def downgrade() -> None:
    op.drop_index("ix_patient_names_family_key", "patient_names")
    op.drop_index("ix_patients_family_key", "patients")
    op.drop_index("ix_patients_birth_key", "patients")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("patient_id_sealed")
    with op.batch_alter_table("patient_identifiers") as batch:
        batch.drop_column("value_sealed")
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table) as batch:
            for key in KEYS.get(table, ()):
                batch.drop_column(key)
            for column, length in columns.items():
                batch.alter_column(
                    column,
                    type_=sa.String(length),
                    existing_type=sa.Text(),
                    existing_nullable=False,
                )
