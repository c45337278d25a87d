"""Blocking: which MPI patients are compared with an orphaned study at all.

Candidates are the union of several keys, so that one wrong field never hides the right
patient: phonetic family name + birth year (also for earlier names and aliases), phonetic
family name + given-name prefix (a birth date missing or mistyped), given-name prefix + birth
month and day, the identifier reduced to its digits, the exact birth date, the accession
number's order, and the survivor of a merged patient whose id the study carries. Patients'
keys live in ``patient_keys``, refreshed from the MPI's change history.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, delete, func, insert, select

from engine.mpi.tables import Patient, PatientEvent, PatientIdentifier
from engine.reconcile.kernel import Records
from engine.reconcile.names import family_key
from engine.reconcile.records import load_patients, raw_rows
from engine.reconcile.tables import PatientKey
from engine.store import crypto
from engine.store.database import open_engine
from engine.store.fastsql import chunks, in_values
from engine.store.schema import table_of

WATERMARK_MARGIN = 25_000
"""On PostgreSQL, changes this far below the last watermark are looked at again: a transaction
that took an event id earlier can commit after a later one was read. (SQLite has one writer at
a time: ids become visible in order.)"""
REFRESH_CHUNK = 20_000
PARALLEL_KEYS = 100_000
"""From this many patients to key (a first run), the keys are made in a second process."""
KEYS_VERSION = 2
"""What the keys of ``record_keys`` are; a store keyed by another version is re-keyed in full.
2: family name + given-name prefix keys; identifiers keyed only when their key differs from
the value stored."""
_keys = table_of(PatientKey)
_patients = table_of(Patient)
_events = table_of(PatientEvent)
_identifiers = table_of(PatientIdentifier)

Progress = Callable[[int], None]
_THIS_YEAR = str(date.today().year)


def _valid_date(text: str) -> bool:
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return False
    return len(text) == 8


def record_keys(records: Records, row: int, *, study: bool = False) -> set[str]:
    """The blocking keys of one record. A study gets more (the variants its errors suggest):
    its given name as a family name (swapped names), its day and month swapped, a birth year
    in the future taken back a century (2045 for 1945). A patient's identifiers are keys only
    where the key is not the value stored (``keyed_identifiers``): the others are found in
    ``patient_identifiers`` itself."""
    family, given, birth = records.family[row], records.given[row], records.birth[row]
    identifiers = records.identifiers[row] if study else records.keyed_identifiers[row]
    keys = {f"I{value}" for value in identifiers}
    names = [(name, given) for name in (family, *records.other_families[row]) if name]
    if study and given and family:
        names.append((given, family))
    if given:
        keys.update(f"N{family_key(name)}{first[:3]}" for name, first in names)
    if len(birth) == 8:
        year = birth[:4]
        keys.update(f"F{family_key(name)}{year}" for name, _ in names)
        if study and year[:2] == "20" and year > _THIS_YEAR:  # 20451022 for 19451022
            keys.update(f"F{family_key(name)}19{year[2:]}" for name, _ in names)
        if study and given and not family:
            keys.add(f"F{family_key(given)}{year}")
        if given:
            keys.add(f"G{given[:3]}{birth[4:8]}")
            if study and _valid_date(year + birth[6:8] + birth[4:6]):
                keys.add(f"G{given[:3]}{birth[6:8]}{birth[4:6]}")
    return keys


def watermark(connection: Connection) -> int:
    return connection.execute(select(func.coalesce(func.max(_events.c.id), 0))).scalar_one()


def _insert(connection: Connection, rows: list[tuple[str, int]]) -> None:
    """Insert keys on the DBAPI cursor (a first run writes millions); an encrypted store's
    keys are their keyed hashes (the column's type hashes the keys it is asked for)."""
    if crypto.encrypting():
        stored = crypto.stored_form(_keys.c.key)
        rows = sorted((stored(key), patient_id) for key, patient_id in rows)
    compiled = insert(_keys).compile(dialect=connection.dialect)
    cursor = connection.connection.cursor()
    try:
        if compiled.positiontup:
            cursor.executemany(compiled.string, rows)
        else:
            cursor.executemany(compiled.string, [{"key": k, "patient_id": p} for k, p in rows])
    finally:
        cursor.close()


def _key_rows(connection: Connection, ids: list[int]) -> list[tuple[str, int]]:
    """The (key, patient id) rows of the live patients ``ids``, sorted: a chunk's keys go
    into the index together, a third faster than in patient order."""
    records = load_patients(connection, ids, live_only=True, for_keys=True)
    return sorted(
        (key, patient_id)
        for row, patient_id in enumerate(records.keys)
        for key in record_keys(records, row)
    )


def key_worker() -> None:
    """A process of its own (``_keys_made_elsewhere``): reads (URL, ids) pickled from stdin,
    writes the key rows pickled to stdout chunk by chunk, then None."""
    url, ids = pickle.load(sys.stdin.buffer)
    crypto.configure(crypto.keyring_from_environment())  # to read an encrypted MPI
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the rows
    store = open_engine(url)
    try:
        with store.connect() as connection:
            for chunk in chunks(ids, REFRESH_CHUNK):
                pickle.dump(_key_rows(connection, chunk), out, pickle.HIGHEST_PROTOCOL)
        pickle.dump(None, out)
        out.flush()
    finally:
        store.dispose()


def _keys_made_elsewhere(store: Engine, ids: list[int]) -> Iterator[list[tuple[str, int]]]:
    """The key rows of ``ids``, made by another process: Python makes the next chunk's keys
    while the database inserts this one's (both cores busy)."""
    command = [sys.executable, "-c", "from engine.reconcile.blocking import key_worker as k; k()"]
    url = store.url.render_as_string(hide_password=False)
    env = {**os.environ, **crypto.keys_for_child()}
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    ) as worker:
        assert worker.stdin is not None and worker.stdout is not None
        try:
            pickle.dump((url, ids), worker.stdin, pickle.HIGHEST_PROTOCOL)
            worker.stdin.close()
            while (rows := pickle.load(worker.stdout)) is not None:
                yield rows
            worker.wait()
        except EOFError:
            raise RuntimeError("the process making blocking keys failed") from None
        finally:
            if worker.poll() is None:
                worker.kill()


def refresh_keys(store: Engine, since: int | None, progress: Progress | None = None) -> int:
    """Bring ``patient_keys`` up to date with the MPI; return the new watermark.

    ``since``: the watermark of the previous refresh; None rebuilds every key. Many patients
    (a first run) are keyed in a second process while this one inserts.
    """
    with store.connect() as connection:
        newest = watermark(connection)
        if since is None:
            query = select(_patients.c.id).where(_patients.c.merged_into.is_(None))
            ids = [row[0] for row in raw_rows(connection, f"{query.compile()} ORDER BY id")]
        else:
            margin = 0 if store.dialect.name == "sqlite" else WATERMARK_MARGIN
            query = (
                select(_events.c.patient_id)
                .where(_events.c.id > since - margin, _events.c.patient_id.is_not(None))
                .distinct()
            )
            ids = sorted(connection.execute(query).scalars())
    url = store.url
    in_memory = url.get_backend_name() == "sqlite" and (url.database or ":memory:") == ":memory:"
    elsewhere = since is None and len(ids) >= PARALLEL_KEYS and not in_memory
    with store.begin() as connection:
        if since is None:
            connection.execute(delete(_keys))
        made = (
            _keys_made_elsewhere(store, ids)
            if elsewhere
            else (_key_rows(connection, chunk) for chunk in chunks(ids, REFRESH_CHUNK))
        )
        for index, rows in enumerate(made):
            chunk = ids[index * REFRESH_CHUNK : (index + 1) * REFRESH_CHUNK]
            if since is not None:
                connection.execute(delete(_keys).where(in_values(_keys.c.patient_id, chunk)))
            if rows:
                _insert(connection, rows)
            if progress is not None:
                progress(len(chunk))
    return newest


def _blocks(
    connection: Connection, query: Any, column: Any, values: Iterable[str]
) -> dict[str, list[int]]:
    """value → the patients ``query`` (value, patient id) finds for it (an encrypted store
    answers with the keyed hashes it holds: ``stored`` maps them back)."""
    found: dict[str, list[int]] = {}
    for chunk in chunks(sorted(values)):
        stored = crypto.stored_values(column, chunk)
        statement = query.where(in_values(column, list(stored)))
        sql = str(
            statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
        )
        for value, patient_id in raw_rows(connection, sql):
            found.setdefault(stored[value], []).append(patient_id)
    return found


def candidates(
    connection: Connection, studies: Records, max_block_size: int, extra: dict[int, set[int]]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Candidate pairs: (study rows, patient positions, patient ids) — patient position i in
    the returned id list. ``extra``: study row → patients to add (merge survivors)."""
    wanted: dict[str, list[int]] = {}
    births: dict[str, list[int]] = {}
    values: dict[str, list[int]] = {}
    for row in range(len(studies)):
        for key in record_keys(studies, row, study=True):
            wanted.setdefault(key, []).append(row)
        if len(studies.birth[row]) == 8:
            births.setdefault(studies.birth[row], []).append(row)
        for value in studies.identifiers[row]:
            values.setdefault(value, []).append(row)
    live = _patients.c.merged_into.is_(None)
    birth = _patients.c.birth_key if crypto.encrypting() else _patients.c.birth_date
    by_value = (
        select(_identifiers.c.value, _identifiers.c.patient_id)
        .join(_patients, _patients.c.id == _identifiers.c.patient_id)
        .where(live)
    )
    study_rows: list[int] = []
    patient_ids: list[int] = []
    for rows_of, column, query in (
        (wanted, _keys.c.key, select(_keys.c.key, _keys.c.patient_id)),
        (
            births,
            birth,
            select(birth, _patients.c.id).where(live),
        ),
        (values, _identifiers.c.value, by_value),
    ):
        for value, patients in _blocks(connection, query, column, rows_of).items():
            if len(patients) <= max_block_size:
                for row in rows_of[value]:
                    study_rows.extend([row] * len(patients))
                    patient_ids.extend(patients)
    for row in range(len(studies)):
        for patient_id in studies.linked[row] | extra.get(row, set()):
            study_rows.append(row)
            patient_ids.append(patient_id)
    rows = np.asarray(study_rows, dtype=np.int64)
    patients_found = np.asarray(patient_ids, dtype=np.int64)
    span = int(patients_found.max()) + 1 if len(patients_found) else 1
    pairs = np.unique(rows * span + patients_found)
    ids = np.unique(pairs % span)
    return pairs // span, np.searchsorted(ids, pairs % span), ids.tolist()
