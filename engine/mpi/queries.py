"""Looking patients up: by identifier, by name and birth date, with their whole history.

In an encrypted store (docs/security.md) identifiers are found by their keyed hash (the column
type hashes the value asked for), and a search by name and birth date by the keyed hashes of
the birth date and of the family name's first three letters; the candidates are then decrypted
and filtered, sorted and cut here, so the answer is the one a clear store gives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, or_, select
from sqlalchemy.orm import Session

from engine.errors import CrosswalkError
from engine.mpi.tables import (
    FAMILY_PREFIX,
    Order,
    Patient,
    PatientEvent,
    PatientIdentifier,
    PatientName,
    family_prefix,
    shown,
)
from engine.store import crypto
from engine.store.fastsql import chunks, in_values
from engine.store.schema import table_of

_identifiers = table_of(PatientIdentifier)
_shown_value = shown(_identifiers.c.value, _identifiers.c.value_sealed)


class SearchError(CrosswalkError, ValueError):
    """A search an encrypted MPI cannot answer without decrypting every patient."""


@dataclass(frozen=True)
class PatientView:
    """A patient with everything the MPI knows about them."""

    patient: Patient
    identifiers: Sequence[PatientIdentifier]
    names: Sequence[PatientName]
    events: Sequence[PatientEvent]
    orders: Sequence[Order]
    merged_in: Sequence[Patient]
    """Patients merged into this one."""


def patients_with_identifier(engine: Engine, value: str, authority: str | None = None) -> list[int]:
    """Ids of the patients holding identifier ``value`` (of ``authority``, if given)."""
    query = select(PatientIdentifier.patient_id).where(PatientIdentifier.value == value)
    if authority:
        query = query.where(PatientIdentifier.authority == authority)
    with Session(engine) as session:
        return sorted(set(session.scalars(query)))


def identifiers_of(engine: Engine, patient_ids: list[int]) -> dict[int, list[tuple[str, str]]]:
    """(value, authority) of each patient's identifiers, oldest first."""
    found: dict[int, list[tuple[str, str]]] = {}
    if not patient_ids:
        return found
    query = (
        select(_identifiers.c.patient_id, _shown_value, _identifiers.c.authority)
        .where(in_values(_identifiers.c.patient_id, patient_ids))
        .order_by(_identifiers.c.id)
    )
    with Session(engine) as session:
        for patient_id, value, authority in session.execute(query):
            found.setdefault(patient_id, []).append((value, authority))
    return found


def medical_record_numbers(
    connection: Connection, ids: list[int], authority: str = ""
) -> dict[int, tuple[str, str]]:
    """Each patient's MRN and authority: its identifier of ``authority`` when given, else one of
    type MR, else its first one."""
    found: dict[int, tuple[str, str, int]] = {}
    for chunk in chunks(sorted(set(ids))):
        query = (
            select(
                _identifiers.c.patient_id,
                _shown_value,
                _identifiers.c.authority,
                _identifiers.c.type_code,
            )
            .where(in_values(_identifiers.c.patient_id, chunk))
            .order_by(_identifiers.c.id)
        )
        for patient_id, value, issuer, type_code in connection.execute(query):
            rank = 2 if authority and issuer == authority else int(type_code == "MR")
            known = found.get(patient_id)
            if known is None or rank > known[2]:
                found[patient_id] = (value, issuer, rank)
    return {k: (v[0], v[1]) for k, v in found.items()}


def view(engine: Engine, patient_id: int) -> PatientView | None:
    """A patient with identifiers, other names, history, orders and who was merged into them."""
    with Session(engine, expire_on_commit=False) as session:
        patient = session.get(Patient, patient_id)
        if patient is None:
            return None
        return PatientView(
            patient,
            session.scalars(
                select(PatientIdentifier)
                .where(PatientIdentifier.patient_id == patient_id)
                .order_by(PatientIdentifier.id)
            ).all(),
            session.scalars(
                select(PatientName)
                .where(PatientName.patient_id == patient_id)
                .order_by(PatientName.id)
            ).all(),
            session.scalars(
                select(PatientEvent)
                .where(PatientEvent.patient_id == patient_id)
                .order_by(PatientEvent.id)
            ).all(),
            session.scalars(
                select(Order).where(Order.patient_id == patient_id).order_by(Order.id)
            ).all(),
            session.scalars(
                select(Patient).where(Patient.merged_into == patient_id).order_by(Patient.id)
            ).all(),
        )


def search(
    engine: Engine,
    *,
    family: str | None = None,
    given: str | None = None,
    birth_date: str | None = None,
    include_merged: bool = False,
    limit: int = 50,
) -> Sequence[Patient]:
    """Patients by name (prefix, any case; aliases and earlier names too) and birth date."""
    if crypto.encrypting():
        return _search_encrypted(family, given, birth_date, include_merged, limit, engine)
    query = select(Patient)
    if family:
        pattern = family.strip().upper() + "%"
        aliases = select(PatientName.patient_id).where(
            func.upper(PatientName.family_name).like(pattern)
        )
        query = query.where(
            or_(func.upper(Patient.family_name).like(pattern), Patient.id.in_(aliases))
        )
    if given:
        query = query.where(func.upper(Patient.given_name).like(given.strip().upper() + "%"))
    if birth_date:
        query = query.where(Patient.birth_date == birth_date)
    if not include_merged:
        query = query.where(Patient.merged_into.is_(None))
    with Session(engine, expire_on_commit=False) as session:
        return session.scalars(query.order_by(Patient.family_name, Patient.id).limit(limit)).all()


def _search_encrypted(
    family: str | None,
    given: str | None,
    birth_date: str | None,
    include_merged: bool,
    limit: int,
    engine: Engine,
) -> Sequence[Patient]:
    """:func:`search` in an encrypted store: candidates by keyed hash, then filtered clear."""
    family_text = (family or "").strip().upper()
    given_text = (given or "").strip().upper()
    key = family_prefix(family_text)
    if not birth_date and not key:
        raise SearchError(
            f"the MPI is encrypted: search by at least the first {FAMILY_PREFIX} letters of the"
            " family name, or by birth date"
        )
    query = select(Patient)
    with Session(engine, expire_on_commit=False) as session:
        aliases: set[int] = set()
        if key:
            aliases = {
                patient_id
                for patient_id, name in session.execute(
                    select(PatientName.patient_id, PatientName.family_name).where(
                        PatientName.family_key == key
                    )
                )
                if name.upper().startswith(family_text)
            }
            query = query.where(or_(Patient.family_key == key, Patient.id.in_(aliases)))
        if birth_date:
            query = query.where(Patient.birth_key == birth_date)
        if not include_merged:
            query = query.where(Patient.merged_into.is_(None))
        found = [
            patient
            for patient in session.scalars(query)
            if (patient.family_name.upper().startswith(family_text) or patient.id in aliases)
            and patient.given_name.upper().startswith(given_text)
            and (not birth_date or patient.birth_date == birth_date)
        ]
    found.sort(key=lambda patient: (patient.family_name, patient.id))
    return found[:limit]
