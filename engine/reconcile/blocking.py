"""Blocking: which MPI patients are compared with an orphaned study at all.

Candidates are the union of several keys, so that one wrong field never hides the right
patient: phonetic family name + birth year (also for earlier names and aliases), phonetic
family name + given-name prefix (a birth date missing or mistyped), given-name prefix + birth
month and day, given-name prefix + birth year and month (a family name changed and a day
mistyped); a study without a birth date also asks for the family names one slip from its own
(a misspelt family name), one with only an initial for a given name the family name with every
given name of that initial; where an address was recorded: house number + postal code, the
phone number (a family name changed and no birth date). A study's given name stands also for
its nicknames and formal forms (BILL: WILLIAM). Then the identifier reduced to its digits, the
exact birth date, the accession number's order, and the survivor of a merged patient whose id
the study carries. Patients' keys live in ``patient_keys``, refreshed from the MPI's change
history.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from datetime import date
from functools import lru_cache
from typing import IO, Any

import numpy as np
from sqlalchemy import Connection, Engine, bindparam, delete, func, insert, select

from engine.errors import CrosswalkError
from engine.mpi.tables import Patient, PatientEvent, PatientIdentifier
from engine.reconcile.comparisons import day_month_swapped, other_century
from engine.reconcile.kernel import Records
from engine.reconcile.names import family_key, name_words, same_person_names
from engine.reconcile.records import load_patients, raw_rows
from engine.reconcile.tables import PatientKey
from engine.store import crypto
from engine.store.database import BULK_CACHE_KIB, open_engine
from engine.store.fastsql import chunks, in_values
from engine.store.schema import table_of

WATERMARK_MARGIN = 25_000
"""On PostgreSQL, changes this far below the last watermark are looked at again: a transaction
that took an event id earlier can commit after a later one was read. (SQLite has one writer at
a time: ids become visible in order.)"""
REFRESH_CHUNK = 20_000
DEFAULT_CACHE_KIB = 2000
"""SQLite's page cache (its default) once the keys are in."""
PARALLEL_KEYS = 100_000
"""From this many patients to key (a first run), the keys are made in other processes."""
KEY_PROCESSES = 2
"""Processes making keys (a first run): reading patients is most of it, inserting the least."""
KEYS_VERSION = 4
"""What the keys of ``record_keys`` are; a store keyed by another version is re-keyed in full.
2: family name + given-name prefix keys; identifiers keyed only when their key differs from
the value stored. 3: given name + birth year and month; house number + postal code; phone.
4: the same keys, stored by patient (migration 0017 left the table empty)."""
KEY_KINDS = {
    "I": "identifier digits",
    "F": "family name + birth year",
    "N": "family name + given name",
    "G": "given name + birth month/day",
    "Y": "given name + birth year, month",
    "H": "house number + postal code",
    "P": "phone",
}
"""What each kind of key (its first letter) is made of."""
INITIAL_SOURCE = "family name + initial"
INITIAL_NARROWER = 10
"""A family name + initial range yields candidates only when it holds ``max_block_size`` / this
many patients or fewer: an initial says little, so SMITH^J would only add noise. A larger range
(common names in a large MPI) is narrowed for each study to its patients born on the study's
birth date or one slip from it (else, for a study without one, with its middle initial), and
yields those when they are few enough (``narrowed``)."""
OTHER_SOURCES = ("birth date", "identifier value", INITIAL_SOURCE, "order or merge")
"""Where else candidates come from: the exact birth date and an identifier's value (looked up
in the MPI's own tables), the family-name keys whose given-name prefix starts with a study's
initial (a range of ``patient_keys``: no key of its own), the orders of the study's accession
and the survivor of a merge."""
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
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


def house_number(street: str) -> str:
    """The leading digits of a street address ('' for none): 12A ELM ST is 12."""
    digits = ""
    for character in street:
        if not character.isdigit():
            break
        digits += character
    return digits.lstrip("0")


def slipped_families(family: str, *, added: bool = False) -> set[str]:
    """The family-name keys of the first word of ``family`` and of every spelling one slip
    from it (:func:`one_slip`)."""
    return {family_key(slip) for slip in one_slip(family.split(" ", 1)[0], added=added)}


def one_slip(name: str, *, added: bool = False) -> set[str]:
    """``name`` and every name one slip away: a letter dropped, two swapped, one replaced;
    with ``added``, also a letter added (the name a study recorded with a letter dropped)."""
    found = {name}
    for i in range(len(name)):
        found.add(name[:i] + name[i + 1 :])
        found.add(name[:i] + name[i + 1 : i + 2] + name[i] + name[i + 2 :])
        found.update(name[:i] + letter + name[i + 1 :] for letter in LETTERS)
    if added:
        found.update(
            name[:i] + letter + name[i:] for i in range(len(name) + 1) for letter in LETTERS
        )
    found.discard("")
    return found


def _given_prefixes(given: str, study: bool) -> set[str]:
    """The given-name prefixes a record is keyed on: a study's also of its name's nicknames
    and formal forms (the patient's are keyed as recorded). An initial is no prefix."""
    if len(given) < 2:
        return set()
    if not study:
        return {given[:3]}
    return {name[:3] for name in same_person_names(given) if len(name) > 1}


def record_keys(records: Records, row: int, *, study: bool = False) -> set[str]:
    """The blocking keys of one record. A study gets more (the variants its errors suggest):
    its given name as a family name (swapped names), its given name's nicknames and formal
    forms, its day and month swapped, a birth year in the future taken back a century (2045
    for 1945). A patient's identifiers are keys only where the key is not the value stored
    (``keyed_identifiers``): the others are found in ``patient_identifiers`` itself."""
    family, given, birth = records.family[row], records.given[row], records.birth[row]
    identifiers = records.identifiers[row] if study else records.keyed_identifiers[row]
    keys = {f"I{value}" for value in identifiers}
    names = [(name, given) for name in (family, *records.other_families[row]) if name]
    if study and given and family:
        names.append((given, family))
    prefixes = _given_prefixes(given, study)
    if given:
        keys.update(f"N{family_key(name)}{first[:3]}" for name, first in names)
        keys.update(f"N{family_key(family)}{prefix}" for prefix in prefixes if family)
    if study and family and not birth:  # with a birth date, F, G and Y find a misspelt name
        keys.update(f"N{code}{prefix}" for code in slipped_families(family) for prefix in prefixes)
    if len(birth) == 8:
        year = birth[:4]
        years = {year}
        if study and year[:2] == "20" and year > _THIS_YEAR:  # 20451022 for 19451022
            years.add(f"19{year[2:]}")
        keys.update(f"F{family_key(name)}{y}" for name, _ in names for y in years)
        if study and given and not family:
            keys.add(f"F{family_key(given)}{year}")
        keys.update(f"Y{prefix}{y}{birth[4:6]}" for prefix in prefixes for y in years)
        days = {birth[4:8]}
        if study and _valid_date(year + birth[6:8] + birth[4:6]):
            days.add(birth[6:8] + birth[4:6])
        firsts = prefixes | {given[:3]} if given else prefixes
        keys.update(f"G{first}{day}" for first in firsts for day in days)
    keys.update(_address_keys(records, row))
    return keys


def _address_keys(records: Records, row: int) -> set[str]:
    """Keys of a recorded address and phone: house number + postal code, the phone's last
    seven digits."""
    postal, phone = records.postal[row], records.phone[row]
    number = house_number(records.street[row])
    keys = {f"P{phone}"} if phone else set()
    if postal and number:
        keys.add(f"H{number}.{postal}")
    return keys


def watermark(connection: Connection) -> int:
    return connection.execute(select(func.coalesce(func.max(_events.c.id), 0))).scalar_one()


def _insert(connection: Connection, rows: KeyRows) -> None:
    """Insert keys on the DBAPI cursor (a first run writes millions)."""
    compiled = insert(_keys).compile(dialect=connection.dialect)
    columns = {"key": rows[0], "patient_id": rows[1]}
    cursor = connection.connection.cursor()
    try:
        if compiled.positiontup:
            values = (columns[name] for name in compiled.positiontup)
            cursor.executemany(compiled.string, list(zip(*values, strict=True)))
        else:
            cursor.executemany(
                compiled.string, [{"key": k, "patient_id": p} for k, p in zip(*rows, strict=True)]
            )
    finally:
        cursor.close()


def patient_keys(records: Records) -> tuple[list[str], list[int]]:
    """The blocking keys of every patient of ``records`` and, beside each, its patient id:
    ``record_keys`` of each row (the tests hold them equal), in one loop without its
    study-only variants (a first run keys a million patients)."""
    keys: list[str] = []
    owners: list[int] = []
    for patient_id, family, given, birth, others, keyed, street, postal, phone in zip(
        records.keys,
        records.family,
        records.given,
        records.birth,
        records.other_families,
        records.keyed_identifiers,
        records.street,
        records.postal,
        records.phone,
        strict=True,
    ):
        codes = {family_key(name) for name in others if name} if others else set()
        if family:
            codes.add(family_key(family))
        first = given[:3]
        made = [f"I{value}" for value in keyed]
        if given:
            made += [f"N{code}{first}" for code in codes]
        if len(birth) == 8:
            year = birth[:4]
            made += [f"F{code}{year}" for code in codes]
            if len(given) > 1:
                made.append(f"Y{first}{year}{birth[4:6]}")
            if given:
                made.append(f"G{first}{birth[4:8]}")
        if phone:
            made.append(f"P{phone}")
        if postal and (number := house_number(street)):
            made.append(f"H{number}.{postal}")
        keys += made
        owners += [patient_id] * len(made)
    return keys, owners


KeyRows = tuple[list[str], list[int]]
"""Keys and, beside each, its patient id (two lists: quicker to pickle than pairs)."""


def _key_rows(connection: Connection, ids: list[int]) -> KeyRows:
    """The keys of the live patients ``ids`` (in their order, as the table stores them). An
    encrypted store's keys are their keyed hashes (made here: in a key process when there is
    one)."""
    records = load_patients(connection, ids, live_only=True, for_keys=True)
    keys, owners = patient_keys(records)
    stored = crypto.stored_form(_keys.c.key)
    if stored is not str:
        keys = [stored(key) for key in keys]
    return keys, owners


def key_worker() -> None:
    """A process of its own (``_keys_made_elsewhere``): reads (URL, chunks of ids) pickled from
    stdin, writes each chunk's key rows pickled to stdout, then None."""
    url, id_chunks = pickle.load(sys.stdin.buffer)
    crypto.configure(crypto.keyring_from_environment())  # to read an encrypted MPI
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the rows
    store = open_engine(url)
    try:
        with store.connect() as connection:
            for chunk in id_chunks:
                pickle.dump(_key_rows(connection, chunk), out, pickle.HIGHEST_PROTOCOL)
        pickle.dump(None, out)
        out.flush()
    finally:
        store.dispose()


def _keys_made_elsewhere(store: Engine, id_chunks: list[list[int]]) -> Iterator[KeyRows]:
    """The key rows of each of ``id_chunks``, in order, made by ``KEY_PROCESSES`` other
    processes (each every n-th chunk) while this one inserts."""
    command = [sys.executable, "-c", "from engine.reconcile.blocking import key_worker as k; k()"]
    url = store.url.render_as_string(hide_password=False)
    env = {**os.environ, **crypto.keys_for_child()}
    count = max(1, min(KEY_PROCESSES, len(id_chunks)))
    with ExitStack() as stack:
        workers = []
        for first in range(count):
            worker = stack.enter_context(
                subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            )
            stack.callback(_stop, worker)
            workers.append(worker)
            assert worker.stdin is not None and worker.stdout is not None
            pickle.dump((url, id_chunks[first::count]), worker.stdin, pickle.HIGHEST_PROTOCOL)
            worker.stdin.close()
        outputs = [worker.stdout for worker in workers if worker.stdout is not None]
        for index in range(len(id_chunks)):
            yield read_key_rows(outputs[index % count])
        for worker, output in zip(workers, outputs, strict=True):
            if _read(output) is not None:
                raise KeyProcessFailed("a process making blocking keys wrote more than asked")
            worker.wait()


class KeyProcessFailed(CrosswalkError, RuntimeError):
    """A process making blocking keys died or wrote what is not its key rows (nothing of the
    refresh is committed; run it again)."""


def read_key_rows(output: IO[bytes]) -> KeyRows:
    """The next chunk of key rows a key process wrote; KeyProcessFailed for anything else (it
    died, or its output arrived damaged: seen under a profiler attached to it)."""
    rows = _read(output)
    if (
        not isinstance(rows, tuple)
        or len(rows) != 2
        or not all(isinstance(column, list) for column in rows)
        or len(rows[0]) != len(rows[1])
    ):
        raise KeyProcessFailed("a process making blocking keys failed: its output is not key rows")
    return rows


def _read(output: IO[bytes]) -> object:
    try:
        return pickle.load(output)
    except EOFError:
        raise KeyProcessFailed("a process making blocking keys failed: it ended early") from None
    except Exception as error:  # damaged bytes fail in any of pickle's ways
        raise KeyProcessFailed(
            f"a process making blocking keys failed: its output could not be read"
            f" ({type(error).__name__})"
        ) from None


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.kill()


def refresh_keys(store: Engine, since: int | None, progress: Progress | None = None) -> int:
    """Bring ``patient_keys`` up to date with the MPI; return the new watermark.

    ``since``: the watermark of the previous refresh; None rebuilds every key: they are
    appended in patient order with the index by key dropped, then indexed in one go. Many
    patients (a first run) are keyed in other processes while this one inserts.
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
    id_chunks = list(chunks(ids, REFRESH_CHUNK))
    by_key = next(iter(_keys.indexes))
    with store.begin() as connection:
        if store.dialect.name == "sqlite":  # millions of keys into one index
            connection.exec_driver_sql(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
        if since is None:
            connection.execute(delete(_keys))
            by_key.drop(connection)
        made = (
            _keys_made_elsewhere(store, id_chunks)
            if elsewhere
            else (_key_rows(connection, chunk) for chunk in id_chunks)
        )
        for chunk, rows in zip(id_chunks, made, strict=True):
            if since is not None:
                connection.execute(delete(_keys).where(in_values(_keys.c.patient_id, chunk)))
            if rows[0]:
                _insert(connection, rows)
            if progress is not None:
                progress(len(chunk))
        if since is None:
            by_key.create(connection)
        if store.dialect.name == "sqlite":
            connection.exec_driver_sql(f"PRAGMA cache_size=-{DEFAULT_CACHE_KIB}")
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


def _initial_ranges(studies: Records) -> dict[str, list[int]]:
    """Study rows by the key prefix of their family name and given-name initial (GAYTAN^J:
    the family-name keys of every given name starting with J)."""
    found: dict[str, list[int]] = {}
    for row in range(len(studies)):
        family, given = studies.family[row], studies.given[row]
        if family and len(given) == 1:
            found.setdefault(f"N{family_key(family)}{given}", []).append(row)
    return found


def near_birth(study: str, patient: str) -> bool:
    """Whether ``patient``'s birth date is ``study``'s mistyped at most once, as the birth-date
    comparison sees it (both of eight digits): the same, day and month swapped, the century
    slipped, one digit wrong or two transposed."""
    return len(patient) == 8 and patient in birth_slips(study)


@lru_cache(maxsize=1 << 14)
def birth_slips(birth: str) -> frozenset[str]:
    """Every birth date ``near_birth`` takes for ``birth`` (none unless it has eight digits)."""
    if len(birth) != 8:
        return frozenset()
    found = {birth, day_month_swapped(birth), other_century(birth)}
    for i in range(8):
        found.update(birth[:i] + digit + birth[i + 1 :] for digit in "0123456789")
        found.add(birth[:i] + birth[i + 1 : i + 2] + birth[i] + birth[i + 2 :])
    return frozenset(found)


def narrowed(
    studies: Records, row: int, patients: list[int], seen: dict[int, tuple[str, str]]
) -> list[int]:
    """The patients of a range too large to pair in full that agree with study ``row`` on more
    than its initial: born on its birth date or one slip from it; for a study without a birth
    date, with its middle initial (none for a study with neither). ``seen``: patient id →
    (birth date, middle name)."""
    birth, middle = studies.birth[row], studies.middle[row][:1]
    if len(birth) == 8:
        return [p for p in patients if near_birth(birth, seen.get(p, ("", ""))[0])]
    if middle:
        return [p for p in patients if seen.get(p, ("", ""))[1][:1] == middle]
    return []


def _birth_and_middle(connection: Connection, ids: list[int]) -> dict[int, tuple[str, str]]:
    """Patient id → (birth date, middle name as compared)."""
    query = select(_patients.c.id, _patients.c.birth_date, _patients.c.middle_name)
    sql = str(query.compile(dialect=connection.dialect))
    found: dict[int, tuple[str, str]] = {}
    for chunk in chunks(ids):  # ids are ints: safe in the SQL text, quicker than bound
        listed = ",".join(str(int(patient_id)) for patient_id in chunk)
        for patient_id, birth, middle in raw_rows(connection, f"{sql} WHERE id IN ({listed})"):
            found[patient_id] = (birth or "", name_words(middle or ""))
    return found


def _prefix_blocks(connection: Connection, prefixes: Iterable[str]) -> dict[str, list[int]]:
    """prefix → the patients with a key starting with it (one range of the key's index)."""
    query = select(_keys.c.key, _keys.c.patient_id).where(
        _keys.c.key >= bindparam("low"), _keys.c.key < bindparam("high")
    )
    found: dict[str, list[int]] = {}
    for prefix in prefixes:
        high = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = connection.execute(query, {"low": prefix, "high": high})
        found[prefix] = sorted({patient_id for _, patient_id in rows})
    return found


Found = dict[str, tuple[list[int], list[int]]]
"""Per source (a ``KEY_KINDS`` letter, or one of ``OTHER_SOURCES``): the (study rows, patient
ids) it pairs."""


def candidate_sources(
    connection: Connection, studies: Records, max_block_size: int, extra: dict[int, set[int]]
) -> Found:
    """The pairs each source of candidates finds (``candidates`` takes their union; the
    benchmark counts each one's pairs and recall). ``extra``: study row → patients to add
    (merge survivors)."""
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
    found: Found = {}
    for source, rows_of, column, query in (
        ("", wanted, _keys.c.key, select(_keys.c.key, _keys.c.patient_id)),
        (
            "birth date",
            births,
            birth,
            select(birth, _patients.c.id).where(live),
        ),
        ("identifier value", values, _identifiers.c.value, by_value),
    ):
        for value, patients in _blocks(connection, query, column, rows_of).items():
            if len(patients) <= max_block_size:
                study_rows, patient_ids = found.setdefault(source or value[0], ([], []))
                for row in rows_of[value]:
                    study_rows.extend([row] * len(patients))
                    patient_ids.extend(patients)
    # Keys are hashed in an encrypted store: no range of them is a name's prefix.
    initials = {} if crypto.encrypting() else _initial_ranges(studies)
    ranges = _prefix_blocks(connection, initials)
    largest = max_block_size // INITIAL_NARROWER
    large = sorted({p for block in ranges.values() if len(block) > largest for p in block})
    seen = _birth_and_middle(connection, large)
    study_rows, patient_ids = found.setdefault(INITIAL_SOURCE, ([], []))
    for prefix, block in ranges.items():
        for row in initials[prefix]:
            patients = block if len(block) <= largest else narrowed(studies, row, block, seen)
            if len(patients) <= largest:
                study_rows.extend([row] * len(patients))
                patient_ids.extend(patients)
    study_rows, patient_ids = found.setdefault("order or merge", ([], []))
    for row in range(len(studies)):
        for patient_id in studies.linked[row] | extra.get(row, set()):
            study_rows.append(row)
            patient_ids.append(patient_id)
    return found


def second_look(
    connection: Connection, studies: Records, rows: Iterable[int], max_block_size: int
) -> tuple[list[int], list[int]]:
    """Candidates for the studies ``rows`` that the first ones left unresolved (no candidate
    worth proposing): the family name + given name keys of names one slip from the study's (a
    letter dropped, added, two swapped, one replaced): of its given name's first three letters
    and, for a study with a birth date, of its family name (the first keys ask for those only
    without one); for a study with a birth date only its patients born on it or one slip from
    it. Too many keys to ask for every study: (study rows, patient ids) not asked for before."""
    wanted: dict[str, list[int]] = {}
    initials: dict[str, list[int]] = {}
    for row in rows:
        family, given, birth = studies.family[row], studies.given[row], studies.birth[row]
        if not family or not given:
            continue
        if len(given) == 1:  # an initial: the ranges of the family names one slip away
            if len(birth) == 8 and not crypto.encrypting():
                for code in slipped_families(family, added=True):
                    initials.setdefault(f"N{code}{given}", []).append(row)
            continue
        prefixes = _given_prefixes(given, True)
        slips = one_slip(given[:4], added=True)
        keys = {f"N{family_key(family)}{slip[:3]}" for slip in slips if len(slip) > 1}
        if len(birth) == 8:
            codes = slipped_families(family, added=True)
            keys.update(f"N{code}{prefix}" for code in codes for prefix in prefixes)
        for key in keys - record_keys(studies, row, study=True):
            wanted.setdefault(key, []).append(row)
    query = select(_keys.c.key, _keys.c.patient_id)
    found = [
        (wanted[key], block)
        for key, block in _blocks(connection, query, _keys.c.key, wanted).items()
        if len(block) <= max_block_size
    ]
    ranges = _prefix_blocks(connection, set(initials) - set(_initial_ranges(studies)))
    found += [(initials[prefix], block) for prefix, block in ranges.items() if block]
    dated = {
        p
        for asking, block in found
        if any(len(studies.birth[r]) == 8 for r in asking)
        for p in block
    }
    born = {p: birth for p, (birth, _) in _birth_and_middle(connection, sorted(dated)).items()}
    study_rows: list[int] = []
    patient_ids: list[int] = []
    for asking, block in found:
        for row in asking:
            chosen = block
            if len(studies.birth[row]) == 8:
                near = birth_slips(studies.birth[row])
                chosen = [p for p in block if born.get(p, "") in near]
            study_rows.extend([row] * len(chosen))
            patient_ids.extend(chosen)
    return study_rows, patient_ids


def candidates(
    connection: Connection, studies: Records, max_block_size: int, extra: dict[int, set[int]]
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Candidate pairs: (study rows, patient positions, patient ids) — patient position i in
    the returned id list. ``extra``: study row → patients to add (merge survivors)."""
    found = candidate_sources(connection, studies, max_block_size, extra)
    rows = np.concatenate([np.asarray(r, dtype=np.int64) for r, _ in found.values()])
    patients_found = np.concatenate([np.asarray(p, dtype=np.int64) for _, p in found.values()])
    span = int(patients_found.max()) + 1 if len(patients_found) else 1
    pairs = np.unique(rows * span + patients_found)
    ids = np.unique(pairs % span)
    return pairs // span, np.searchsorted(ids, pairs % span), ids.tolist()
