"""The pair-coding kernel: record columns and candidate pairs, coded column-wise.

What the comparisons (``comparisons.py``) are built from, with no knowledge of names, dates or
levels' meaning:

- :class:`Records`: studies or patients, one list per field (``records.py`` fills them).
- :class:`Pairs`: (study, patient) pairs as two arrays of row numbers into two ``Records``,
  and the column-wise operations over them. Values are coded once per record (one integer per
  distinct value, in one vocabulary shared by both sides and every field), so equality,
  derived agreement (phonetic codes, a date's year …) and set membership are numpy operations
  over all pairs; string similarities run in rapidfuzz (C, every core), only on the pairs
  asked for; only what has no column-wise form is looked at one pair at a time
  (:meth:`Pairs.test`). What is built once per pair set is cached (:meth:`Pairs.cached`).
- :func:`first_level`: a level code per pair from a null mask and ordered level masks, the
  first that holds winning; each mask is asked only about the pairs still open.

A field is named by its side and its ``Records`` attribute: ``("s", "family")`` is the study's
family name, ``("p", "family")`` the patient's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

__all__ = [
    "Derive",
    "Field",
    "Pairs",
    "Records",
    "Side",
    "equal_values",
    "filled",
    "first_level",
]

Side = Literal["s", "p"]
"""``s``: the study of a pair; ``p``: the patient."""
Field = tuple[Side, str]
"""A side and a ``Records`` attribute: ``("s", "birth")``."""
Derive = Callable[[str], str]
"""What a value is coded as instead of itself (its Metaphone code, a date's year …); a
module-level function, since it is part of the cache key."""


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

    def joined(self, other: Records) -> Records:
        """These records followed by ``other``'s (a new object; both are left as they are)."""
        return Records(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in _FIELDS})

    def taken(self, rows: Sequence[int]) -> Records:
        """The records ``rows``, in that order (a new object)."""
        return Records(**{f.name: _picked(getattr(self, f.name), rows) for f in _FIELDS})


def _picked(values: list[Any], rows: Sequence[int]) -> list[Any]:
    """``values`` at ``rows`` (a field left empty, as some loads leave some, stays empty)."""
    return [values[row] for row in rows] if values else []


_FIELDS = fields(Records)


def filled(values: Sequence[str]) -> np.ndarray:
    """Per value, whether it is not empty."""
    return np.fromiter(map(bool, values), dtype=bool, count=len(values))


def equal_values(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Per position, whether the two values are the same."""
    return np.fromiter(map(str.__eq__, a, b), dtype=bool, count=len(a))


@dataclass(slots=True)
class Pairs:
    """Candidate (or random) pairs: row numbers into a study and a patient ``Records``.

    Every method returning one value per pair returns a numpy array as long as the pairs;
    ``where`` arguments are boolean masks over the pairs, ``rows`` arguments pair numbers."""

    studies: Records
    patients: Records
    study_rows: np.ndarray
    patient_rows: np.ndarray
    _cache: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    _vocabulary: dict[object, int] = field(default_factory=lambda: {"": 0})

    def __len__(self) -> int:
        return len(self.study_rows)

    def side(self, side: Side) -> tuple[Records, np.ndarray]:
        """One side's records and, per pair, its row in them."""
        if side == "s":
            return self.studies, self.study_rows
        return self.patients, self.patient_rows

    def cached(self, key: tuple[Any, ...], build: Callable[[], np.ndarray]) -> np.ndarray:
        """``build()``, made once for these pairs under ``key`` (shared by every comparison)."""
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = build()
        return found

    def encode(self, values: Iterable[object], count: int) -> np.ndarray:
        """The codes of ``count`` values in the shared vocabulary (new values are added)."""
        vocabulary = self._vocabulary
        return np.fromiter(
            (vocabulary.setdefault(v, len(vocabulary)) for v in values), dtype=np.int64, count=count
        )

    def record_codes(self, side: Side, name: str, derive: Derive | None = None) -> np.ndarray:
        """Per record of one side, the code of a field's value (as ``derive`` turns it): two
        codes are equal when the values are; 0 is the empty value."""

        def build() -> np.ndarray:
            records, _ = self.side(side)
            values = getattr(records, name)
            if derive is None:
                return self.encode((v if v else "" for v in values), len(values))
            return self.encode((derive(v) if v else "" for v in values), len(values))

        return self.cached(("record_codes", side, name, derive), build)

    def codes(self, side: Side, name: str, derive: Derive | None = None) -> np.ndarray:
        """Per pair, the code of one side's value (see ``record_codes``)."""

        def build() -> np.ndarray:
            _, rows = self.side(side)
            return self.record_codes(side, name, derive)[rows]

        return self.cached(("codes", side, name, derive), build)

    def empty(self, side: Side, name: str) -> np.ndarray:
        """Per pair, whether one side's value is empty."""
        return self.codes(side, name) == 0

    def lengths(self, side: Side, name: str) -> np.ndarray:
        """Per pair, the length of one side's value."""

        def build() -> np.ndarray:
            records, rows = self.side(side)
            values = getattr(records, name)
            return np.fromiter(map(len, values), dtype=np.int64, count=len(values))[rows]

        return self.cached(("lengths", side, name), build)

    def several_words(self, side: Side, name: str) -> np.ndarray:
        """Per pair, whether one side's value has several words (DE LA CRUZ)."""

        def build() -> np.ndarray:
            records, rows = self.side(side)
            values = getattr(records, name)
            several = np.fromiter((" " in v for v in values), dtype=bool, count=len(values))
            return several[rows]

        return self.cached(("words", side, name), build)

    def values(self, side: Side, name: str, rows: np.ndarray) -> list[Any]:
        """One side's values of the pairs ``rows``."""
        records, side_rows = self.side(side)
        values = getattr(records, name)
        return [values[i] for i in side_rows[rows].tolist()]

    def member(self, side: Side, name: str, values: np.ndarray) -> np.ndarray:
        """Per pair, whether ``values`` (codes, one per pair) is in the set-valued field
        ``name`` of ``side``."""
        records, rows = self.side(side)
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

    def related(self, a: Field, b: Field, partners: Callable[[str], Iterable[str]]) -> np.ndarray:
        """Per pair, whether b's value is one of ``partners(a's value)`` (a nickname's formal
        names …), by codes: ``partners`` is asked once per record of a's side."""
        side_a, name_a = a
        side_b, name_b = b
        codes_a = self.record_codes(side_a, name_a)
        self.record_codes(side_b, name_b)  # every value of b's side in the vocabulary
        vocabulary = self._vocabulary
        size = len(vocabulary) + 1
        allowed: list[int] = []
        records, _ = self.side(side_a)
        for value, code in zip(getattr(records, name_a), codes_a.tolist(), strict=True):
            for partner in partners(value):
                other = vocabulary.get(partner)
                if other is not None:
                    allowed.append(code * size + other)
        keys = self.codes(*a) * size + self.codes(*b)
        return np.isin(keys, np.unique(np.asarray(allowed, dtype=np.int64)))

    def similarity_at_least(
        self, a: Field, b: Field, where: np.ndarray, cutoff: float
    ) -> np.ndarray:
        """Per pair, Jaro-Winkler(a, b) ≥ ``cutoff``, computed only ``where`` (False
        elsewhere)."""
        out = np.zeros(len(self), dtype=bool)
        rows = np.flatnonzero(where)
        if len(rows):
            left, right = self.values(*a, rows), self.values(*b, rows)
            scores = process.cpdist(left, right, scorer=JaroWinkler.similarity, workers=-1)
            out[rows] = scores >= cutoff
        return out

    def one_edit(self, a: Field, b: Field, rows: np.ndarray) -> np.ndarray:
        """For the pairs ``rows``: whether the values are at most one edit apart (a character
        wrong, missing or extra, or two swapped)."""
        if not len(rows):
            return np.zeros(0, dtype=bool)
        distance = process.cpdist(
            self.values(*a, rows),
            self.values(*b, rows),
            scorer=DamerauLevenshtein.distance,
            score_cutoff=1,
            workers=-1,
        )
        return np.asarray(distance <= 1)

    def one_edit_from_member(self, values: list[str], name: str, where: np.ndarray) -> np.ndarray:
        """Per pair (only ``where``), whether the study's value (``values``, one per study
        record) is at most one edit from one of the patient's set-valued field ``name``."""
        out = np.zeros(len(self), dtype=bool)
        rows = np.flatnonzero(where)
        if not len(rows):
            return out
        known = [sorted(found) for found in getattr(self.patients, name)]
        counts = np.fromiter(map(len, known), dtype=np.int64, count=len(known))
        starts = np.concatenate(([0], np.cumsum(counts)))
        flat = [value for found in known for value in found]
        patient_rows = self.patient_rows[rows]
        per_pair = counts[patient_rows]
        owner = np.repeat(np.arange(len(rows)), per_pair)
        offset = np.arange(len(owner)) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
        index = starts[patient_rows][owner] + offset
        study_values = [values[i] for i in self.study_rows[rows][owner].tolist()]
        distance = process.cpdist(
            study_values,
            [flat[i] for i in index.tolist()],
            scorer=DamerauLevenshtein.distance,
            score_cutoff=1,
            workers=-1,
        )
        out[rows] = np.bincount(owner, weights=distance <= 1, minlength=len(rows)) > 0
        return out

    def test(
        self, a: Field, b: Field, where: np.ndarray, check: Callable[[str, str], bool]
    ) -> np.ndarray:
        """Per pair, ``check(a, b)`` in Python, only ``where`` (few pairs; False elsewhere)."""
        out = np.zeros(len(self), dtype=bool)
        rows = np.flatnonzero(where)
        if len(rows):
            checks = map(check, self.values(*a, rows), self.values(*b, rows))
            out[rows] = np.fromiter(checks, dtype=bool, count=len(rows))
        return out


def first_level(
    null: np.ndarray, masks: Sequence[Callable[[np.ndarray], np.ndarray]]
) -> np.ndarray:
    """A level code per pair (int8): 0 where ``null``; else 1 + the position of the first of
    ``masks`` that holds; ``len(masks) + 1`` (the last level) where none does.

    Each mask is called with the pairs still open (not null, no earlier mask held) and is read
    only there, so it may compute only there: what an earlier level decided is never asked
    again."""
    codes = np.full(len(null), len(masks) + 1, dtype=np.int8)
    still_open = ~null
    for code, mask in enumerate(masks, start=1):
        hit = mask(still_open) & still_open
        codes[hit] = code
        still_open = still_open & ~hit
    codes[null] = 0
    return codes
