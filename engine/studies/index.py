"""Saving studies into the index, whatever their source (a CSV export, a C-FIND, a QIDO-RS query).

Studies are keyed by Study Instance UID. Seeing a study again updates what the PACS recorded
(a value the source does not carry keeps the one already known) and its ``last_seen``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from itertools import islice
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select, update

from engine.store import crypto
from engine.store.database import for_writing
from engine.store.fastsql import in_values
from engine.store.schema import table_of
from engine.studies.tables import Study, study_column

_studies = table_of(Study)


@dataclass(frozen=True, slots=True)
class StudyRecord:
    """One study and the patient data the PACS recorded with it. Dates are YYYYMMDD."""

    study_uid: str
    accession: str = ""
    patient_id: str = ""
    issuer: str = ""
    family_name: str = ""
    given_name: str = ""
    middle_name: str = ""
    birth_date: str = ""
    sex: str = ""
    street: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    phone: str = ""
    study_date: str = ""
    modality: str = ""
    description: str = ""


RECORD_COLUMNS = tuple(f.name for f in fields(StudyRecord))
_VALUE_COLUMNS = RECORD_COLUMNS[1:]


@dataclass(slots=True)
class SaveCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged

    def add(self, other: SaveCounts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged


def _batches(records: Iterable[StudyRecord], size: int) -> Iterator[list[StudyRecord]]:
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        yield batch


def save_studies(
    engine: Engine, records: Iterable[StudyRecord], source: str, *, batch_size: int = 2000
) -> SaveCounts:
    """Insert or update ``records``, a transaction per batch; returns what happened."""
    counts = SaveCounts()
    for batch in _batches(records, batch_size):
        counts.add(save_batch(engine, batch, source))
    return counts


def save_batch(engine: Engine, batch: list[StudyRecord], source: str) -> SaveCounts:
    """One transaction: the studies of ``batch`` (the last of a repeated UID wins)."""
    counts = SaveCounts()
    latest = {record.study_uid: record for record in batch}
    now = datetime.now(UTC)
    with for_writing(engine).begin() as connection:
        known: dict[str, Any] = {
            row.study_uid: row
            for row in connection.execute(
                select(_studies.c.id, *(study_column(c) for c in RECORD_COLUMNS)).where(
                    in_values(_studies.c.study_uid, list(latest))
                )
            )
        }
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        seen: list[dict[str, Any]] = []
        for uid, record in latest.items():
            values = asdict(record)
            row = known.get(uid)
            if row is None:
                inserts.append(dict(values, source=source, first_seen=now, last_seen=now))
                continue
            # A value the source does not carry (a C-FIND not returning the address) is kept.
            merged = {c: values[c] or getattr(row, c) for c in _VALUE_COLUMNS}
            if all(merged[c] == getattr(row, c) for c in _VALUE_COLUMNS):
                seen.append({"row_id": row.id, "last_seen": now})
                counts.unchanged += 1
            else:
                updates.append(dict(merged, row_id=row.id, source=source, last_seen=now))
                counts.updated += 1
        # An encrypted store keeps the patient id hashed, and encrypted beside it.
        if crypto.encrypting():
            for row in inserts:
                row["patient_id_sealed"] = row["patient_id"]
        for row in updates:
            row["sealed_id"] = row["patient_id"]
        if inserts:
            connection.execute(insert(_studies), inserts)
            counts.created += len(inserts)
        if updates:
            connection.execute(
                update(_studies)
                .where(_studies.c.id == bindparam("row_id"))
                .values(
                    **{c: bindparam(c) for c in _VALUE_COLUMNS},
                    patient_id_sealed=bindparam(
                        "sealed_id", type_=_studies.c.patient_id_sealed.type
                    ),
                    source=bindparam("source"),
                    last_seen=bindparam("last_seen"),
                ),
                updates,
            )
        if seen:
            connection.execute(
                update(_studies)
                .where(_studies.c.id == bindparam("row_id"))
                .values(last_seen=bindparam("last_seen")),
                seen,
            )
    return counts
