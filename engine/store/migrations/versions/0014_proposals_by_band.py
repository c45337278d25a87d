"""proposals by band: the review worklist filtered by band, most probable first

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04

Without it a worklist of one band reads every more probable proposal of the other bands first
(100,000 proposals: a fifth of a second).
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_proposals_status_band_probability", "proposals", ["status", "band", "probability"]
    )


def downgrade() -> None:
    op.drop_index("ix_proposals_status_band_probability", table_name="proposals")
