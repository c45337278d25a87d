"""MPI (patients, identifiers, names, events, orders) and the index of PACS studies

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "patients",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("family_name", sa.String(length=100), nullable=False),
        sa.Column("given_name", sa.String(length=100), nullable=False),
        sa.Column("middle_name", sa.String(length=100), nullable=False),
        sa.Column("birth_date", sa.String(length=8), nullable=False),
        sa.Column("sex", sa.String(length=1), nullable=False),
        sa.Column("street", sa.String(length=200), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=50), nullable=False),
        sa.Column("postal_code", sa.String(length=20), nullable=False),
        sa.Column("phone", sa.String(length=50), nullable=False),
        sa.Column("merged_into", Id, nullable=True),
        sa.Column("event_time", sa.String(length=26), nullable=False),
        sa.Column("last_message_id", Id, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merged_into"], ["patients.id"], name=op.f("fk_patients_merged_into_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
    )
    op.create_index("ix_patients_birth_family", "patients", ["birth_date", "family_name"])
    op.create_index(
        "ix_patients_merged_into",
        "patients",
        ["merged_into"],
        sqlite_where=sa.text("merged_into IS NOT NULL"),
        postgresql_where=sa.text("merged_into IS NOT NULL"),
    )
    op.create_table(
        "pull_state",
        sa.Column("archive", sa.String(length=64), nullable=False),
        sa.Column("protocol", sa.String(length=16), nullable=False),
        sa.Column("last_study_date", sa.String(length=8), nullable=False),
        sa.Column("pulled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("archive", "protocol", name=op.f("pk_pull_state")),
    )
    op.create_table(
        "studies",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("accession", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=100), nullable=False),
        sa.Column("issuer", sa.String(length=100), nullable=False),
        sa.Column("family_name", sa.String(length=100), nullable=False),
        sa.Column("given_name", sa.String(length=100), nullable=False),
        sa.Column("middle_name", sa.String(length=100), nullable=False),
        sa.Column("birth_date", sa.String(length=8), nullable=False),
        sa.Column("sex", sa.String(length=1), nullable=False),
        sa.Column("street", sa.String(length=200), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=50), nullable=False),
        sa.Column("postal_code", sa.String(length=20), nullable=False),
        sa.Column("phone", sa.String(length=50), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=False),
        sa.Column("modality", sa.String(length=32), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("study_uid", name=op.f("uq_studies_study_uid")),
    )
    op.create_index("ix_studies_accession", "studies", ["accession"])
    op.create_index("ix_studies_patient", "studies", ["patient_id", "issuer"])
    op.create_index("ix_studies_study_date", "studies", ["study_date"])
    op.create_table(
        "orders",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("patient_id", Id, nullable=False),
        sa.Column("accession", sa.String(length=64), nullable=False),
        sa.Column("placer_number", sa.String(length=64), nullable=False),
        sa.Column("filler_number", sa.String(length=64), nullable=False),
        sa.Column("procedure_code", sa.String(length=64), nullable=False),
        sa.Column("order_control", sa.String(length=4), nullable=False),
        sa.Column("event_time", sa.String(length=26), nullable=False),
        sa.Column("message_id", Id, nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_orders_message_id_messages")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_orders_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
    )
    op.create_index("ix_orders_accession", "orders", ["accession"])
    op.create_index("ix_orders_patient_id", "orders", ["patient_id"])
    op.create_table(
        "patient_events",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("patient_id", Id, nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("event_time", sa.String(length=26), nullable=False),
        sa.Column("message_id", Id, nullable=True),
        sa.Column("command", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_patient_events_message_id_messages")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_patient_events_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_events")),
    )
    op.create_index("ix_patient_events_patient_id", "patient_events", ["patient_id"])
    op.create_table(
        "patient_identifiers",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("patient_id", Id, nullable=False),
        sa.Column("value", sa.String(length=100), nullable=False),
        sa.Column("authority", sa.String(length=100), nullable=False),
        sa.Column("type_code", sa.String(length=10), nullable=False),
        sa.Column("merged_from", Id, nullable=True),
        sa.ForeignKeyConstraint(
            ["merged_from"],
            ["patients.id"],
            name=op.f("fk_patient_identifiers_merged_from_patients"),
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_patient_identifiers_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_identifiers")),
        sa.UniqueConstraint("value", "authority", name="uq_patient_identifiers_value_authority"),
    )
    op.create_index("ix_patient_identifiers_patient_id", "patient_identifiers", ["patient_id"])
    op.create_table(
        "patient_names",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("patient_id", Id, nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("family_name", sa.String(length=100), nullable=False),
        sa.Column("given_name", sa.String(length=100), nullable=False),
        sa.Column("middle_name", sa.String(length=100), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.id"], name=op.f("fk_patient_names_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_names")),
    )
    op.create_index("ix_patient_names_family_name", "patient_names", ["family_name"])
    op.create_index("ix_patient_names_patient_id", "patient_names", ["patient_id"])


def downgrade() -> None:
    op.drop_table("patient_names")
    op.drop_table("patient_identifiers")
    op.drop_table("patient_events")
    op.drop_table("orders")
    op.drop_table("studies")
    op.drop_table("pull_state")
    op.drop_table("patients")
