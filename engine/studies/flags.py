"""What a PACS recorded for a study: kept as recorded, and flagged where it cannot be right.

The study index refuses nothing but a study it cannot identify (no Study Instance UID): a
study whose patient data is wrong is exactly one that needs reconciling. So a birth date of
``20951022`` or ``19450493``, a sex code ``W`` or a patient called ``DOE`` are kept as the PACS
recorded them and *flagged* when read, by :func:`study_flags`, the one place that says which
values of a study are implausible and why. The import, the pull, ``studies orphans``, the
reconciler and ``review show`` all ask it.

What is kept: dates as their digits (``1945-04-93`` becomes ``19450493``, whether a calendar
date or not: only the separators are dropped, never a guess at the order), any other text as
recorded (``27/04/1940``); sex codes in upper case (``male`` becomes ``M``), other text as
recorded (``Frau``). Only a value too long for the index (over 64 characters for a date, 16 for
a sex: :func:`recorded_date`, :func:`recorded_sex` return None) is left out, and said so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from engine.mpi.demographics import SEXES, name_words
from engine.studies.placeholders import DEFAULTS, Placeholders
from engine.studies.tables import RECORDED_DATE, RECORDED_SEX

EARLIEST_YEAR = 1850
"""A birth or study date before this year is flagged (as ``mpi import`` refuses it)."""
DATE_LENGTH = 8
"""The index keeps dates as YYYYMMDD: at most this many characters."""
SEX_CODES = ("M", "F", "O", "U", *sorted(SEXES - {"M", "F", "O", "U"}))
"""The sex codes of DICOM (M, F, O) and HL7 table 0001 (U, A, N, X) that are not flagged."""
SEX_WORDS = {"MALE": "M", "FEMALE": "F", "OTHER": "O", "UNKNOWN": "U"}
"""Words kept as their code (a CSV export may spell the sex out)."""

PLACEHOLDER = "is a placeholder"
NOT_A_DATE = "is not a date (YYYYMMDD)"
NOT_A_CALENDAR_DATE = "is not a calendar date"
IN_THE_FUTURE = "is in the future"
TOO_EARLY = f"is before {EARLIEST_YEAR}"
NOT_A_SEX_CODE = f"is not a sex code ({', '.join(SEX_CODES)})"

LABELS = {
    "family_name": "family name",
    "given_name": "given name",
    "birth_date": "birth date",
    "sex": "sex",
    "study_date": "study date",
}
"""The fields that can be flagged, in the order flags are listed, as an administrator says them."""

# YYYY-MM-DD, YYYY.MM.DD (ACR-NEMA), YYYY/MM/DD, maybe followed by a time; or a DICOM DT.
_SEPARATED = re.compile(r"(\d{4})([-./])(\d{2})\2(\d{2})(?:[T ][0-9:.+\-Z]*)?")
_DATE_TIME = re.compile(r"(\d{8})\d{2,6}(?:\.\d{1,6})?(?:[+-]\d{4})?")


def recorded_date(text: str) -> str | None:
    """A date as the index keeps it: ``YYYYMMDD`` from ``YYYYMMDD``, ``YYYY-MM-DD``,
    ``YYYY.MM.DD`` or ``YYYY/MM/DD`` (a time after it dropped), calendar date or not; other
    text as recorded; '' for nothing; None for text longer than the index holds.

    >>> recorded_date("1945-04-93"), recorded_date("19402704"), recorded_date("27/04/1940")
    ('19450493', '19402704', '27/04/1940')
    """
    value = text.strip()
    if not value:
        return ""
    if match := _SEPARATED.fullmatch(value):
        return match[1] + match[3] + match[4]
    if match := _DATE_TIME.fullmatch(value):
        return match[1]
    return value if len(value) <= RECORDED_DATE else None


def recorded_sex(text: str) -> str | None:
    """A sex as the index keeps it: a code in upper case (``male``, ``female``, ``other``,
    ``unknown`` as M, F, O, U), other text as recorded (flagged when read); None for text
    longer than the index holds."""
    value = text.strip()
    code = SEX_WORDS.get(value.upper(), value.upper())
    if len(code) == 1:
        return code
    return value if len(value) <= RECORDED_SEX else None


@dataclass(frozen=True, slots=True)
class Flag:
    """One implausible value: the field, the value as recorded, and why it cannot be right."""

    field: str
    value: str
    reason: str

    def __str__(self) -> str:
        value = self.value if re.fullmatch(r"[\w-]+", self.value) else repr(self.value)
        return f"{LABELS[self.field]} {value} {self.reason}"

    @property
    def compared(self) -> bool:
        """Whether the value still takes part in comparisons: a date that is impossible, in
        the future or too early is compared digit by digit (day and month swapped, one digit
        off, the century 19/20 slipped); a placeholder or text that is no date is no
        evidence, and sex codes other than M and F never were."""
        return self.field in ("birth_date", "study_date") and self.reason not in (
            PLACEHOLDER,
            NOT_A_DATE,
        )


class StudyValues(Protocol):
    """What :func:`study_flags` reads (a ``StudyRecord``, a ``StudySummary``, ``Recorded``)."""

    @property
    def family_name(self) -> str: ...
    @property
    def given_name(self) -> str: ...
    @property
    def birth_date(self) -> str: ...
    @property
    def sex(self) -> str: ...
    @property
    def study_date(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Recorded:
    """The values :func:`study_flags` reads, for callers that hold them apart."""

    family_name: str = ""
    given_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_date: str = ""


def date_problem(value: str, today: date | None = None) -> str:
    """Why ``value`` (as the index keeps dates) cannot be a real date: '' when it can be."""
    if len(value) != DATE_LENGTH or not value.isdigit():
        return NOT_A_DATE
    try:
        day = date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return NOT_A_CALENDAR_DATE
    if day.year < EARLIEST_YEAR:
        return TOO_EARLY
    # A day of tolerance: a PACS, or a newborn's registration, in another time zone.
    if day > (today or date.today()) + timedelta(days=1):
        return IN_THE_FUTURE
    return ""


def is_placeholder_name(name: str, settings: Placeholders) -> bool:
    """Whether ``name`` is one of the reconciler's ``placeholder_names`` (DOE, TRAUMA*, …), as
    recorded or as compared (``Doe.`` is DOE)."""
    return settings.placeholder_name(name) or settings.placeholder_name(name_words(name))


def study_flags(
    study: StudyValues, settings: Placeholders | None = None, *, today: date | None = None
) -> tuple[Flag, ...]:
    """The implausible values of ``study``, each with its reason, in the order of ``LABELS``:
    a placeholder family or given name (the reconciler's ``placeholder_names``); a birth date
    that is a placeholder (``placeholder_birth_dates``), no date, not a calendar date, before
    1850 or in the future; a sex that is not a DICOM or HL7 code; a study date that is no
    date, not a calendar date, before 1850 or in the future. Empty values are never flagged."""
    rules = settings or DEFAULTS
    found: list[Flag] = []
    for field in ("family_name", "given_name"):
        name = getattr(study, field)
        if name and is_placeholder_name(name, rules):
            found.append(Flag(field, name, PLACEHOLDER))
    birth = study.birth_date
    if birth:
        if birth in rules.placeholder_birth_dates:
            found.append(Flag("birth_date", birth, PLACEHOLDER))
        elif problem := date_problem(birth, today):
            found.append(Flag("birth_date", birth, problem))
    if study.sex and study.sex not in SEXES:
        found.append(Flag("sex", study.sex, NOT_A_SEX_CODE))
    if study.study_date and (problem := date_problem(study.study_date, today)):
        found.append(Flag("study_date", study.study_date, problem))
    return tuple(found)
