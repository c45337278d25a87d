"""Field comparisons of (study, patient) pairs, as comparison levels, computed column-wise.

Each comparison sorts a pair into one of its levels, the first that applies in the order
listed; level 0, ``null``, means "no evidence" (a value missing or a placeholder) and weighs
nothing. The model (``model.py``) learns how likely each level is for matches and non-matches.

Values are coded once per record (one integer per distinct value, shared by both sides and all
fields), so equality, phonetic agreement and set membership are numpy operations over the
pairs; string similarities run in rapidfuzz (C, every core), only where the level is still
open; and only pairs with a multi-word name are looked at one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from engine.reconcile.names import phonetic, same_person_names

SIMILAR = 0.92
"""Jaro-Winkler similarity from which two names count as one name misspelt."""
ONE_SLIP_LENGTH = 4
"""Names at least this long (both) also count as one name misspelt when one edit apart (a
letter wrong, dropped or two swapped): Jaro-Winkler forgives little in the first letters."""


@dataclass(slots=True)
class Records:
    """Studies or patients, one list per field, index-aligned (values prepared by ``records``)."""

    family: list[str] = field(default_factory=list)
    given: list[str] = field(default_factory=list)
    middle: list[str] = field(default_factory=list)
    birth: list[str] = field(default_factory=list)
    sex: list[str] = field(default_factory=list)
    postal: list[str] = field(default_factory=list)
    street: list[str] = field(default_factory=list)
    phone: list[str] = field(default_factory=list)
    identifiers: list[frozenset[str]] = field(default_factory=list)
    other_families: list[frozenset[str]] = field(default_factory=list)
    """Patients: earlier names, aliases, maiden names (family part)."""
    linked: list[frozenset[int]] = field(default_factory=list)
    """Studies: the MPI patients whose orders carry the study's accession number."""
    keys: list[int] = field(default_factory=list)
    """Patients: MPI patient id."""
    keyed_identifiers: list[frozenset[str]] = field(default_factory=list)
    """Patients, as loaded for blocking keys only: the identifiers whose key differs from the
    value stored (MRN-0012345 is 12345), blocked through ``patient_keys``; the others are
    found in ``patient_identifiers`` by value."""

    def __len__(self) -> int:
        return len(self.family)


CENTURY_SLIPS = {"19": "20", "20": "19"}


def _other_century(value: str) -> str:
    """A date with its century 19 and 20 swapped (20451022 for 19451022); others as they are."""
    century = CENTURY_SLIPS.get(value[:2])
    return century + value[2:] if century else value


DERIVED: dict[str, Callable[[str], str]] = {
    "": lambda value: value,
    "phonetic": phonetic,
    "year": lambda value: value[:4],
    "transposed": lambda value: value[:4] + value[6:8] + value[4:6],
    "century": _other_century,
    "first": lambda value: value[:1],
}
"""What a value can be coded as: itself, its Metaphone code, a date's year, a date with day
and month swapped, a date in the other century (19, 20), its first letter."""


@dataclass(slots=True)
class Pairs:
    """Candidate (or random) pairs: row numbers into a study and a patient ``Records``."""

    studies: Records
    patients: Records
    study_rows: np.ndarray
    patient_rows: np.ndarray
    _cache: dict[tuple[str, ...], object] = field(default_factory=dict)
    _vocabulary: dict[object, int] = field(default_factory=lambda: {"": 0})

    def __len__(self) -> int:
        return len(self.study_rows)

    def _side(self, side: str) -> tuple[Records, np.ndarray]:
        if side == "s":
            return self.studies, self.study_rows
        return self.patients, self.patient_rows

    def _cached(self, key: tuple[str, ...], build: Callable[[], object]) -> object:
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = build()
        return found

    def column(self, side: str, name: str) -> list:  # type: ignore[type-arg]
        """A field of one side, repeated per pair."""

        def build() -> list[object]:
            records, rows = self._side(side)
            values = getattr(records, name)
            return [values[i] for i in rows.tolist()]

        return self._cached(("column", side, name), build)  # type: ignore[return-value]

    def record_codes(self, side: str, name: str, derive: str = "") -> np.ndarray:
        """Per record of one side, the code of a field's value (as ``derive`` turns it): two
        codes are equal when the values are; 0 is the empty value."""

        def build() -> np.ndarray:
            records, _ = self._side(side)
            vocabulary, turn = self._vocabulary, DERIVED[derive]
            values = getattr(records, name)
            return np.fromiter(
                (vocabulary.setdefault(turn(v) if v else "", len(vocabulary)) for v in values),
                dtype=np.int64,
                count=len(values),
            )

        return self._cached(("record_codes", side, name, derive), build)  # type: ignore[return-value]

    def codes(self, side: str, name: str, derive: str = "") -> np.ndarray:
        """Per pair, the code of one side's value (see ``record_codes``)."""

        def build() -> np.ndarray:
            _, rows = self._side(side)
            return self.record_codes(side, name, derive)[rows]

        return self._cached(("codes", side, name, derive), build)  # type: ignore[return-value]

    def lengths(self, side: str, name: str) -> np.ndarray:
        """Per pair, the length of one side's value."""

        def build() -> np.ndarray:
            records, rows = self._side(side)
            values = getattr(records, name)
            return np.fromiter(map(len, values), dtype=np.int64, count=len(values))[rows]

        return self._cached(("lengths", side, name), build)  # type: ignore[return-value]

    def member(self, side: str, name: str, values: np.ndarray) -> np.ndarray:
        """Per pair, whether ``values`` (codes, one per pair) is in the set-valued field
        ``name`` of ``side``."""
        records, rows = self._side(side)
        vocabulary = self._vocabulary
        owners: list[int] = []
        elements: list[int] = []
        for row, found in enumerate(getattr(records, name)):
            for element in found:
                owners.append(row)
                elements.append(vocabulary.setdefault(element, len(vocabulary)))
        size = len(vocabulary) + 1
        known = np.asarray(owners, dtype=np.int64) * size + np.asarray(elements, dtype=np.int64)
        return np.isin(rows * size + values, known) & (values != 0)

    def empty(self, side: str, name: str) -> np.ndarray:
        return self.codes(side, name) == 0

    def similarity_at_least(
        self, a: tuple[str, str], b: tuple[str, str], where: np.ndarray, cutoff: float = SIMILAR
    ) -> np.ndarray:
        """Per pair, Jaro-Winkler(a, b) ≥ ``cutoff`` ((side, field) each), computed only
        ``where`` (False elsewhere)."""
        out = np.zeros(len(self), dtype=bool)
        rows = np.flatnonzero(where)
        if len(rows):
            left, right = self._values(*a, rows), self._values(*b, rows)
            scores = process.cpdist(left, right, scorer=JaroWinkler.similarity, workers=-1)
            out[rows] = scores >= cutoff
        return out

    def similar_name(self, a: tuple[str, str], b: tuple[str, str], where: np.ndarray) -> np.ndarray:
        """Per pair, whether two names are one name misspelt: Jaro-Winkler ≥ ``SIMILAR``, or
        one edit apart when both have ``ONE_SLIP_LENGTH`` letters; only ``where``."""
        similar = self.similarity_at_least(a, b, where)
        long_enough = (self.lengths(*a) >= ONE_SLIP_LENGTH) & (self.lengths(*b) >= ONE_SLIP_LENGTH)
        rows = np.flatnonzero(where & long_enough & ~similar)
        similar[rows] = self.one_edit(a, b, rows)
        return similar

    def one_edit(self, a: tuple[str, str], b: tuple[str, str], rows: np.ndarray) -> np.ndarray:
        """For the pairs ``rows``: whether the values are at most one edit apart (a character
        wrong, missing or extra, or two swapped)."""
        if not len(rows):
            return np.zeros(0, dtype=bool)
        distance = process.cpdist(
            self._values(*a, rows),
            self._values(*b, rows),
            scorer=DamerauLevenshtein.distance,
            score_cutoff=1,
            workers=-1,
        )
        return np.asarray(distance <= 1)

    def _values(self, side: str, name: str, pair_rows: np.ndarray) -> list[str]:
        records, rows = self._side(side)
        values = getattr(records, name)
        return [values[i] for i in rows[pair_rows].tolist()]

    def test(
        self,
        a: tuple[str, str],
        b: tuple[str, str],
        where: np.ndarray,
        check: Callable[[str, str], bool],
    ) -> np.ndarray:
        """Per pair, ``check(a, b)`` in Python, only ``where`` (few pairs; False elsewhere)."""
        out = np.zeros(len(self), dtype=bool)
        rows = np.flatnonzero(where)
        if len(rows):
            checks = map(check, self._values(*a, rows), self._values(*b, rows))
            out[rows] = np.fromiter(checks, dtype=bool, count=len(rows))
        return out


def _levels(size: int, ordered: list[np.ndarray], null: np.ndarray) -> np.ndarray:
    """Level per pair: the first mask (level 1, 2, …) that holds; the last level otherwise."""
    levels = np.full(size, len(ordered) + 1, dtype=np.int8)
    for index in range(len(ordered), 0, -1):
        levels[ordered[index - 1]] = index
    levels[null] = 0
    return levels


def _words(pairs: Pairs, side: str, name: str) -> np.ndarray:
    """Per pair, whether one side's value has several words (DE LA CRUZ, HERNANDEZ LOPEZ)."""

    def build() -> np.ndarray:
        records, rows = pairs._side(side)
        values = getattr(records, name)
        several = np.fromiter((" " in v for v in values), dtype=bool, count=len(values))
        return several[rows]

    return pairs._cached(("words", side, name), build)  # type: ignore[return-value]


def _share_word(a: str, b: str) -> bool:
    return bool(a) and bool(b) and not set(a.split()).isdisjoint(b.split())


def _overlap(pairs: Pairs, a: tuple[str, str], b: tuple[str, str]) -> np.ndarray:
    """Per pair, whether the two names share a word (equal single words included)."""
    same = pairs.codes(*a) == pairs.codes(*b)
    same &= pairs.codes(*a) != 0
    several = _words(pairs, *a) | _words(pairs, *b)
    return same | pairs.test(a, b, several & ~same, _share_word)


def swapped(pairs: Pairs) -> np.ndarray:
    """Family and given name recorded the other way round (NGUYEN^THI LAN as LAN^NGUYEN THI)."""

    def build() -> np.ndarray:
        fam_s, giv_s, fam_p, giv_p = (
            ("s", "family"),
            ("s", "given"),
            ("p", "family"),
            ("p", "given"),
        )
        crossed = _overlap(pairs, fam_s, giv_p) & _overlap(pairs, giv_s, fam_p)
        filled = ~(
            pairs.empty(*fam_s) | pairs.empty(*giv_s) | pairs.empty(*fam_p) | pairs.empty(*giv_p)
        )
        first = pairs.similarity_at_least(fam_s, giv_p, filled & ~crossed)
        return crossed | pairs.similarity_at_least(giv_s, fam_p, first)

    return pairs._cached(("swapped",), build)  # type: ignore[return-value]


def family_name(pairs: Pairs) -> np.ndarray:
    a, b = ("s", "family"), ("p", "family")
    null = pairs.empty(*a) | pairs.empty(*b)
    exact = pairs.codes(*a) == pairs.codes(*b)
    other = pairs.member("p", "other_families", pairs.codes(*a))
    similar = pairs.similar_name(a, b, ~(null | exact | other))
    one_part = pairs.test(a, b, (_words(pairs, *a) | _words(pairs, *b)) & ~null, _share_word)
    sound = pairs.codes(*a, "phonetic") == pairs.codes(*b, "phonetic")
    return _levels(len(pairs), [exact, other, similar, one_part, swapped(pairs), sound], null)


def _nicknames(pairs: Pairs) -> np.ndarray:
    """Per pair, whether the patient's given name is a nickname or formal form of the
    study's (BILL, WILLIAM)."""
    studies = pairs.record_codes("s", "given")
    pairs.record_codes("p", "given")  # every patient's name in the vocabulary
    vocabulary = pairs._vocabulary
    size = len(vocabulary) + 1
    allowed: list[int] = []
    for value, code in zip(pairs.studies.given, studies.tolist(), strict=True):
        for name in same_person_names(value):
            other = vocabulary.get(name)
            if other is not None:
                allowed.append(code * size + other)
    keys = pairs.codes("s", "given") * size + pairs.codes("p", "given")
    return np.isin(keys, np.unique(np.asarray(allowed, dtype=np.int64)))


def given_name(pairs: Pairs) -> np.ndarray:
    a, b = ("s", "given"), ("p", "given")
    null = pairs.empty(*a) | pairs.empty(*b)
    code_a, code_b = pairs.codes(*a), pairs.codes(*b)
    full = (pairs.lengths(*a) > 1) & (pairs.lengths(*b) > 1)
    exact = code_a == code_b
    nickname = full & _nicknames(pairs)
    similar = pairs.similar_name(a, b, full & ~(null | exact | nickname))
    initial = ((pairs.lengths(*a) == 1) | (pairs.lengths(*b) == 1)) & (
        pairs.codes(*a, "first") == pairs.codes(*b, "first")
    )
    middle_s, middle_p = pairs.codes("s", "middle"), pairs.codes("p", "middle")
    middle_swap = ((code_a == middle_p) & (code_a != 0)) | ((middle_s == code_b) & (middle_s != 0))
    sound = pairs.codes(*a, "phonetic") == pairs.codes(*b, "phonetic")
    return _levels(
        len(pairs),
        [exact, nickname, similar, initial, full & middle_swap, swapped(pairs), full & sound],
        null,
    )


def birth_date(pairs: Pairs) -> np.ndarray:
    """Birth dates compared as their eight digits, whether or not the study's is a calendar
    date (the PACS may have recorded 19402704 or 20451022): ``exact`` only when every digit is
    the same; ``one_digit`` also takes the century 19/20 slipped (one slip of the hand, like a
    digit: a level of its own would be too rare for EM to learn)."""
    a, b = ("s", "birth"), ("p", "birth")
    null = pairs.empty(*a) | pairs.empty(*b)
    exact = pairs.codes(*a) == pairs.codes(*b)
    transposed = pairs.codes(*a, "transposed") == pairs.codes(*b)
    century = pairs.codes(*a, "century") == pairs.codes(*b)
    typo = np.zeros(len(pairs), dtype=bool)
    rows = np.flatnonzero(~(null | exact | transposed | century))
    typo[rows] = pairs.one_edit(a, b, rows)
    year = pairs.codes(*a, "year") == pairs.codes(*b, "year")
    return _levels(len(pairs), [exact, transposed, typo | century, year], null)


def sex(pairs: Pairs) -> np.ndarray:
    a, b = pairs.codes("s", "sex"), pairs.codes("p", "sex")
    return _levels(len(pairs), [a == b], (a == 0) | (b == 0))


def _one_edit(pairs: Pairs, values: list[str], where: np.ndarray) -> np.ndarray:
    """Per pair (``where``), whether the study's id is one edit from one of the patient's."""
    out = np.zeros(len(pairs), dtype=bool)
    rows = np.flatnonzero(where)
    if not len(rows):
        return out
    known = [sorted(ids) for ids in pairs.patients.identifiers]
    counts = np.fromiter(map(len, known), dtype=np.int64, count=len(known))
    starts = np.concatenate(([0], np.cumsum(counts)))
    flat = [value for ids in known for value in ids]
    patient_rows = pairs.patient_rows[rows]
    per_pair = counts[patient_rows]
    owner = np.repeat(np.arange(len(rows)), per_pair)
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
    index = starts[patient_rows][owner] + offset
    study_values = [values[i] for i in pairs.study_rows[rows][owner].tolist()]
    distance = process.cpdist(
        study_values,
        [flat[i] for i in index.tolist()],
        scorer=DamerauLevenshtein.distance,
        score_cutoff=1,
        workers=-1,
    )
    close = np.bincount(owner, weights=distance <= 1, minlength=len(rows)) > 0
    out[rows] = close
    return out


def identifier(pairs: Pairs) -> np.ndarray:
    """The study's patient id against the patient's identifiers, under any issuer."""
    values = [next(iter(ids), "") for ids in pairs.studies.identifiers]
    vocabulary = pairs._vocabulary
    study_codes = np.fromiter(
        (vocabulary.setdefault(v, len(vocabulary)) for v in values),
        dtype=np.int64,
        count=len(values),
    )
    codes = study_codes[pairs.study_rows]
    no_ids = np.fromiter(
        (not ids for ids in pairs.patients.identifiers),
        dtype=bool,
        count=len(pairs.patients),
    )[pairs.patient_rows]
    null = (codes == 0) | no_ids
    same = pairs.member("p", "identifiers", codes)
    long_enough = np.fromiter(map(len, values), dtype=np.int64, count=len(values)) >= 5
    one_edit = _one_edit(pairs, values, long_enough[pairs.study_rows] & ~(null | same))
    return _levels(len(pairs), [same, one_edit], null)


def _filled(values: list[str]) -> np.ndarray:
    return np.fromiter(map(bool, values), dtype=bool, count=len(values))


def address(pairs: Pairs) -> np.ndarray:
    """Street and postal code; only pairs whose study has an address are looked at (PACS
    seldom record one), the others are ``null`` without coding every patient's address."""
    levels = np.zeros(len(pairs), dtype=np.int8)
    rows = np.flatnonzero((pairs.codes("s", "postal") != 0) | (pairs.codes("s", "street") != 0))
    if not len(rows):
        return levels
    postal_s, postal_p = pairs._values("s", "postal", rows), pairs._values("p", "postal", rows)
    street_s, street_p = pairs._values("s", "street", rows), pairs._values("p", "street", rows)
    has_street = _filled(street_s)
    similar = process.cpdist(street_s, street_p, scorer=JaroWinkler.similarity, workers=-1)
    street = has_street & (similar >= SIMILAR)
    postal = _filled(postal_s) & np.fromiter(
        map(str.__eq__, postal_s, postal_p), dtype=bool, count=len(rows)
    )
    null = ~(_filled(postal_p) | _filled(street_p))
    levels[rows] = _levels(len(rows), [street & (postal | ~_filled(postal_s)), postal], null)
    return levels


def phone(pairs: Pairs) -> np.ndarray:
    """The last seven digits; only pairs whose study has a phone number are looked at."""
    levels = np.zeros(len(pairs), dtype=np.int8)
    rows = np.flatnonzero(pairs.codes("s", "phone") != 0)
    if len(rows):
        a, b = pairs._values("s", "phone", rows), pairs._values("p", "phone", rows)
        same = np.fromiter(map(str.__eq__, a, b), dtype=bool, count=len(rows))
        levels[rows] = _levels(len(rows), [same], ~_filled(b))
    return levels


def accession(pairs: Pairs) -> np.ndarray:
    """An order with the study's accession number: of this patient, or of another one."""
    linked = pairs.member("s", "linked", pairs.codes("p", "keys"))
    no_order = np.fromiter(
        (not ids for ids in pairs.studies.linked), dtype=bool, count=len(pairs.studies)
    )
    return _levels(len(pairs), [linked], no_order[pairs.study_rows])


@dataclass(frozen=True, slots=True)
class Comparison:
    name: str
    levels: tuple[str, ...]
    """Level names; the first is always ``null``."""
    compare: Callable[[Pairs], np.ndarray]
    start_m: tuple[float, ...]
    """Starting m probabilities of the non-null levels (EM refines them)."""
    start_u: tuple[float, ...]
    """Prior u probabilities, what random pairs are smoothed towards (they count for
    ``model.PRIOR_PAIRS`` pairs: 0.001 is one pair in a thousand)."""
    frequency_field: str = ""
    """The field whose term frequency adjusts the weight of the ``exact`` level."""
    spellings: tuple[str, ...] = ()
    """Levels that are the same value spelt otherwise: however common the value, ``exact``
    never weighs less than they do (NANCY = NANCY is better evidence than NANCY ~ NANCIE)."""


COMPARISONS = (
    Comparison(
        "family_name",
        ("null", "exact", "other_name", "similar", "one_part", "swapped", "phonetic", "different"),
        family_name,
        (0.82, 0.02, 0.05, 0.02, 0.01, 0.02, 0.06),
        (0.003, 0.0005, 0.002, 0.0005, 0.0001, 0.004, 0.9899),
        "family",
        ("similar", "phonetic"),
    ),
    Comparison(
        "given_name",
        (
            "null",
            "exact",
            "nickname",
            "similar",
            "initial",
            "middle_swapped",
            "swapped",
            "phonetic",
            "different",
        ),
        given_name,
        (0.84, 0.04, 0.04, 0.02, 0.01, 0.01, 0.01, 0.03),
        (0.01, 0.002, 0.005, 0.005, 0.001, 0.0001, 0.004, 0.9729),
        "given",
        ("similar", "phonetic"),
    ),
    Comparison(
        "birth_date",
        ("null", "exact", "day_month_swapped", "one_digit", "same_year", "different"),
        birth_date,
        (0.9, 0.02, 0.04, 0.01, 0.03),
        (0.00003, 0.00001, 0.0003, 0.01, 0.98966),
    ),
    Comparison("sex", ("null", "same", "different"), sex, (0.98, 0.02), (0.5, 0.5)),
    Comparison(
        "identifier",
        ("null", "same_value", "one_edit", "different"),
        identifier,
        (0.2, 0.05, 0.75),
        (0.001, 0.005, 0.994),
    ),
    Comparison(
        "address",
        ("null", "same", "same_postal_code", "different"),
        address,
        (0.8, 0.1, 0.1),
        (0.0005, 0.02, 0.9795),
    ),
    Comparison("phone", ("null", "same", "different"), phone, (0.8, 0.2), (0.00001, 0.99999)),
    Comparison(
        "accession",
        ("null", "order_of_patient", "order_of_another"),
        accession,
        (0.95, 0.05),
        (0.000001, 0.999999),
    ),
)
"""Every comparison the model weighs, in the order evidence is listed."""


def compare(pairs: Pairs) -> np.ndarray:
    """Levels of every comparison for every pair: an int8 matrix (pairs x comparisons)."""
    matrix = np.zeros((len(pairs), len(COMPARISONS)), dtype=np.int8)
    for column, comparison in enumerate(COMPARISONS):
        matrix[:, column] = comparison.compare(pairs)
    return matrix
