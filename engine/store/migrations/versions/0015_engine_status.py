"""engine status: what each engine sharing a PostgreSQL store says of itself

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04

Each engine writes a short JSON summary (its listeners' connections and messages, its admin
endpoint) into its ``engine:<holder>`` lease row as it renews, so that ``crosswalk status`` on
any one engine shows them all. A nullable column: engines of the previous version keep running
on the migrated store during a rolling upgrade (they leave it empty).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("info", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("info")
