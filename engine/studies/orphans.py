"""Which studies of the index do not belong to the MPI patient their identifier names.

- **Orphans**: the study's (patient_id, issuer) is no live MPI identifier — unknown, empty, held
  by several patients (a study without issuer whose id exists under several authorities), or
  the identifier of a patient since merged into another (the PACS still files it there).
- **Possible wrong-patient studies**: the identifier is live, but the name, birth date or sex
  the PACS recorded conflicts with that patient beyond a tolerance: a family name that matches
  neither the patient's name nor any earlier name or alias, a given name that is neither
  similar nor an initial, a birth date that differs by more than one typo (one digit, day
  and month swapped, or the century 19/20 slipped), a different sex (M against F; unknown
  never conflicts).

Each study comes with its flags (:func:`engine.studies.flags.study_flags`): the values the PACS
recorded that cannot be right (a birth date that is no calendar date, a placeholder name …).

The reconciler (next) proposes patients for orphans; wrong-patient studies need a human look.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler
from sqlalchemy import Engine, and_, or_, select

from engine.mpi.demographics import plain_name
from engine.mpi.tables import Patient, PatientIdentifier, PatientName
from engine.store.fastsql import chunks, in_values
from engine.store.schema import table_of
from engine.studies.flags import Flag, study_flags
from engine.studies.placeholders import Placeholders
from engine.studies.tables import Study, study_column

NAME_SIMILARITY = 0.85
"""Jaro-Winkler similarity at or above which two names are taken as the same name."""
CHUNK = 5000

_studies = table_of(Study)
_identifiers = table_of(PatientIdentifier)
_patients = table_of(Patient)
_names = table_of(PatientName)

STUDY_COLUMNS = (
    "study_uid",
    "accession",
    "patient_id",
    "issuer",
    "family_name",
    "given_name",
    "middle_name",
    "birth_date",
    "sex",
    "study_date",
    "modality",
    "description",
)


@dataclass(frozen=True, slots=True)
class StudySummary:
    """A study as the PACS recorded it (the columns a reviewer needs)."""

    study_uid: str
    accession: str
    patient_id: str
    issuer: str
    family_name: str
    given_name: str
    middle_name: str
    birth_date: str
    sex: str
    study_date: str
    modality: str
    description: str


@dataclass(frozen=True, slots=True)
class Orphan:
    study: StudySummary
    reason: str
    survivor: int | None = None
    """For the identifier of a merged patient: the patient it belongs to now."""
    flags: tuple[Flag, ...] = ()
    """The study's implausible values."""


@dataclass(frozen=True, slots=True)
class FieldConflict:
    field: str
    pacs: str
    mpi: str


@dataclass(frozen=True, slots=True)
class WrongPatient:
    study: StudySummary
    patient_id: int
    conflicts: tuple[FieldConflict, ...]
    flags: tuple[Flag, ...] = ()
    """The study's implausible values."""


@dataclass(frozen=True, slots=True)
class IdentifierHolder:
    """The MPI patient a study's identifier names, with what the comparison needs."""

    patient_id: int
    merged_into: int | None
    merged_from: int | None
    family_name: str
    given_name: str
    middle_name: str
    birth_date: str
    sex: str


def _similar(a: str, b: str, threshold: float) -> bool:
    return a == b or JaroWinkler.similarity(a, b) >= threshold


def _family_agrees(pacs: str, known: set[str], threshold: float) -> bool:
    """Similar to a known family name, or to one part of a double one (HERNÁNDEZ-LÓPEZ)."""
    pacs_parts = {pacs, *pacs.split()}
    for name in known:
        for part in {name, *name.split()}:
            if any(_similar(p, part, threshold) for p in pacs_parts if p and part):
                return True
    return False


def _given_agrees(
    given: str, middle: str, mpi_given: str, mpi_middle: str, threshold: float
) -> bool:
    """The given name is the MPI's given name (similar, or an initial of it), or given and
    middle names are swapped (LAN for THI LAN). Middle names alone never agree: twins share
    them."""
    if not given or not mpi_given:
        return True
    if len(given) == 1 or len(mpi_given) == 1:
        if given[0] == mpi_given[0]:
            return True
    elif _similar(given, mpi_given, threshold):
        return True
    pairs = ((given, mpi_middle), (middle, mpi_given))
    return any(len(a) > 1 and len(b) > 1 and _similar(a, b, threshold) for a, b in pairs)


def birth_dates_agree(pacs: str, mpi: str) -> bool:
    """Equal, or one typo apart (YYYYMMDD, compared digit by digit, whether or not the PACS's
    is a calendar date): one digit, day and month swapped, or the century 19/20 slipped. Text
    that is no date at all (``UNKNOWN``, ``27/04/1940``) is no evidence either way."""
    if not pacs or not mpi or pacs == mpi:
        return True
    if not (len(pacs) == len(mpi) == 8 and pacs.isdigit() and mpi.isdigit()):
        return True
    if pacs[:4] == mpi[:4] and pacs[4:6] == mpi[6:8] and pacs[6:8] == mpi[4:6]:
        return True
    if {pacs[:2], mpi[:2]} == {"19", "20"} and pacs[2:] == mpi[2:]:
        return True
    return DamerauLevenshtein.distance(pacs, mpi) <= 1


def _plain_words(name: str) -> str:
    """A family name for comparison, its parts (hyphen, space) kept apart by one space."""
    return " ".join(filter(None, (plain_name(part) for part in name.replace("-", " ").split())))


def conflicts(
    study: StudySummary,
    patient: IdentifierHolder,
    other_families: set[str],
    threshold: float = NAME_SIMILARITY,
) -> tuple[FieldConflict, ...]:
    """How what the PACS recorded disagrees with the MPI patient, beyond the tolerance."""
    found = []
    family, given = _plain_words(study.family_name), plain_name(study.given_name)
    mpi_family, mpi_given = _plain_words(patient.family_name), plain_name(patient.given_name)
    swapped = family and family == mpi_given and given == mpi_family
    known = {mpi_family, *other_families}
    if family and mpi_family and not swapped and not _family_agrees(family, known, threshold):
        found.append(FieldConflict("family_name", study.family_name, patient.family_name))
    middle, mpi_middle = plain_name(study.middle_name), plain_name(patient.middle_name)
    if not swapped and not _given_agrees(given, middle, mpi_given, mpi_middle, threshold):
        found.append(FieldConflict("given_name", study.given_name, patient.given_name))
    if not birth_dates_agree(study.birth_date, patient.birth_date):
        found.append(FieldConflict("birth_date", study.birth_date, patient.birth_date))
    if {study.sex, patient.sex} == {"M", "F"}:
        found.append(FieldConflict("sex", study.sex, patient.sex))
    return tuple(found)


def _joined(assume_issuer: str) -> Any:
    """Studies with every identifier row their patient id could name (outer join)."""
    issuer = _studies.c.issuer
    if assume_issuer:
        matches = and_(
            _identifiers.c.value == _studies.c.patient_id,
            or_(
                _identifiers.c.authority == issuer,
                and_(issuer == "", _identifiers.c.authority == assume_issuer),
            ),
        )
    else:
        matches = and_(
            _identifiers.c.value == _studies.c.patient_id,
            or_(_identifiers.c.authority == issuer, issuer == ""),
        )
    return (
        select(
            *(study_column(c) for c in STUDY_COLUMNS),
            _studies.c.id.label("row_id"),
            _identifiers.c.patient_id.label("owner"),
            _identifiers.c.merged_from,
            _patients.c.merged_into,
            _patients.c.family_name.label("mpi_family"),
            _patients.c.given_name.label("mpi_given"),
            _patients.c.middle_name.label("mpi_middle"),
            _patients.c.birth_date.label("mpi_birth"),
            _patients.c.sex.label("mpi_sex"),
        )
        .select_from(
            _studies.outerjoin(_identifiers, matches).outerjoin(
                _patients, _patients.c.id == _identifiers.c.patient_id
            )
        )
        .order_by(_studies.c.id)
    )


def _grouped(
    store: Engine, assume_issuer: str, study_uids: list[str] | None
) -> Iterator[tuple[StudySummary, list[IdentifierHolder]]]:
    if study_uids is None:
        yield from _grouped_rows(store, _joined(assume_issuer))
        return
    uids = sorted(set(study_uids))
    for chunk in chunks(uids, CHUNK):
        query = _joined(assume_issuer).where(in_values(_studies.c.study_uid, chunk))
        yield from _grouped_rows(store, query)


def _grouped_rows(
    store: Engine, query: Any
) -> Iterator[tuple[StudySummary, list[IdentifierHolder]]]:
    with store.connect() as connection:
        rows = connection.execution_options(stream_results=True, yield_per=CHUNK).execute(query)
        current: Any = None
        candidates: list[IdentifierHolder] = []
        for row in rows:
            if current is not None and row.row_id != current.row_id:
                yield _summary(current), candidates
                candidates = []
            current = row
            if row.owner is not None:
                candidates.append(
                    IdentifierHolder(
                        row.owner,
                        row.merged_into,
                        row.merged_from,
                        row.mpi_family,
                        row.mpi_given,
                        row.mpi_middle,
                        row.mpi_birth,
                        row.mpi_sex,
                    )
                )
        if current is not None:
            yield _summary(current), candidates


def _summary(row: Any) -> StudySummary:
    return StudySummary(*(getattr(row, c) for c in STUDY_COLUMNS))


def _other_families(store: Engine, patient_ids: set[int]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    ids = sorted(patient_ids)
    with store.connect() as connection:
        for start in range(0, len(ids), 900):
            query = select(_names.c.patient_id, _names.c.family_name).where(
                in_values(_names.c.patient_id, ids[start : start + 900])
            )
            for patient_id, family in connection.execute(query):
                found.setdefault(patient_id, set()).add(_plain_words(family))
    return found


def classify(
    store: Engine,
    *,
    assume_issuer: str = "",
    name_similarity: float = NAME_SIMILARITY,
    study_uids: list[str] | None = None,
    settings: Placeholders | None = None,
) -> Iterator[Orphan | WrongPatient]:
    """Every orphan and possible wrong-patient study of the index (of ``study_uids`` only, when
    given), in index order, each with its flags (``settings``: the reconciler's, which name
    the placeholders).

    ``assume_issuer``: the authority of studies whose PACS recorded no issuer; without it,
    such a study matches its id under any authority when exactly one patient holds it.
    """
    pending: list[tuple[StudySummary, IdentifierHolder]] = []
    today = date.today()

    def orphan(study: StudySummary, reason: str, survivor: int | None = None) -> Orphan:
        return Orphan(study, reason, survivor, study_flags(study, settings, today=today))

    def judge() -> Iterator[WrongPatient]:
        names = _other_families(store, {c.patient_id for _, c in pending})
        for study, candidate in pending:
            found = conflicts(
                study, candidate, names.get(candidate.patient_id, set()), name_similarity
            )
            if found:
                flags = study_flags(study, settings, today=today)
                yield WrongPatient(study, candidate.patient_id, found, flags)
        pending.clear()

    for study, candidates in _grouped(store, assume_issuer, study_uids):
        if not study.patient_id:
            yield orphan(study, "no patient id")
            continue
        if not candidates:
            yield orphan(study, "unknown identifier")
            continue
        if len({c.patient_id for c in candidates}) > 1:
            yield orphan(
                study,
                f"ambiguous: {len(candidates)} patients hold this id under different issuers",
            )
            continue
        candidate = candidates[0]
        if candidate.merged_from is not None or candidate.merged_into is not None:
            yield orphan(
                study,
                "identifier of a merged patient",
                candidate.patient_id if candidate.merged_into is None else candidate.merged_into,
            )
            continue
        pending.append((study, candidate))
        if len(pending) >= CHUNK:
            yield from judge()
    if pending:
        yield from judge()
