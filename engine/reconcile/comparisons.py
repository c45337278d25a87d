"""Field comparisons of (study, patient) pairs: each one an ordered list of levels.

A :class:`Comparison` sorts a pair into the first of its levels (:class:`Level`) that
applies, in the order listed (as Splink composes a comparison of comparison levels). Its first
level, ``null``, means "no evidence" (a value missing or a placeholder) and weighs nothing; its
last (``different`` …) takes every pair no other level took. Each level carries what the model
starts from: its m probability (EM refines it) and the u probability random pairs are smoothed
towards (``estimation.py``).

The masks are column-wise, built on the pair-coding kernel (``kernel.py``); a mask is asked only
about the pairs no earlier level took, so the costly ones (string similarities) run only there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from engine.reconcile.kernel import Field, Pairs, equal_values, filled, first_level
from engine.reconcile.names import phonetic, same_person_names

__all__ = [
    "ACCESSION",
    "ADDRESS",
    "BIRTH_DATE",
    "COLUMNS",
    "COMPARISONS",
    "FAMILY_NAME",
    "GIVEN_NAME",
    "IDENTIFIER",
    "MIDDLE_NAME",
    "ONE_SLIP_LENGTH",
    "PHONE",
    "SEX",
    "SIMILAR",
    "Comparison",
    "Level",
    "Mask",
    "compare",
    "day_month_swapped",
    "either_empty",
    "first_letter",
    "names_alone",
    "other_century",
    "same",
    "share_a_word",
    "similar_name",
    "study_turned",
    "swapped",
    "year",
]

SIMILAR = 0.92
"""Jaro-Winkler similarity from which two names count as one name misspelt."""
ONE_SLIP_LENGTH = 4
"""Names at least this long (both) also count as one name misspelt when one edit apart (a
letter wrong, dropped or two swapped): Jaro-Winkler forgives little in the first letters."""

Mask = Callable[[Pairs, np.ndarray], np.ndarray]
"""Which pairs a level takes: ``mask(pairs, where)``, one bool per pair, read only ``where``
(the pairs still open: not null, no earlier level took them), so it may compute only there."""


@dataclass(frozen=True, slots=True)
class Level:
    """One level of a comparison: its name, which pairs it takes, its starting m and u."""

    name: str
    mask: Mask | None
    """None: every pair still open (the last level, as Splink's ``ElseLevel``)."""
    m: float = 0.0
    """Starting m probability: how often a true match shows this level (EM refines it)."""
    u: float = 0.0
    """Prior u probability: what random pairs are smoothed towards (it counts for
    ``estimation.PRIOR_PAIRS`` pairs: 0.001 is one pair in a thousand)."""

    @classmethod
    def null(cls, mask: Mask) -> Level:
        """The first level: no evidence either way (weight 0; m and u unused)."""
        return cls("null", mask)

    @classmethod
    def otherwise(cls, name: str, m: float, u: float) -> Level:
        """The last level: every pair no earlier level took."""
        return cls(name, None, m, u)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Comparison:
    """One field's comparison: an ordered list of levels, the first that applies wins.

    A pair's level code is its level's position in ``levels`` (0: ``null``); m and u
    probabilities, stored parameters and evidence are indexed by it."""

    name: str
    levels: tuple[Level, ...]
    frequency_field: str = ""
    """The ``Records`` field whose term frequency adjusts the weight of the ``exact`` level."""
    spellings: tuple[str, ...] = ()
    """Levels that are the same value spelt otherwise: however common the value, ``exact``
    never weighs less than they do (NANCY = NANCY is better evidence than NANCY ~ NANCIE)."""

    def __post_init__(self) -> None:
        first, *middle, last = self.levels
        if first.name != "null" or first.mask is None:
            raise ValueError(f"{self.name}: the first level is Level.null(...)")
        if last.mask is not None or any(level.mask is None for level in middle):
            raise ValueError(f"{self.name}: only the last level is Level.otherwise(...)")
        if len(set(self.names)) != len(self.levels) or len(self.levels) > 127:
            raise ValueError(f"{self.name}: level names must be unique (at most 127 levels)")
        if not set(self.spellings) <= set(self.names):
            raise ValueError(f"{self.name}: spellings must name levels")

    @property
    def names(self) -> tuple[str, ...]:
        """The level names, by code."""
        return tuple(level.name for level in self.levels)

    def code_of(self, level: str) -> int:
        """The code of the level named ``level``."""
        return self.names.index(level)

    @property
    def starting_m(self) -> list[float]:
        """m of each level, by code, as EM starts from them (0 for null)."""
        return [level.m for level in self.levels]

    @property
    def prior_u(self) -> list[float]:
        """u of each level, by code, as random pairs are smoothed towards (0 for null)."""
        return [level.u for level in self.levels]

    def compare(self, pairs: Pairs) -> np.ndarray:
        """Per pair, the code of its level (int8)."""
        everything = np.ones(len(pairs), dtype=bool)
        null_mask = self.levels[0].mask
        assert null_mask is not None  # checked in __post_init__
        masks = [partial(level.mask, pairs) for level in self.levels[1:-1] if level.mask]
        return first_level(null_mask(pairs, everything), masks)


# --- what values are coded as ---------------------------------------------------------------

CENTURY_SLIPS = {"19": "20", "20": "19"}


def other_century(value: str) -> str:
    """A date with its century 19 and 20 swapped (20451022 for 19451022); others as they are."""
    century = CENTURY_SLIPS.get(value[:2])
    return century + value[2:] if century else value


def year(value: str) -> str:
    return value[:4]


def day_month_swapped(value: str) -> str:
    return value[:4] + value[6:8] + value[4:6]


def first_letter(value: str) -> str:
    return value[:1]


# --- shared masks ---------------------------------------------------------------------------

FAMILY_S: Field = ("s", "family")
FAMILY_P: Field = ("p", "family")
GIVEN_S: Field = ("s", "given")
GIVEN_P: Field = ("p", "given")


def either_empty(a: Field, b: Field) -> Mask:
    """The null mask of one field compared on both sides: a value missing on either."""

    def mask(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
        return pairs.empty(*a) | pairs.empty(*b)

    return mask


def same(a: Field, b: Field, derive: Callable[[str], str] | None = None) -> Mask:
    """The same value on both sides (with ``derive``: both values turned by it, as a name's
    Metaphone code or a date's year)."""

    def mask(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
        return pairs.codes(*a, derive) == pairs.codes(*b, derive)

    return mask


def study_turned(a: Field, b: Field, derive: Callable[[str], str]) -> Mask:
    """The study's value turned by ``derive`` is the patient's as it is (a date with day and
    month swapped, or its century slipped)."""

    def mask(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
        return pairs.codes(*a, derive) == pairs.codes(*b)

    return mask


def similar_name(pairs: Pairs, a: Field, b: Field, where: np.ndarray) -> np.ndarray:
    """Per pair, whether two names are one name misspelt: Jaro-Winkler ≥ ``SIMILAR``, or one
    edit apart when both have ``ONE_SLIP_LENGTH`` letters; only ``where``."""
    similar = pairs.similarity_at_least(a, b, where, SIMILAR)
    long_enough = (pairs.lengths(*a) >= ONE_SLIP_LENGTH) & (pairs.lengths(*b) >= ONE_SLIP_LENGTH)
    rows = np.flatnonzero(where & long_enough & ~similar)
    similar[rows] = pairs.one_edit(a, b, rows)
    return similar


def _share_word(a: str, b: str) -> bool:
    return bool(a) and bool(b) and not set(a.split()).isdisjoint(b.split())


def share_a_word(pairs: Pairs, a: Field, b: Field) -> np.ndarray:
    """Per pair, whether the two names share a word (equal single words included)."""
    equal = pairs.codes(*a) == pairs.codes(*b)
    equal &= pairs.codes(*a) != 0
    several = pairs.several_words(*a) | pairs.several_words(*b)
    return equal | pairs.test(a, b, several & ~equal, _share_word)


def swapped(pairs: Pairs) -> np.ndarray:
    """Family and given name recorded the other way round (NGUYEN^THI LAN as LAN^NGUYEN THI);
    made once per pair set, for both name comparisons."""

    def build() -> np.ndarray:
        crossed = share_a_word(pairs, FAMILY_S, GIVEN_P) & share_a_word(pairs, GIVEN_S, FAMILY_P)
        filled_all = ~(
            pairs.empty(*FAMILY_S)
            | pairs.empty(*GIVEN_S)
            | pairs.empty(*FAMILY_P)
            | pairs.empty(*GIVEN_P)
        )
        first = pairs.similarity_at_least(FAMILY_S, GIVEN_P, filled_all & ~crossed, SIMILAR)
        return crossed | pairs.similarity_at_least(GIVEN_S, FAMILY_P, first, SIMILAR)

    return pairs.cached(("swapped",), build)


def _swapped(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    return swapped(pairs)


# --- family name ----------------------------------------------------------------------------


def _other_family_name(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    """An earlier name, alias or maiden name of the patient."""
    return pairs.member("p", "other_families", pairs.codes(*FAMILY_S))


def _similar_family_name(pairs: Pairs, where: np.ndarray) -> np.ndarray:
    return similar_name(pairs, FAMILY_S, FAMILY_P, where)


def _one_part(pairs: Pairs, where: np.ndarray) -> np.ndarray:
    """One part of a double or hyphenated name (HERNANDEZ LOPEZ, LOPEZ)."""
    several = pairs.several_words(*FAMILY_S) | pairs.several_words(*FAMILY_P)
    return pairs.test(FAMILY_S, FAMILY_P, several & where, _share_word)


FAMILY_NAME = Comparison(
    "family_name",
    (
        Level.null(either_empty(FAMILY_S, FAMILY_P)),
        Level("exact", same(FAMILY_S, FAMILY_P), m=0.82, u=0.003),
        Level("other_name", _other_family_name, m=0.02, u=0.0005),
        Level("similar", _similar_family_name, m=0.05, u=0.002),
        Level("one_part", _one_part, m=0.02, u=0.0005),
        Level("swapped", _swapped, m=0.01, u=0.0001),
        Level("phonetic", same(FAMILY_S, FAMILY_P, phonetic), m=0.02, u=0.004),
        Level.otherwise("different", m=0.06, u=0.9899),
    ),
    frequency_field="family",
    spellings=("similar", "phonetic"),
)


# --- given name -----------------------------------------------------------------------------


def _full(pairs: Pairs) -> np.ndarray:
    """Both given names more than an initial."""

    def build() -> np.ndarray:
        return (pairs.lengths(*GIVEN_S) > 1) & (pairs.lengths(*GIVEN_P) > 1)

    return pairs.cached(("full given names",), build)


def _nickname(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    """The patient's given name is a nickname or formal form of the study's (BILL, WILLIAM)."""
    return _full(pairs) & pairs.related(GIVEN_S, GIVEN_P, same_person_names)


def _similar_given_name(pairs: Pairs, where: np.ndarray) -> np.ndarray:
    return similar_name(pairs, GIVEN_S, GIVEN_P, _full(pairs) & where)


def _initial(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    """One of them an initial, the other starting with it."""
    one_letter = (pairs.lengths(*GIVEN_S) == 1) | (pairs.lengths(*GIVEN_P) == 1)
    return one_letter & (pairs.codes(*GIVEN_S, first_letter) == pairs.codes(*GIVEN_P, first_letter))


def _middle_swapped(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    """One side's given name is the other's middle name."""
    given_s, given_p = pairs.codes(*GIVEN_S), pairs.codes(*GIVEN_P)
    middle_s, middle_p = pairs.codes("s", "middle"), pairs.codes("p", "middle")
    crossed = ((given_s == middle_p) & (given_s != 0)) | ((middle_s == given_p) & (middle_s != 0))
    return _full(pairs) & crossed


def _phonetic_given_name(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    sound = pairs.codes(*GIVEN_S, phonetic) == pairs.codes(*GIVEN_P, phonetic)
    return _full(pairs) & sound


GIVEN_NAME = Comparison(
    "given_name",
    (
        Level.null(either_empty(GIVEN_S, GIVEN_P)),
        Level("exact", same(GIVEN_S, GIVEN_P), m=0.84, u=0.01),
        Level("nickname", _nickname, m=0.04, u=0.002),
        Level("similar", _similar_given_name, m=0.04, u=0.005),
        Level("initial", _initial, m=0.02, u=0.005),
        Level("middle_swapped", _middle_swapped, m=0.01, u=0.001),
        Level("swapped", _swapped, m=0.01, u=0.0001),
        Level("phonetic", _phonetic_given_name, m=0.01, u=0.004),
        Level.otherwise("different", m=0.03, u=0.9729),
    ),
    frequency_field="given",
    spellings=("similar", "phonetic"),
)


# --- middle name ----------------------------------------------------------------------------

MIDDLE_S: Field = ("s", "middle")
MIDDLE_P: Field = ("p", "middle")


def _no_middle_name(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    """A middle name missing on either side, or one side's given name being the other's middle
    name (that evidence is the given name's ``middle_swapped``, not counted twice)."""
    return either_empty(MIDDLE_S, MIDDLE_P)(pairs, _where) | _middle_swapped(pairs, _where)


def _full_middle(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    """Both middle names more than an initial, and the same."""
    full = (pairs.lengths(*MIDDLE_S) > 1) & (pairs.lengths(*MIDDLE_P) > 1)
    return full & same(MIDDLE_S, MIDDLE_P)(pairs, _where)


def _middle_initial(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    """The same first letter, one of them (or both) an initial: C against CATHERINE."""
    one_letter = (pairs.lengths(*MIDDLE_S) == 1) | (pairs.lengths(*MIDDLE_P) == 1)
    return one_letter & same(MIDDLE_S, MIDDLE_P, first_letter)(pairs, _where)


def _similar_middle_name(pairs: Pairs, where: np.ndarray) -> np.ndarray:
    full = (pairs.lengths(*MIDDLE_S) > 1) & (pairs.lengths(*MIDDLE_P) > 1)
    return similar_name(pairs, MIDDLE_S, MIDDLE_P, full & where)


MIDDLE_NAME = Comparison(
    "middle_name",
    (
        Level.null(_no_middle_name),
        Level("exact", _full_middle, m=0.6, u=0.01),
        Level("initial", _middle_initial, m=0.3, u=0.07),
        Level("similar", _similar_middle_name, m=0.03, u=0.003),
        Level.otherwise("different", m=0.07, u=0.917),
    ),
)
"""Middle names or initials: PACS often keep only the initial, so an initial agreeing with the
MPI's full middle name is a level of its own (weaker than the full name, far from nothing)."""


# --- birth date -----------------------------------------------------------------------------

BIRTH_S: Field = ("s", "birth")
BIRTH_P: Field = ("p", "birth")


def _one_digit(pairs: Pairs, where: np.ndarray) -> np.ndarray:
    """One digit wrong, two transposed, or the century 19/20 slipped."""
    century = study_turned(BIRTH_S, BIRTH_P, other_century)(pairs, where)
    typo = np.zeros(len(pairs), dtype=bool)
    rows = np.flatnonzero(where & ~century)
    typo[rows] = pairs.one_edit(BIRTH_S, BIRTH_P, rows)
    return typo | century


BIRTH_DATE = Comparison(
    "birth_date",
    (
        Level.null(either_empty(BIRTH_S, BIRTH_P)),
        Level("exact", same(BIRTH_S, BIRTH_P), m=0.9, u=0.00003),
        Level(
            "day_month_swapped",
            study_turned(BIRTH_S, BIRTH_P, day_month_swapped),
            m=0.02,
            u=0.00001,
        ),
        Level("one_digit", _one_digit, m=0.04, u=0.0003),
        Level("same_year", same(BIRTH_S, BIRTH_P, year), m=0.01, u=0.01),
        Level.otherwise("different", m=0.03, u=0.98966),
    ),
)
"""Birth dates compared as their eight digits, whether or not the study's is a calendar date
(the PACS may have recorded 19402704 or 20451022): ``exact`` only when every digit is the
same; ``one_digit`` also takes the century 19/20 slipped (one slip of the hand, like a digit:
a level of its own would be too rare for EM to learn)."""


# --- sex ------------------------------------------------------------------------------------

SEX_S: Field = ("s", "sex")
SEX_P: Field = ("p", "sex")

SEX = Comparison(
    "sex",
    (
        Level.null(either_empty(SEX_S, SEX_P)),
        Level("same", same(SEX_S, SEX_P), m=0.98, u=0.5),
        Level.otherwise("different", m=0.02, u=0.5),
    ),
)


# --- identifier -----------------------------------------------------------------------------


def _study_ids(pairs: Pairs) -> list[str]:
    """Per study record, its patient id ('' for none)."""
    return [next(iter(ids), "") for ids in pairs.studies.identifiers]


def _study_id_codes(pairs: Pairs) -> np.ndarray:
    """Per pair, the code of the study's patient id."""

    def build() -> np.ndarray:
        values = _study_ids(pairs)
        return pairs.encode(values, len(values))[pairs.study_rows]

    return pairs.cached(("study id",), build)


def _no_identifier(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    no_ids = np.fromiter(
        (not ids for ids in pairs.patients.identifiers), dtype=bool, count=len(pairs.patients)
    )
    return (_study_id_codes(pairs) == 0) | no_ids[pairs.patient_rows]


def _same_identifier(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    return pairs.member("p", "identifiers", _study_id_codes(pairs))


def _identifier_one_edit(pairs: Pairs, where: np.ndarray) -> np.ndarray:
    """One edit from one of the patient's identifiers, for ids of 5 characters or more."""
    values = _study_ids(pairs)
    long_enough = np.fromiter(map(len, values), dtype=np.int64, count=len(values)) >= 5
    return pairs.one_edit_from_member(values, "identifiers", long_enough[pairs.study_rows] & where)


IDENTIFIER = Comparison(
    "identifier",
    (
        Level.null(_no_identifier),
        Level("same_value", _same_identifier, m=0.2, u=0.001),
        Level("one_edit", _identifier_one_edit, m=0.05, u=0.005),
        Level.otherwise("different", m=0.75, u=0.994),
    ),
)
"""The study's patient id against the patient's identifiers, under any issuer."""


# --- address --------------------------------------------------------------------------------


def _no_address(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    """No address on either side; only pairs whose study has one are looked at (PACS seldom
    record one), the others are null without coding every patient's address."""
    null = np.ones(len(pairs), dtype=bool)
    rows = np.flatnonzero((pairs.codes("s", "postal") != 0) | (pairs.codes("s", "street") != 0))
    if len(rows):
        patient = filled(pairs.values("p", "postal", rows)) | filled(
            pairs.values("p", "street", rows)
        )
        null[rows] = ~patient
    return null


def _same_postal(pairs: Pairs, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the pairs ``rows``: whether the study has a postal code, and the same one."""
    postal_s = pairs.values("s", "postal", rows)
    has_postal = filled(postal_s)
    return has_postal, has_postal & equal_values(postal_s, pairs.values("p", "postal", rows))


def _same_address(pairs: Pairs, where: np.ndarray) -> np.ndarray:
    """The same street (Jaro-Winkler ≥ ``SIMILAR``: a letter or a house-number digit slipped),
    and postal code if the study has one (one digit slipped with the street the same)."""
    out = np.zeros(len(pairs), dtype=bool)
    rows = np.flatnonzero(where)
    if len(rows):
        street = filled(pairs.values("s", "street", rows))
        street &= pairs.similarity_at_least(("s", "street"), ("p", "street"), where, SIMILAR)[rows]
        has_postal, postal = _same_postal(pairs, rows)
        slipped = rows[street & has_postal & ~postal]
        postal[np.searchsorted(rows, slipped)] = pairs.one_edit(
            ("s", "postal"), ("p", "postal"), slipped
        )
        out[rows] = street & (postal | ~has_postal)
    return out


def _same_postal_code(pairs: Pairs, where: np.ndarray) -> np.ndarray:
    out = np.zeros(len(pairs), dtype=bool)
    rows = np.flatnonzero(where)
    if len(rows):
        out[rows] = _same_postal(pairs, rows)[1]
    return out


ADDRESS = Comparison(
    "address",
    (
        Level.null(_no_address),
        Level("same", _same_address, m=0.8, u=0.0005),
        Level("same_postal_code", _same_postal_code, m=0.1, u=0.02),
        Level.otherwise("different", m=0.1, u=0.9795),
    ),
)
"""Street and postal code."""


# --- phone ----------------------------------------------------------------------------------


def _no_phone(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    """No phone number on either side; only pairs whose study has one are looked at."""
    null = np.ones(len(pairs), dtype=bool)
    rows = np.flatnonzero(pairs.codes("s", "phone") != 0)
    if len(rows):
        null[rows] = ~filled(pairs.values("p", "phone", rows))
    return null


def _same_phone(pairs: Pairs, where: np.ndarray) -> np.ndarray:
    """The same last seven digits, or one of them slipped."""
    out = np.zeros(len(pairs), dtype=bool)
    rows = np.flatnonzero(where)
    if len(rows):
        out[rows] = pairs.one_edit(("s", "phone"), ("p", "phone"), rows)
    return out


PHONE = Comparison(
    "phone",
    (
        Level.null(_no_phone),
        Level("same", _same_phone, m=0.8, u=0.00001),
        Level.otherwise("different", m=0.2, u=0.99999),
    ),
)
"""The last seven digits (``same``: one digit may have slipped)."""


# --- accession ------------------------------------------------------------------------------


def _no_order(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    no_order = np.fromiter(
        (not ids for ids in pairs.studies.linked), dtype=bool, count=len(pairs.studies)
    )
    return no_order[pairs.study_rows]


def _order_of_patient(pairs: Pairs, _where: np.ndarray) -> np.ndarray:
    return pairs.member("s", "linked", pairs.codes("p", "keys"))


ACCESSION = Comparison(
    "accession",
    (
        Level.null(_no_order),
        Level("order_of_patient", _order_of_patient, m=0.95, u=0.000001),
        Level.otherwise("order_of_another", m=0.05, u=0.999999),
    ),
)
"""An order with the study's accession number: of this patient, or of another one."""


COMPARISONS = (
    FAMILY_NAME,
    GIVEN_NAME,
    MIDDLE_NAME,
    BIRTH_DATE,
    SEX,
    IDENTIFIER,
    ADDRESS,
    PHONE,
    ACCESSION,
)
"""Every comparison the model weighs, in the order evidence is listed (the columns of the
level matrix)."""
COLUMNS = {comparison.name: column for column, comparison in enumerate(COMPARISONS)}
"""A comparison's column in the level matrix, by name."""


CORROBORATING = {
    "middle_name": ("exact", "similar"),
    "identifier": ("same_value", "one_edit"),
    "address": ("same",),
    "phone": ("same",),
    "accession": ("order_of_patient",),
}
"""The levels that say more than a name and a birth date: a namesake born the same day (or a
twin) seldom shares them; a middle initial is too common to count."""


def names_alone(levels: np.ndarray) -> np.ndarray:
    """Per pair, whether nothing but names, birth date and sex agree (no ``CORROBORATING``
    level)."""
    corroborated = np.zeros(len(levels), dtype=bool)
    for name, agreeing in CORROBORATING.items():
        comparison = COMPARISONS[COLUMNS[name]]
        codes = [comparison.code_of(level) for level in agreeing]
        corroborated |= np.isin(levels[:, COLUMNS[name]], codes)
    return ~corroborated


def compare(pairs: Pairs) -> np.ndarray:
    """Levels of every comparison for every pair: an int8 matrix (pairs x comparisons)."""
    matrix = np.zeros((len(pairs), len(COMPARISONS)), dtype=np.int8)
    for column, comparison in enumerate(COMPARISONS):
        matrix[:, column] = comparison.compare(pairs)
    return matrix
