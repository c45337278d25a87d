"""Studies and MPI patients read from the store and prepared for comparison (``Records``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection, select

from engine.mpi.records import DEMOGRAPHIC_COLUMNS
from engine.mpi.tables import Order, Patient, PatientIdentifier, PatientName, shown
from engine.reconcile.kernel import Records
from engine.reconcile.names import identifier_key, name_words, phone_key
from engine.reconcile.settings import ReconcilerSettings
from engine.store import crypto
from engine.store.fastsql import chunks, in_values
from engine.store.schema import table_of
from engine.studies.flags import study_flags
from engine.studies.orphans import StudySummary
from engine.studies.tables import Study

_patients = table_of(Patient)
_identifiers = table_of(PatientIdentifier)
_names = table_of(PatientName)
_orders = table_of(Order)
_studies = table_of(Study)
shown_identifier = shown(_identifiers.c.value, _identifiers.c.value_sealed)


def _sex(value: str) -> str:
    return value if value in ("M", "F") else ""


def _street(value: str) -> str:
    return " ".join(value.upper().replace(".", " ").replace(",", " ").split())


def _append_address(records: Records, street: str, postal: str, phone: str) -> None:
    """A record's address and phone as they are compared (any may be empty or None)."""
    records.postal.append(postal[:5] if postal else "")
    records.street.append(_street(street) if street else "")
    records.phone.append(phone_key(phone) if phone else "")


_COLUMNS = ("id", *(c for c in DEMOGRAPHIC_COLUMNS if c not in ("city", "state")))
"""What comparisons read of a patient (city and state are not compared)."""
_KEY_COLUMNS = ("id", "family_name", "given_name", "birth_date", "street", "postal_code", "phone")
_SQL: dict[tuple[str, str], str] = {}
_NONE: frozenset[Any] = frozenset()


def _sql(connection: Connection, name: str, statement: Any) -> str:
    """The SQL text of ``statement`` for the connection's dialect, compiled once."""
    key = (connection.dialect.name, name)
    if key not in _SQL:
        _SQL[key] = str(statement.compile(dialect=connection.dialect))
    return _SQL[key]


def _ids_filter(column: str, ids: list[int]) -> str:
    """A WHERE condition for integer ids: a range when they are dense (the rows outside
    ``ids`` are dropped by the caller), else a list. Ids are ints: safe in the SQL text."""
    low, high = min(ids), max(ids)
    if high - low < 3 * len(ids):
        return f"{column} BETWEEN {int(low)} AND {int(high)}"
    return f"{column} IN ({','.join(str(int(i)) for i in ids)})"


def raw_rows(connection: Connection, sql: str) -> Sequence[tuple[Any, ...]]:
    """Rows as plain tuples from the DBAPI cursor (SQLAlchemy's row objects and literal IN
    lists cost several times the query itself when a million patients are read). Encrypted
    values are decrypted (``crypto.reveal_rows``)."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
        rows = cursor.fetchall()
        return crypto.reveal_rows(rows, [column[0] for column in cursor.description])
    finally:
        cursor.close()


def load_patients(
    connection: Connection, ids: list[int], *, live_only: bool = False, for_keys: bool = False
) -> Records:
    """The MPI patients ``ids`` (live ones only with ``live_only``), in that order (an id not
    found is skipped). ``for_keys``: only what blocking keys are made of (names, birth date,
    identifiers whose key differs from their value, address and phone), the other fields left
    empty."""
    records = Records()
    columns = _KEY_COLUMNS if for_keys else _COLUMNS
    patients = _sql(connection, str(columns), select(*(_patients.c[c] for c in columns)))
    identifiers = _sql(
        connection,
        "identifiers",
        select(_identifiers.c.patient_id, shown_identifier.label("identifier")),
    )
    names = _sql(connection, "names", select(_names.c.patient_id, _names.c.family_name))
    live = " AND merged_into IS NULL" if live_only else ""
    for chunk in chunks(ids):
        if not chunk:
            continue
        found: dict[int, list[str]] = {}
        for patient_id, value in raw_rows(
            connection, f"{identifiers} WHERE {_ids_filter('patient_id', chunk)}"
        ):
            found.setdefault(patient_id, []).append(value)
        others: dict[int, frozenset[str]] = {}
        for patient_id, family in raw_rows(
            connection, f"{names} WHERE {_ids_filter('patient_id', chunk)}"
        ):
            if word := name_words(family):
                others[patient_id] = others.get(patient_id, _NONE) | {word}
        rows = {
            row[0]: row
            for row in raw_rows(connection, f"{patients} WHERE {_ids_filter('id', chunk)}{live}")
        }
        if for_keys:
            _append_keyed(records, chunk, rows, found, others)
            continue
        for patient_id in chunk:
            row = rows.get(patient_id)
            if row is None:
                continue
            _, family, given, middle, birth, sex, street, postal, phone = row
            records.keys.append(patient_id)
            records.family.append(name_words(family))
            records.given.append(name_words(given))
            records.middle.append(name_words(middle))
            records.birth.append(birth)
            records.sex.append(_sex(sex))
            _append_address(records, street, postal, phone)
            values = found.get(patient_id, ())
            records.identifiers.append(frozenset(filter(None, map(identifier_key, values))))
            records.other_families.append(others.get(patient_id, _NONE))
            records.linked.append(_NONE)
    return records


def _append_keyed(
    records: Records,
    chunk: list[int],
    rows: dict[int, tuple[Any, ...]],
    found: dict[int, list[str]],
    others: dict[int, frozenset[str]],
) -> None:
    """What blocking keys are made of, for the patients of ``chunk`` found in ``rows``."""
    keyed: dict[int, frozenset[str]] = {}
    for patient_id, values in found.items():
        differ = frozenset(k for v in values if (k := identifier_key(v)) and k != v)
        if differ:
            keyed[patient_id] = differ
    for patient_id in chunk:
        row = rows.get(patient_id)
        if row is None:
            continue
        records.keys.append(patient_id)
        records.family.append(name_words(row[1]))
        records.given.append(name_words(row[2]))
        records.birth.append(row[3])
        _append_address(records, *row[4:7])
        records.other_families.append(others.get(patient_id, _NONE))
        records.keyed_identifiers.append(keyed.get(patient_id, _NONE))


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
    """The orphaned studies, their values cleared where they are no evidence (placeholders, a
    birth date that is no date at all: the study's flags say), and linked through their
    accession numbers to the patients whose orders carry them. An implausible birth date
    (19450493, 20951022) is kept: it is compared digit by digit."""
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
        orders = select(_orders.c.accession, _orders.c.patient_id).where(
            in_values(_orders.c.accession, chunk)
        )
        for number, patient_id in connection.execute(orders):
            ordered.setdefault(number, set()).add(patient_id)
    current = survivors(connection, {p for ids in ordered.values() for p in ids})
    records = Records()
    today = date.today()
    for study in studies:
        street, postal, phone = extra.get(study.study_uid, ("", "", ""))
        unused = {f.field for f in study_flags(study, settings, today=today) if not f.compared}
        placeholder = "family_name" in unused  # DOE^JOHN: the given name is no evidence either
        given = "" if placeholder or "given_name" in unused else study.given_name
        records.family.append("" if placeholder else name_words(study.family_name))
        records.given.append(name_words(given))
        records.middle.append("" if placeholder else name_words(study.middle_name))
        records.birth.append("" if "birth_date" in unused else study.birth_date)
        records.sex.append(_sex(study.sex))
        _append_address(records, street, postal, phone)
        value = (
            "" if settings.placeholder_id(study.patient_id) else identifier_key(study.patient_id)
        )
        records.identifiers.append(frozenset([value]) if value else frozenset())
        records.other_families.append(frozenset())
        linked = ordered.get(study.accession, set()) if study.accession else set()
        records.linked.append(frozenset(current[p] for p in linked))
    return records
