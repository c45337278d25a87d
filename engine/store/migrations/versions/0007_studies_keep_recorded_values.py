"""studies keep birth date, sex and study date as the PACS recorded them, however wrong

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

A birth date written ``27/04/1940`` or a sex ``Frau`` used to be left out (the columns held
eight characters and one); the index now keeps them verbatim and flags them when read.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WIDER = {"birth_date": (8, 64), "sex": (1, 16), "study_date": (8, 64)}


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        for column, (old, new) in WIDER.items():
            batch.alter_column(
                column,
                type_=sa.String(new),
                existing_type=sa.String(old),
                existing_nullable=False,
            )


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        for column, (old, new) in WIDER.items():
            batch.alter_column(
                column,
                type_=sa.String(old),
                existing_type=sa.String(new),
                existing_nullable=False,
            )
