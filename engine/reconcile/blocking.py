"""Blocking: which MPI patients are compared with an orphaned study at all.

Candidates are the union of several keys, so that one wrong field never hides the right
patient: phonetic family name + birth year (also for earlier names and aliases), given-name
prefix + birth month and day, the identifier reduced to its digits, the exact birth date, the
accession number's order, and the survivor of a merged patient whose id the study carries.
Patients' keys live in ``patient_keys``, refreshed from the MPI's change history.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import numpy as np
from sqlalchemy import Connection, Engine, delete, func, insert, select

from engine.mpi.tables import Patient, PatientEvent
from engine.reconcile.comparisons import Records
from engine.reconcile.names import family_key
from engine.reconcile.records import chunks, live_patient_ids, load_patients
from engine.reconcile.tables import PatientKey
from engine.store.fastsql import in_values

WATERMARK_MARGIN = 25_000
"""On PostgreSQL, changes this far below the last watermark are looked at again: a transaction
that took an event id earlier can commit after a later one was read. (SQLite has one writer at
a time: ids become visible in order.)"""
REFRESH_CHUNK = 20_000
_keys = PatientKey.__table__
_patients = Patient.__table__
_events = PatientEvent.__table__

Progress = Callable[[int], None]


def _valid_date(text: str) -> bool:
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return len(text) == 8


def record_keys(records: Records, row: int, *, study: bool = False) -> set[str]:
    """The blocking keys of one record. A study gets more (the variants its errors suggest):
    its given name as a family name (swapped names), its day and month swapped."""
    family, given, birth = records.family[row], records.given[row], records.birth[row]
    keys = {f"I{value}" for value in records.identifiers[row]}
    if len(birth) == 8:
        year = birth[:4]
        names = {family, *records.other_families[row]}
        if study:
            names.add(given)
        keys.update(f"F{family_key(name)}{year}" for name in names if name)
        if given:
            keys.add(f"G{given[:3]}{birth[4:8]}")
            if study and _valid_date(year + birth[6:8] + birth[4:6]):
                keys.add(f"G{given[:3]}{birth[6:8]}{birth[4:6]}")
    return keys


def watermark(connection: Connection) -> int:
    return connection.execute(select(func.coalesce(func.max(_events.c.id), 0))).scalar_one()


def refresh_keys(store: Engine, since: int | None, progress: Progress | None = None) -> int:
    """Bring ``patient_keys`` up to date with the MPI; return the new watermark.

    ``since``: the watermark of the previous refresh; None rebuilds every key.
    """
    with store.connect() as connection:
        newest = watermark(connection)
        if since is None:
            ids = list(
                connection.execute(select(_patients.c.id).order_by(_patients.c.id)).scalars()
            )
        else:
            margin = 0 if store.dialect.name == "sqlite" else WATERMARK_MARGIN
            query = (
                select(_events.c.patient_id)
                .where(_events.c.id > since - margin, _events.c.patient_id.is_not(None))
                .distinct()
            )
            ids = sorted(connection.execute(query).scalars())
    with store.begin() as connection:
        if since is None:
            connection.execute(delete(_keys))
        for chunk in chunks(ids, REFRESH_CHUNK):
            if since is not None:
                connection.execute(delete(_keys).where(in_values(_keys.c.patient_id, chunk)))
            live = live_patient_ids(connection, chunk)
            records = load_patients(connection, live)
            rows = sorted(
                (key, patient_id)
                for row, patient_id in enumerate(records.keys)
                for key in record_keys(records, row)
            )
            if rows:
                connection.execute(insert(_keys), [{"key": k, "patient_id": p} for k, p in rows])
            if progress is not None:
                progress(len(chunk))
    return newest


def candidates(
    connection: Connection, studies: Records, max_block_size: int, extra: dict[int, set[int]]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Candidate pairs: (study rows, patient positions, patient ids) — patient position i in
    the returned id list. ``extra``: study row → patients to add (merge survivors)."""
    wanted: dict[str, list[int]] = {}
    births: dict[str, list[int]] = {}
    for row in range(len(studies)):
        for key in record_keys(studies, row, study=True):
            wanted.setdefault(key, []).append(row)
        if len(studies.birth[row]) == 8:
            births.setdefault(studies.birth[row], []).append(row)
    pairs: set[tuple[int, int]] = set()
    live = _patients.c.merged_into.is_(None)
    for values, column, query in (
        (wanted, _keys.c.key, select(_keys.c.key, _keys.c.patient_id)),
        (
            births,
            _patients.c.birth_date,
            select(_patients.c.birth_date, _patients.c.id).where(live),
        ),
    ):
        for chunk in chunks(sorted(values)):
            found: dict[str, list[int]] = {}
            for value, patient_id in connection.execute(query.where(in_values(column, chunk))):
                found.setdefault(value, []).append(patient_id)
            for value, patients in found.items():
                if len(patients) <= max_block_size:
                    pairs.update((row, p) for row in values[value] for p in patients)
    for row in range(len(studies)):
        pairs.update((row, p) for p in studies.linked[row] | extra.get(row, set()))
    ordered = sorted(pairs)
    ids = sorted({p for _, p in ordered})
    position = {p: i for i, p in enumerate(ids)}
    study_rows = np.fromiter((r for r, _ in ordered), dtype=np.int64, count=len(ordered))
    patient_rows = np.fromiter(
        (position[p] for _, p in ordered), dtype=np.int64, count=len(ordered)
    )
    return study_rows, patient_rows, ids
