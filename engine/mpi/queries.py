"""Looking patients up: by identifier, by name and birth date, with their whole history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, func, or_, select
from sqlalchemy.orm import Session

from engine.mpi.tables import Order, Patient, PatientEvent, PatientIdentifier, PatientName
from engine.store.fastsql import chunks, in_values
from engine.store.schema import table_of

_identifiers = table_of(PatientIdentifier)


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
        select(PatientIdentifier.patient_id, PatientIdentifier.value, PatientIdentifier.authority)
        .where(in_values(PatientIdentifier.patient_id, patient_ids))
        .order_by(PatientIdentifier.id)
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
                _identifiers.c.value,
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
