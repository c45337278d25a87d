"""Studies and MPI patients read from the store and prepared for comparison (``Records``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, select

from engine.mpi.records import DEMOGRAPHIC_COLUMNS
from engine.mpi.tables import Order, Patient, PatientIdentifier, PatientName
from engine.reconcile.comparisons import Records
from engine.reconcile.names import identifier_key, name_words, phone_key
from engine.reconcile.settings import ReconcilerSettings
from engine.store.fastsql import in_values
from engine.studies.orphans import StudySummary
from engine.studies.tables import Study

CHUNK = 5000
_patients = Patient.__table__
_identifiers = PatientIdentifier.__table__
_names = PatientName.__table__
_orders = Order.__table__
_studies = Study.__table__
PATIENT_COLUMNS = ("id", *DEMOGRAPHIC_COLUMNS)


def _sex(value: str) -> str:
    return value if value in ("M", "F") else ""


def _street(value: str) -> str:
    return " ".join(value.upper().replace(".", " ").replace(",", " ").split())


def chunks(values: list[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _append_patient(
    records: Records, row: Any, identifiers: Iterable[str], others: Iterable[str]
) -> None:
    records.keys.append(row.id)
    records.family.append(name_words(row.family_name))
    records.given.append(name_words(row.given_name))
    records.middle.append(name_words(row.middle_name))
    records.birth.append(row.birth_date)
    records.sex.append(_sex(row.sex))
    records.postal.append(row.postal_code[:5])
    records.street.append(_street(row.street))
    records.phone.append(phone_key(row.phone))
    records.identifiers.append(frozenset(filter(None, map(identifier_key, identifiers))))
    records.other_families.append(frozenset(filter(None, map(name_words, others))))
    records.linked.append(frozenset())


def load_patients(connection: Connection, ids: list[int]) -> Records:
    """The live or merged MPI patients ``ids``, in that order (an id not found is skipped)."""
    records = Records()
    for chunk in chunks(ids):
        identifiers: dict[int, list[str]] = {}
        query = select(_identifiers.c.patient_id, _identifiers.c.value).where(
            in_values(_identifiers.c.patient_id, chunk)
        )
        for patient_id, value in connection.execute(query):
            identifiers.setdefault(patient_id, []).append(value)
        others: dict[int, list[str]] = {}
        query = select(_names.c.patient_id, _names.c.family_name).where(
            in_values(_names.c.patient_id, chunk)
        )
        for patient_id, family in connection.execute(query):
            others.setdefault(patient_id, []).append(family)
        rows = {
            row.id: row
            for row in connection.execute(
                select(*(_patients.c[c] for c in PATIENT_COLUMNS)).where(
                    in_values(_patients.c.id, chunk)
                )
            )
        }
        for patient_id in chunk:
            row = rows.get(patient_id)
            if row is not None:
                _append_patient(
                    records, row, identifiers.get(patient_id, ()), others.get(patient_id, ())
                )
    return records


def live_patient_ids(connection: Connection, ids: list[int]) -> list[int]:
    """Those of ``ids`` that are live patients (not merged into another)."""
    live: list[int] = []
    for chunk in chunks(ids):
        query = select(_patients.c.id).where(
            in_values(_patients.c.id, chunk), _patients.c.merged_into.is_(None)
        )
        live.extend(connection.execute(query).scalars())
    return live


def survivors(connection: Connection, ids: set[int]) -> dict[int, int]:
    """Each of ``ids`` mapped to the live patient it was merged into (itself if live)."""
    found = {i: i for i in ids}
    pending = set(ids)
    for _ in range(20):  # merge chains are short; a cycle must not loop forever
        if not pending:
            break
        step: dict[int, int] = {}
        for chunk in chunks(sorted(pending)):
            query = select(_patients.c.id, _patients.c.merged_into).where(
                in_values(_patients.c.id, chunk), _patients.c.merged_into.is_not(None)
            )
            step.update({row.id: row.merged_into for row in connection.execute(query)})
        for original, current in found.items():
            if current in step:
                found[original] = step[current]
        pending = set(step.values())
    return found


def load_studies(
    connection: Connection, studies: list[StudySummary], settings: ReconcilerSettings
) -> Records:
    """The orphaned studies, their values cleared where they are placeholders, and linked
    through their accession numbers to the patients whose orders carry them."""
    extra: dict[str, tuple[str, str, str]] = {}
    uids = [s.study_uid for s in studies]
    for chunk in chunks(uids):
        query = select(
            _studies.c.study_uid, _studies.c.street, _studies.c.postal_code, _studies.c.phone
        ).where(in_values(_studies.c.study_uid, chunk))
        for uid, street, postal, phone in connection.execute(query):
            extra[uid] = (street, postal, phone)
    accessions = sorted({s.accession for s in studies if s.accession})
    ordered: dict[str, set[int]] = {}
    for chunk in chunks(accessions):
        query = select(_orders.c.accession, _orders.c.patient_id).where(
            in_values(_orders.c.accession, chunk)
        )
        for number, patient_id in connection.execute(query):
            ordered.setdefault(number, set()).add(patient_id)
    current = survivors(connection, {p for ids in ordered.values() for p in ids})
    dates = set(settings.placeholder_birth_dates)
    records = Records()
    for study in studies:
        street, postal, phone = extra.get(study.study_uid, ("", "", ""))
        placeholder = settings.placeholder_name(study.family_name) or settings.placeholder_name(
            name_words(study.family_name)
        )
        given = (
            "" if placeholder or settings.placeholder_name(study.given_name) else study.given_name
        )
        records.family.append("" if placeholder else name_words(study.family_name))
        records.given.append(name_words(given))
        records.middle.append("" if placeholder else name_words(study.middle_name))
        records.birth.append("" if study.birth_date in dates else study.birth_date)
        records.sex.append(_sex(study.sex))
        records.postal.append(postal[:5])
        records.street.append(_street(street))
        records.phone.append(phone_key(phone))
        value = (
            "" if settings.placeholder_id(study.patient_id) else identifier_key(study.patient_id)
        )
        records.identifiers.append(frozenset([value]) if value else frozenset())
        records.other_families.append(frozenset())
        linked = ordered.get(study.accession, set()) if study.accession else set()
        records.linked.append(frozenset(current[p] for p in linked))
    return records
