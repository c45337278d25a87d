"""The master patient index: patients, their identifiers and names, orders, and the history of
every change (with the message or command that caused it).

With content encryption on (docs/security.md), names, birth dates, sex, address, phone and the
history's details are AES-256-GCM ciphertext (:class:`EncryptedText`), and what is looked up is
a keyed hash (:class:`LookupText`): identifier values (their encrypted copy beside them, for
showing), and the birth date and family-name prefix copies that searches use. Orders' numbers,
authorities, type codes, event times and ids stay clear: they are looked up and name no one
without the MPI."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, func, text, type_coerce
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.crypto import EncryptedText, LookupText, prefix_of
from engine.store.schema import Base, Id, UTCDateTime

KEY_LENGTH = 32
"""Characters of a keyed hash column (``cwh1:`` + 22)."""
FAMILY_PREFIX = 3
"""Letters of the family name a search by name finds encrypted patients by."""


def family_prefix(family: str) -> str:
    """What ``family_key`` hashes: the family name's first letters, upper case ('' if fewer)."""
    return prefix_of(family, FAMILY_PREFIX)


def shown(hashed: Any, sealed: Any) -> Any:
    """A looked-up value as shown: its encrypted copy where it is stored hashed, else itself."""
    return type_coerce(func.coalesce(sealed, hashed), EncryptedText("identifier"))


class DemographicColumns:
    """Name, birth date, sex, address and phone: of an MPI patient, or as a PACS recorded them."""

    family_name: Mapped[str] = mapped_column(EncryptedText("family_name", 100), default="")
    given_name: Mapped[str] = mapped_column(EncryptedText("given_name", 100), default="")
    middle_name: Mapped[str] = mapped_column(EncryptedText("middle_name", 100), default="")
    birth_date: Mapped[str] = mapped_column(EncryptedText("birth_date", 8), default="")
    """YYYYMMDD, or '' when unknown."""
    sex: Mapped[str] = mapped_column(EncryptedText("sex", 1), default="")
    street: Mapped[str] = mapped_column(EncryptedText("street", 200), default="")
    city: Mapped[str] = mapped_column(EncryptedText("city", 100), default="")
    state: Mapped[str] = mapped_column(EncryptedText("state", 50), default="")
    postal_code: Mapped[str] = mapped_column(EncryptedText("postal_code", 20), default="")
    phone: Mapped[str] = mapped_column(EncryptedText("phone", 50), default="")


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
    birth_key: Mapped[str | None] = mapped_column(
        LookupText("birth_date", KEY_LENGTH, companion=True), info={"hash_of": "birth_date"}
    )
    """The birth date's keyed hash (encrypted stores: searches and blocking); else NULL."""
    family_key: Mapped[str | None] = mapped_column(
        LookupText("family_prefix", KEY_LENGTH, companion=True),
        info={"hash_of": "family_name", "prefix": FAMILY_PREFIX},
    )
    """The keyed hash of :func:`family_prefix` (encrypted stores: searches); else NULL."""

    __table_args__ = (
        # Birth date first: it serves searches by birth date alone too. One index fewer
        # matters: each costs ~6 s per million rows of a bulk import.
        Index("ix_patients_birth_family", "birth_date", "family_name"),
        # Encrypted stores only (partial: a clear store writes no entry).
        Index(
            "ix_patients_birth_key",
            "birth_key",
            sqlite_where=text("birth_key IS NOT NULL"),
            postgresql_where=text("birth_key IS NOT NULL"),
        ),
        Index(
            "ix_patients_family_key",
            "family_key",
            sqlite_where=text("family_key IS NOT NULL"),
            postgresql_where=text("family_key IS NOT NULL"),
        ),
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
    value: Mapped[str] = mapped_column(
        LookupText("identifier", 100), info={"sealed": "value_sealed"}
    )
    """The value, or its keyed hash in an encrypted store (:attr:`shown_value` shows it)."""
    authority: Mapped[str] = mapped_column(String(100), default="")
    type_code: Mapped[str] = mapped_column(String(10), default="")
    merged_from: Mapped[int | None] = mapped_column(Id, ForeignKey("patients.id"))
    """The patient this identifier belonged to before a merge moved it (for A37 unlink)."""
    value_sealed: Mapped[str | None] = mapped_column(EncryptedText("identifier", companion=True))
    """The value encrypted, where ``value`` holds its keyed hash; else NULL."""

    @property
    def shown_value(self) -> str:
        """The identifier's value, clear, whether the store is encrypted or not."""
        return self.value_sealed or self.value

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
    family_name: Mapped[str] = mapped_column(EncryptedText("family_name", 100), default="")
    given_name: Mapped[str] = mapped_column(EncryptedText("given_name", 100), default="")
    middle_name: Mapped[str] = mapped_column(EncryptedText("middle_name", 100), default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    family_key: Mapped[str | None] = mapped_column(
        LookupText("family_prefix", KEY_LENGTH, companion=True),
        info={"hash_of": "family_name", "prefix": FAMILY_PREFIX},
    )
    """As the patient's (encrypted stores); else NULL."""

    __table_args__ = (
        Index("ix_patient_names_patient_id", "patient_id"),
        Index("ix_patient_names_family_name", "family_name"),
        Index(
            "ix_patient_names_family_key",
            "family_key",
            sqlite_where=text("family_key IS NOT NULL"),
            postgresql_where=text("family_key IS NOT NULL"),
        ),
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
    detail: Mapped[str] = mapped_column(EncryptedText("detail"), default="")
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_patient_events_patient_id", "patient_id"),
        Index("ix_patient_events_message_id", "message_id"),
    )


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
        Index("ix_orders_message_id", "message_id"),
    )
