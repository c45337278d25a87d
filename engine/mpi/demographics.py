"""Patient demographics as HL7 carries them: identifiers (CX), names (XPN), and the rest of PID.

The MPI reads messages through these functions; the CSV import and the study index produce the
same :class:`Demographics`, so every source is compared on equal terms.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache, partial
from typing import TypeVar

from engine.csv_import.rows import RowError
from engine.hl7v2.escaping import unescape
from engine.hl7v2.fieldpath import FieldPath
from engine.hl7v2.message import Message, Segment
from engine.mpi import bounds
from engine.mpi.bounds import fit

NAME_KINDS = {
    "A": "alias",
    "M": "maiden",
    "B": "birth",
    "C": "adopted",
    "P": "previous",
    "N": "nickname",
    "S": "coded",
    "D": "display",
    "R": "registered",
}
"""XPN-7 name type codes (HL7 table 0200) kept as other names; L (legal) or none is current."""
SEXES = {"M", "F", "O", "U", "A", "N", "X"}
_T = TypeVar("_T")


def pickled_as_arguments(cls: type[_T]) -> type[_T]:
    """Pickle a frozen, slotted dataclass as the arguments of its constructor.

    The state pickling dataclasses generate for slotted classes calls ``fields()`` and
    ``object.__setattr__`` per object on loading; the routing process sends every registering
    ADT's demographics to the engine (identifiers and names: ~8 objects a message), and this
    halves what unpickling them costs the engine's event loop."""
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def __reduce__(self: _T) -> tuple[type[_T], tuple[object, ...]]:
        return cls, tuple([getattr(self, name) for name in names])

    cls.__reduce__ = __reduce__  # type: ignore[method-assign, assignment]
    return cls


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Identifier:
    """A patient identifier: value, assigning authority (CX-4.1), type code (CX-5)."""

    value: str
    authority: str = ""
    type_code: str = ""

    def __str__(self) -> str:
        return f"{self.value}^^^{self.authority}" if self.authority else self.value


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Name:
    family: str = ""
    given: str = ""
    middle: str = ""
    kind: str = ""
    """'' for the current (legal) name, else a kind from :data:`NAME_KINDS`."""

    @property
    def empty(self) -> bool:
        return not (self.family or self.given or self.middle)


@pickled_as_arguments
@dataclass(frozen=True, slots=True)
class Demographics:
    """What a message (or a row of an export) says about a patient."""

    identifiers: tuple[Identifier, ...] = ()
    name: Name = Name()
    other_names: tuple[Name, ...] = ()
    birth_date: str = ""
    sex: str = ""
    street: str = ""
    city: str = ""
    state: str = ""
    postal_code: str = ""
    phone: str = ""
    extras: dict[str, str] = field(default_factory=dict, compare=False)

    def columns(self) -> dict[str, str]:
        """The ``patients`` columns these demographics set."""
        return {
            "family_name": self.name.family,
            "given_name": self.name.given,
            "middle_name": self.name.middle,
            "birth_date": self.birth_date,
            "sex": self.sex,
            "street": self.street,
            "city": self.city,
            "state": self.state,
            "postal_code": self.postal_code,
            "phone": self.phone,
        }


def _label(segment: Segment, position: int, repetition: int, component: int) -> str:
    """The field a value came from, as analysts write it: PID-3.1, PID-3[2].4."""
    index = f"[{repetition}]" if repetition > 1 else ""
    return f"{segment.id}-{position}{index}.{component}"


def identifiers(message: Message, segment: Segment, position: int) -> tuple[Identifier, ...]:
    """The CX repetitions of ``segment``-``position`` (PID-3, MRG-1 …), empty ones dropped.

    Bounded for the MPI (:mod:`engine.mpi.bounds`): an over-long value or authority, or NUL,
    is refused; an over-long type code is cut."""
    d = message.delimiters
    found = []
    for number, repetition in enumerate(segment.field(position).split(d.repetition), start=1):
        components = repetition.split(d.component)
        value = unescape(components[0], d).strip()
        if not value:
            continue
        authority = components[3].split(d.subcomponent)[0] if len(components) > 3 else ""
        type_code = components[4] if len(components) > 4 else ""
        found.append(
            Identifier(
                fit(value, bounds.identifiers.value, partial(_label, segment, position, number, 1)),
                fit(
                    unescape(authority, d).strip(),
                    bounds.identifiers.authority,
                    partial(_label, segment, position, number, 4),
                ),
                fit(
                    unescape(type_code, d),
                    bounds.identifiers.type_code,
                    partial(_label, segment, position, number, 5),
                ),
            )
        )
    return tuple(found)


def _names(message: Message, segment: Segment) -> tuple[Name, tuple[Name, ...]]:
    """The current name and the other names of PID-5, bounded for the MPI (cut to fit)."""
    d = message.delimiters
    current = Name()
    others: list[Name] = []
    for index, repetition in enumerate(segment.field(5).split(d.repetition)):
        components = [unescape(c, d).strip() for c in repetition.split(d.component)]
        components += [""] * (7 - len(components))
        type_code = components[6].upper()
        name = Name(
            components[0].split(d.subcomponent)[0],
            components[1],
            components[2],
            NAME_KINDS.get(type_code, ""),
        )
        if name.empty:
            continue
        current_name = current.empty and (type_code in ("", "L") or index == 0)
        columns = bounds.patients if current_name else bounds.names
        family, given, middle = (
            fit(part, columns[column], partial(_label, segment, 5, index + 1, component))
            for part, column, component in (
                (name.family, "family_name", 1),
                (name.given, "given_name", 2),
                (name.middle, "middle_name", 3),
            )
        )
        if current_name:
            current = Name(family, given, middle, "")
        else:
            others.append(Name(family, given, middle, name.kind or "alias"))
    return current, tuple(others)


def normal_date(text: str) -> str:
    """YYYYMMDD from an HL7 date (or ISO date), '' when it is not one."""
    digits = text.strip().replace("-", "")[:8]
    if len(digits) == 8 and digits.isdigit():
        try:  # a real day (strptime's parse costs ten times as much, for every ADT)
            date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        except ValueError:
            return ""
        return digits
    return ""


def _phone(message: Message, raw: str) -> str:
    d = message.delimiters
    first = raw.split(d.repetition)[0]
    components = [unescape(c, d).strip() for c in first.split(d.component)]
    if components and components[0]:
        return components[0]
    components += [""] * (7 - len(components))
    return f"({components[5]}){components[6]}" if components[5] else components[6]


def from_pid(message: Message, segment: Segment) -> Demographics:
    """Demographics from one PID segment, bounded for the MPI (:mod:`engine.mpi.bounds`)."""
    d = message.delimiters
    name, others = _names(message, segment)
    address = [
        unescape(c, d).strip() for c in segment.field(11).split(d.repetition)[0].split(d.component)
    ]
    address += [""] * (5 - len(address))
    sex = unescape(segment.field(8), d).strip()[:1].upper()
    columns = bounds.patients
    return Demographics(
        identifiers=identifiers(message, segment, 3),
        name=name,
        other_names=others,
        birth_date=normal_date(unescape(segment.field(7), d)),
        sex=sex if sex in SEXES else "",
        street=fit(address[0].split(d.subcomponent)[0], columns.street, f"{segment.id}-11.1"),
        city=fit(address[2], columns.city, f"{segment.id}-11.3"),
        state=fit(address[3], columns.state, f"{segment.id}-11.4"),
        postal_code=fit(address[4], columns.postal_code, f"{segment.id}-11.5"),
        phone=fit(_phone(message, segment.field(13)), columns.phone, f"{segment.id}-13"),
    )


_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?")


def event_time(message: Message) -> str:
    """EVN-2 (else MSH-7) as a sortable text: YYYYMMDDHHMMSS.ffffff, in UTC when the message
    gives an offset. '' when neither is a date."""
    for path in (FieldPath("EVN", 2), FieldPath("EVN", 6), FieldPath("MSH", 7)):
        text = message.value(path).strip()
        match = _DTM.fullmatch(text)
        if not match:
            continue
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        try:
            moment = datetime(
                int(year),
                int(month or 1),
                int(day or 1),
                int(hour or 0),
                int(minute or 0),
                int(second or 0),
                int((fraction or "0").ljust(6, "0")),
            )
        except ValueError:
            continue
        if offset:
            sign = 1 if offset[0] == "+" else -1
            minutes = sign * (int(offset[1:3]) * 60 + int(offset[3:5]))
            moment = (moment - timedelta(minutes=minutes)).replace(tzinfo=UTC)
        return moment.strftime("%Y%m%d%H%M%S.%f")
    return ""


_SEX_WORDS = {"MALE": "M", "FEMALE": "F", "OTHER": "O", "UNKNOWN": "U"}
_TEXT_COLUMNS = (
    "family_name",
    "given_name",
    "middle_name",
    "street",
    "city",
    "state",
    "postal_code",
    "phone",
)
DEMOGRAPHIC_CSV_COLUMNS = (*_TEXT_COLUMNS, "birth_date", "sex")
"""Demographic columns an export may carry (MPI and study imports alike)."""


def date_column(row: dict[str, str], column: str, latest: date | None = None) -> str:
    """YYYYMMDD from a YYYY-MM-DD or YYYYMMDD value, '' when empty; else :class:`RowError`.

    Dates before 1850 or after ``latest`` (default: tomorrow) are refused.
    """
    text = row.get(column, "")
    if not text:
        return ""
    digits = text.replace("-", "") if len(text) == 10 and text[4] == text[7] == "-" else text
    if len(digits) != 8 or not digits.isdigit():
        raise RowError(column, f"{text!r} is not a date (YYYY-MM-DD or YYYYMMDD)")
    try:
        day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        raise RowError(column, f"{text!r} is not a calendar date") from None
    if day.year < 1850 or day > (latest or date.today() + timedelta(days=1)):
        raise RowError(column, f"{text!r} is out of range (1850 to today)")
    return digits


def clean_demographics(row: dict[str, str], latest_birth: date | None = None) -> dict[str, str]:
    """The demographic columns of a CSV row, checked and normalised; else :class:`RowError`."""
    values = {}
    for column in _TEXT_COLUMNS:  # refused whole rather than cut: the row is reported
        value = row.get(column, "")
        problem = bounds.problem(value, bounds.patients[column])
        if problem:
            raise RowError(column, problem)
        values[column] = value
    values["birth_date"] = date_column(row, "birth_date", latest_birth)
    sex = row.get("sex", "").upper()
    sex = _SEX_WORDS.get(sex, sex)
    if sex and sex not in SEXES:
        raise RowError(
            "sex", f"{row['sex']!r} is not a sex code (M, F, O, U, A, N, X or male/female)"
        )
    values["sex"] = sex
    return values


def demographics_from_columns(identifier: Identifier, columns: dict[str, str]) -> Demographics:
    """Demographics of one identifier from checked columns (:func:`clean_demographics`)."""
    return Demographics(
        identifiers=(identifier,),
        name=Name(columns["family_name"], columns["given_name"], columns["middle_name"]),
        birth_date=columns["birth_date"],
        sex=columns["sex"],
        street=columns["street"],
        city=columns["city"],
        state=columns["state"],
        postal_code=columns["postal_code"],
        phone=columns["phone"],
    )


def plain_name(text: str) -> str:
    """A name for comparison: upper case, accents and everything but letters removed.

    >>> plain_name("García-López, Ana")
    'GARCIALOPEZANA'
    """
    decomposed = unicodedata.normalize("NFKD", text.upper())
    return "".join(c for c in decomposed if c.isalpha() and not unicodedata.combining(c))


_SUFFIXES = {"JR", "SR", "II", "III", "IV"}


@lru_cache(maxsize=1 << 18)
def name_words(name: str) -> str:
    """A name for comparison: plain letters, its parts (hyphen, space) kept apart by a space;
    generational suffixes dropped (they are compared through the birth date).

    >>> name_words("García-López Jr.")
    'GARCIA LOPEZ'
    """
    words = (plain_name(part) for part in name.replace("-", " ").replace(",", " ").split())
    return " ".join(w for w in words if w and w not in _SUFFIXES)
