"""Field comparisons of (study, patient) pairs, as comparison levels, computed column-wise.

Each comparison sorts a pair into one of its levels, the first that applies in the order
listed; level 0, ``null``, means "no evidence" (a value missing or a placeholder) and weighs
nothing. The model (``model.py``) learns how likely each level is for matches and non-matches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from engine.reconcile.names import phonetic, same_person_names

SIMILAR = 0.92
"""Jaro-Winkler similarity from which two names count as one name misspelt."""


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

    def __len__(self) -> int:
        return len(self.family)


@dataclass(slots=True)
class Pairs:
    """Candidate (or random) pairs: row numbers into a study and a patient ``Records``."""

    studies: Records
    patients: Records
    study_rows: np.ndarray
    patient_rows: np.ndarray
    _cache: dict[tuple[str, str], list[object]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.study_rows)

    def column(self, side: str, name: str) -> list:  # type: ignore[type-arg]
        """A field of one side, repeated per pair."""
        cached = self._cache.get((side, name))
        if cached is None:
            records = self.studies if side == "s" else self.patients
            rows = self.study_rows if side == "s" else self.patient_rows
            values = getattr(records, name)
            cached = [values[i] for i in rows.tolist()]
            self._cache[(side, name)] = cached
        return cached


def _similarity(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    return process.cpdist(a, b, scorer=JaroWinkler.similarity, workers=-1)


def _empty(values: Sequence[str]) -> np.ndarray:
    return np.fromiter((not v for v in values), dtype=bool, count=len(values))


def _equal(a: Sequence[object], b: Sequence[object]) -> np.ndarray:
    return np.fromiter((x == y for x, y in zip(a, b, strict=True)), dtype=bool, count=len(a))


def _test(a: Sequence[object], b: Sequence[object], test: Callable[[object, object], bool]):  # type: ignore[no-untyped-def]
    return np.fromiter((test(x, y) for x, y in zip(a, b, strict=True)), dtype=bool, count=len(a))


def _same_sound(a: object, b: object) -> bool:
    return phonetic(str(a)) == phonetic(str(b))


def _share_word(a: object, b: object) -> bool:
    a, b = str(a), str(b)
    if " " not in a and " " not in b:
        return False
    return bool(set(a.split()) & set(b.split()))


def _levels(size: int, ordered: list[np.ndarray], null: np.ndarray) -> np.ndarray:
    """Level per pair: the first mask (level 1, 2, …) that holds; the last level otherwise."""
    levels = np.full(size, len(ordered) + 1, dtype=np.int8)
    for index in range(len(ordered), 0, -1):
        levels[ordered[index - 1]] = index
    levels[null] = 0
    return levels


def _crossed(a: object, b: object) -> bool:
    return bool(a) and bool(b) and not set(str(a).split()).isdisjoint(str(b).split())


def swapped(pairs: Pairs) -> np.ndarray:
    """Family and given name recorded the other way round (NGUYEN^THI LAN as LAN^NGUYEN THI)."""
    cached = pairs._cache.get(("", "swapped"))
    if cached is None:
        fam_s, giv_s = pairs.column("s", "family"), pairs.column("s", "given")
        fam_p, giv_p = pairs.column("p", "family"), pairs.column("p", "given")
        similar = (_similarity(fam_s, giv_p) >= SIMILAR) & (_similarity(giv_s, fam_p) >= SIMILAR)
        crossed = _test(fam_s, giv_p, _crossed) & _test(giv_s, fam_p, _crossed)
        cached = [similar | crossed]
        pairs._cache[("", "swapped")] = cached
    return cached[0]  # type: ignore[return-value]


def family_name(pairs: Pairs) -> np.ndarray:
    a, b = pairs.column("s", "family"), pairs.column("p", "family")
    similarity = _similarity(a, b)
    other = pairs.column("p", "other_families")
    return _levels(
        len(pairs),
        [
            _equal(a, b),
            _test(a, other, lambda name, names: name in names),  # type: ignore[operator]
            similarity >= SIMILAR,
            _test(a, b, _share_word),
            swapped(pairs),
            _test(a, b, _same_sound),
        ],
        _empty(a) | _empty(b),
    )


def _initial(a: object, b: object) -> bool:
    a, b = str(a), str(b)
    return (len(a) == 1 or len(b) == 1) and a[0] == b[0]


def _nickname(a: object, b: object) -> bool:
    return b in same_person_names(str(a))


def given_name(pairs: Pairs) -> np.ndarray:
    a, b = pairs.column("s", "given"), pairs.column("p", "given")
    middle_s, middle_p = pairs.column("s", "middle"), pairs.column("p", "middle")
    full = _test(a, b, lambda x, y: len(str(x)) > 1 and len(str(y)) > 1)
    middle_swap = (_equal(a, middle_p) & ~_empty(a)) | (_equal(middle_s, b) & ~_empty(middle_s))
    return _levels(
        len(pairs),
        [
            _equal(a, b),
            full & _test(a, b, _nickname),
            full & (_similarity(a, b) >= SIMILAR),
            _test(a, b, _initial),
            full & middle_swap,
            swapped(pairs),
            full & _test(a, b, _same_sound),
        ],
        _empty(a) | _empty(b),
    )


def _transposed(a: object, b: object) -> bool:
    a, b = str(a), str(b)
    return a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6]


def birth_date(pairs: Pairs) -> np.ndarray:
    a, b = pairs.column("s", "birth"), pairs.column("p", "birth")
    typo = process.cpdist(a, b, scorer=DamerauLevenshtein.distance, workers=-1) <= 1
    return _levels(
        len(pairs),
        [
            _equal(a, b),
            _test(a, b, _transposed),
            typo,
            _test(a, b, lambda x, y: str(x)[:4] == str(y)[:4]),
        ],
        _empty(a) | _empty(b),
    )


def sex(pairs: Pairs) -> np.ndarray:
    a, b = pairs.column("s", "sex"), pairs.column("p", "sex")
    return _levels(len(pairs), [_equal(a, b)], _empty(a) | _empty(b))


def _one_edit(value: object, known: object) -> bool:
    return len(str(value)) >= 5 and any(
        DamerauLevenshtein.distance(str(value), other) <= 1
        for other in known  # type: ignore[attr-defined]
    )


def identifier(pairs: Pairs) -> np.ndarray:
    """The study's patient id against the patient's identifiers, under any issuer."""
    a, b = pairs.column("s", "identifiers"), pairs.column("p", "identifiers")
    values = [next(iter(ids), "") for ids in a]  # type: ignore[call-overload]
    return _levels(
        len(pairs),
        [_test(values, b, lambda v, ids: v in ids), _test(values, b, _one_edit)],  # type: ignore[operator]
        _empty(values) | _test(values, b, lambda _v, ids: not ids),
    )


def address(pairs: Pairs) -> np.ndarray:
    postal_s, postal_p = pairs.column("s", "postal"), pairs.column("p", "postal")
    street_s, street_p = pairs.column("s", "street"), pairs.column("p", "street")
    street = ~_empty(street_s) & (_similarity(street_s, street_p) >= SIMILAR)
    postal = ~_empty(postal_s) & _equal(postal_s, postal_p)
    null = (_empty(postal_s) & _empty(street_s)) | (_empty(postal_p) & _empty(street_p))
    return _levels(len(pairs), [street & (postal | _empty(postal_s)), postal], null)


def phone(pairs: Pairs) -> np.ndarray:
    a, b = pairs.column("s", "phone"), pairs.column("p", "phone")
    return _levels(len(pairs), [_equal(a, b)], _empty(a) | _empty(b))


def accession(pairs: Pairs) -> np.ndarray:
    """An order with the study's accession number: of this patient, or of another one."""
    linked, keys = pairs.column("s", "linked"), pairs.column("p", "keys")
    return _levels(
        len(pairs),
        [_test(keys, linked, lambda key, ids: key in ids)],  # type: ignore[operator]
        _test(keys, linked, lambda _key, ids: not ids),
    )


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


COMPARISONS = (
    Comparison(
        "family_name",
        ("null", "exact", "other_name", "similar", "one_part", "swapped", "phonetic", "different"),
        family_name,
        (0.82, 0.02, 0.05, 0.02, 0.01, 0.02, 0.06),
        (0.003, 0.0005, 0.002, 0.0005, 0.0001, 0.004, 0.9899),
        "family",
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
