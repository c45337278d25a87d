"""The index of imaging studies: what the PACS holds, with the patient data *it* recorded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from engine.mpi.tables import DemographicColumns, shown
from engine.store.crypto import EncryptedText, LookupText
from engine.store.schema import Base, Id, UTCDateTime

RECORDED_DATE = 64
"""Characters a study's dates hold: a date's digits, or the text a PACS recorded instead."""
RECORDED_SEX = 16


class Study(DemographicColumns, Base):
    """One study as the PACS (or an export of it) describes it."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    accession: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(
        LookupText("identifier", 100), default="", info={"sealed": "patient_id_sealed"}
    )
    """The patient id as recorded in the PACS (0010,0020); its keyed hash in an encrypted store
    (the same hash as the MPI's identifier: the two are joined), shown from
    ``patient_id_sealed``."""
    issuer: Mapped[str] = mapped_column(String(100), default="")
    """Its issuer (0010,0021), '' when the PACS does not record one."""
    study_date: Mapped[str] = mapped_column(String(RECORDED_DATE), default="")
    """YYYYMMDD, or what the PACS recorded when it is no date (flagged when read)."""
    # Wider than the MPI's: a PACS's value is kept as recorded, however wrong (27/04/1940, Frau).
    birth_date: Mapped[str] = mapped_column(EncryptedText("birth_date", RECORDED_DATE), default="")
    sex: Mapped[str] = mapped_column(EncryptedText("sex", RECORDED_SEX), default="")
    modality: Mapped[str] = mapped_column(String(32), default="")
    description: Mapped[str] = mapped_column(String(200), default="")
    source: Mapped[str] = mapped_column(String(200), default="")
    """Where the record came from: a file (import) or an archive and protocol (pull)."""
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    patient_id_sealed: Mapped[str | None] = mapped_column(
        EncryptedText("identifier", companion=True)
    )
    """The patient id encrypted, where ``patient_id`` holds its keyed hash; else NULL."""

    @property
    def shown_patient_id(self) -> str:
        """The patient id, clear, whether the store is encrypted or not."""
        return self.patient_id_sealed or self.patient_id

    __table_args__ = (
        Index("ix_studies_patient", "patient_id", "issuer"),
        Index("ix_studies_accession", "accession"),
        Index("ix_studies_study_date", "study_date"),
    )


def study_column(name: str) -> Any:
    """A ``studies`` column to read: the patient id as shown (clear, whether the store holds it
    hashed or not), any other column as it is."""
    table = Study.__table__
    if name == "patient_id":
        return shown(table.c.patient_id, table.c.patient_id_sealed).label("patient_id")
    return table.c[name]


class PullState(Base):
    """How far ``studies pull`` got with one archive and protocol (for incremental pulls)."""

    __tablename__ = "pull_state"

    archive: Mapped[str] = mapped_column(String(64), primary_key=True)
    protocol: Mapped[str] = mapped_column(String(16), primary_key=True)
    last_study_date: Mapped[str] = mapped_column(String(8), default="")
    pulled_at: Mapped[datetime] = mapped_column(UTCDateTime())
