"""The master patient index: patients, their identifiers and names, orders, and the history of
every change (with the message or command that caused it)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.schema import Base, Id, UTCDateTime


class DemographicColumns:
    """Name, birth date, sex, address and phone: of an MPI patient, or as a PACS recorded them."""

    family_name: Mapped[str] = mapped_column(String(100), default="")
    given_name: Mapped[str] = mapped_column(String(100), default="")
    middle_name: Mapped[str] = mapped_column(String(100), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    """YYYYMMDD, or '' when unknown."""
    sex: Mapped[str] = mapped_column(String(1), default="")
    street: Mapped[str] = mapped_column(String(200), default="")
    city: Mapped[str] = mapped_column(String(100), default="")
    state: Mapped[str] = mapped_column(String(50), default="")
    postal_code: Mapped[str] = mapped_column(String(20), default="")
    phone: Mapped[str] = mapped_column(String(50), default="")


class Patient(DemographicColumns, Base):
    """One person as the MPI knows them. A merged patient is kept, linked to the survivor."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    merged_into: Mapped[int | None] = mapped_column(Id, ForeignKey("patients.id"))
    """The surviving patient, once this one was merged (A40)."""
    event_time: Mapped[str] = mapped_column(String(26), default="")
    """Event time (EVN-2, else MSH-7) of the newest change applied; older updates lose."""
    last_message_id: Mapped[int | None] = mapped_column(Id)
    """Ties of event time are broken by message id: the later message wins."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        # Birth date first: it serves searches by birth date alone too. One index fewer
        # matters: each costs ~6 s per million rows of a bulk import.
        Index("ix_patients_birth_family", "birth_date", "family_name"),
        Index(
            "ix_patients_merged_into",
            "merged_into",
            sqlite_where=text("merged_into IS NOT NULL"),
            postgresql_where=text("merged_into IS NOT NULL"),
        ),
    )


class PatientIdentifier(Base):
    """An identifier (CX) of a patient; unique per assigning authority."""

    __tablename__ = "patient_identifiers"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(Id, ForeignKey("patients.id"))
    value: Mapped[str] = mapped_column(String(100))
    authority: Mapped[str] = mapped_column(String(100), default="")
    type_code: Mapped[str] = mapped_column(String(10), default="")
    merged_from: Mapped[int | None] = mapped_column(Id, ForeignKey("patients.id"))
    """The patient this identifier belonged to before a merge moved it (for A37 unlink)."""

    __table_args__ = (
        # Value first: lookups by value alone (any authority) use it too.
        UniqueConstraint("value", "authority", name="uq_patient_identifiers_value_authority"),
        Index("ix_patient_identifiers_patient_id", "patient_id"),
    )


class PatientName(Base):
    """A name of a patient other than the current one: aliases, maiden and previous names."""

    __tablename__ = "patient_names"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(Id, ForeignKey("patients.id"))
    kind: Mapped[str] = mapped_column(String(10))
    """previous (replaced by an update), alias (PID-5 type A), maiden (type M), birth (B) …"""
    family_name: Mapped[str] = mapped_column(String(100), default="")
    given_name: Mapped[str] = mapped_column(String(100), default="")
    middle_name: Mapped[str] = mapped_column(String(100), default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_patient_names_patient_id", "patient_id"),
        Index("ix_patient_names_family_name", "family_name"),
    )


class PatientEvent(Base):
    """One change to the MPI: what, when (event time), and the message or command behind it."""

    __tablename__ = "patient_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    patient_id: Mapped[int | None] = mapped_column(Id, ForeignKey("patients.id"))
    kind: Mapped[str] = mapped_column(String(24))
    """created, updated, stale (an older update not applied), merged, merged_into,
    identifier_changed, unlinked, imported, order."""
    event_time: Mapped[str] = mapped_column(String(26), default="")
    message_id: Mapped[int | None] = mapped_column(Id, ForeignKey("messages.id"))
    command: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_patient_events_patient_id", "patient_id"),)


class Order(Base):
    """An imaging order (ORM^O01 / OMI^O23): its numbers, linked to the patient it is for."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(Id, ForeignKey("patients.id"))
    accession: Mapped[str] = mapped_column(String(64), default="")
    placer_number: Mapped[str] = mapped_column(String(64), default="")
    filler_number: Mapped[str] = mapped_column(String(64), default="")
    procedure_code: Mapped[str] = mapped_column(String(64), default="")
    order_control: Mapped[str] = mapped_column(String(4), default="")
    event_time: Mapped[str] = mapped_column(String(26), default="")
    message_id: Mapped[int | None] = mapped_column(Id, ForeignKey("messages.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_orders_accession", "accession"),
        Index("ix_orders_patient_id", "patient_id"),
    )
