"""What a study-level query of an archive asks and how its answers become study records:
the contract the C-FIND client (``cfind.py``) and the QIDO-RS client (``qido.py``) share, and
that the pull (``pull.py``) drives.

Nothing logged here at INFO or above carries patient data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import fields
from types import TracebackType
from typing import Literal, Self

from engine.errors import CrosswalkError
from engine.store.schema import table_of
from engine.studies.flags import recorded_date, recorded_sex
from engine.studies.index import StudyRecord
from engine.studies.settings import ArchiveSettings
from engine.studies.tables import Study

__all__ = [
    "ATTRIBUTES",
    "PROTOCOLS",
    "Protocol",
    "PullError",
    "StudyQuery",
    "date_range",
    "make_record",
    "normalise_date",
    "split_address",
    "split_person_name",
]

log = logging.getLogger("engine.studies.pull")
"""The pull's one logger, whichever module of it logs (its lines read as before the split)."""

Protocol = Literal["dicom", "dicomweb"]
PROTOCOLS: tuple[Protocol, ...] = ("dicom", "dicomweb")

# (keyword, tag) of the study-level attributes asked for, by C-FIND and by QIDO-RS includefield.
ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("StudyInstanceUID", "0020000D"),
    ("AccessionNumber", "00080050"),
    ("PatientID", "00100020"),
    ("IssuerOfPatientID", "00100021"),
    ("PatientName", "00100010"),
    ("PatientBirthDate", "00100030"),
    ("PatientSex", "00100040"),
    ("PatientAddress", "00101040"),
    ("PatientTelephoneNumbers", "00102154"),
    ("StudyDate", "00080020"),
    ("ModalitiesInStudy", "00080061"),
    ("StudyDescription", "00081030"),
)
_LENGTHS: dict[str, int] = {
    # Every column of a study record is a String, which has a length (TypeEngine has none).
    f.name: table_of(Study).c[f.name].type.length  # type: ignore[attr-defined]
    for f in fields(StudyRecord)
}


class PullError(CrosswalkError):
    """The archive could not be queried; the message names the archive and its address."""


# --- converting answers ---------------------------------------------------------------------


def split_person_name(text: str) -> tuple[str, str, str]:
    """(family, given, middle) of a DICOM PN ``FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX``.

    Only the first (alphabetic) group of ``alphabetic=ideographic=phonetic`` is used.

    >>> split_person_name("Doe^John^Quincy^^Jr")
    ('Doe', 'John', 'Quincy')
    """
    parts = [p.strip() for p in text.split("=", 1)[0].split("^")]
    parts += [""] * 3
    return parts[0], parts[1], parts[2]


def normalise_date(text: str) -> str:
    """A DA value as the index keeps it: YYYYMMDD (from the old ``YYYY.MM.DD`` too), calendar
    date or not (``19450493`` is kept, and flagged); other short text as recorded; '' when
    empty or too long for the index (:func:`engine.studies.flags.recorded_date`)."""
    return recorded_date(text) or ""


def split_address(text: str) -> tuple[str, str, str, str]:
    """(street, city, state, postal code) of Patient's Address.

    Archives fed by HL7 often keep the PID-11 components (``street^other^city^state^zip``);
    free text goes entirely into the street.
    """
    if "^" not in text:
        return text.strip(), "", "", ""
    parts = [p.strip() for p in text.split("^")] + [""] * 5
    street = ", ".join(p for p in parts[:2] if p)
    return street, parts[2], parts[3], parts[4]


def make_record(values: Callable[[str], list[str]], default_issuer: str) -> StudyRecord | None:
    """A study from ``values(keyword)`` (the attribute's values as text); None without a UID."""

    def first(keyword: str) -> str:
        found = values(keyword)
        return found[0].replace("\x00", "").strip() if found else ""  # no store keeps NUL

    uid = first("StudyInstanceUID")
    if not uid or len(uid) > _LENGTHS["study_uid"]:
        return None
    family, given, middle = split_person_name(first("PatientName"))
    street, city, state, postal_code = split_address(first("PatientAddress"))
    sex = recorded_sex(first("PatientSex")) or ""
    record = {
        "study_uid": uid,
        "accession": first("AccessionNumber"),
        "patient_id": first("PatientID"),
        "issuer": first("IssuerOfPatientID") or default_issuer,
        "family_name": family,
        "given_name": given,
        "middle_name": middle,
        "birth_date": normalise_date(first("PatientBirthDate")),
        "sex": sex,
        "street": street,
        "city": city,
        "state": state,
        "postal_code": postal_code,
        "phone": first("PatientTelephoneNumbers"),
        "study_date": normalise_date(first("StudyDate")),
        "modality": "\\".join(v.strip() for v in values("ModalitiesInStudy") if v.strip()),
        "description": first("StudyDescription"),
    }
    # Cut what would not fit the column (PostgreSQL refuses it); UIDs were checked above.
    return StudyRecord(**{k: v[: _LENGTHS[k]] for k, v in record.items()})


def date_range(low: str, high: str) -> str:
    """A DICOM date range: ``low-high``, ``low-`` (open) or '' (every study)."""
    return f"{low}-{high}" if low else ""


class StudyQuery:
    """A connection to an archive that answers study-level queries by date range."""

    protocol: Protocol

    def __init__(self, archive: ArchiveSettings) -> None:
        self.archive = archive
        self.records_skipped = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def find(self, low: str, high: str) -> Iterator[StudyRecord]:
        """The studies dated from ``low`` to ``high`` ('' = open; both '' = every study)."""
        raise NotImplementedError

    def _record(self, values: Callable[[str], list[str]], issuer: str) -> StudyRecord | None:
        try:
            record = make_record(values, issuer)
        except Exception as error:  # a value the library cannot decode: skip that study only
            log.warning("skipped a study whose answer could not be read (%s)", type(error).__name__)
            record = None
        if record is None:
            self.records_skipped += 1
        return record
