"""Values that stand for no one: the names, birth dates and patient ids registration desks and
modalities use when the real ones are unknown (DOE^JOHN, TRAUMA ALPHA, 19000101, TEMP123).

They are never evidence: the study index flags them (:mod:`engine.studies.flags`) and the
reconciler does not compare them. The lists are the reconciler's settings (``reconciler:`` in
the configuration, :class:`engine.reconcile.settings.ReconcilerSettings`); these are their
defaults, and :class:`Placeholders` is what the study index needs of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import translate
from typing import Protocol

PLACEHOLDER_NAMES = (
    "DOE",
    "UNKNOWN*",
    "UNK",
    "UNIDENTIFIED*",
    "TRAUMA*",
    "NONAME",
    "NO NAME",
    "NN",
    "PATIENT",
    "TEST*",
    "ANONYMOUS",
    "ZZ*",
    "XX*",
    "ALPHA",
    "BRAVO",
    "BABY",
    "BABYBOY",
    "BABYGIRL",
    "MALE",
    "FEMALE",
)
PLACEHOLDER_DATES = ("19000101", "18000101", "18991231", "19010101", "00000000", "99999999")
PLACEHOLDER_IDS = ("0", "00000000", "UNKNOWN*", "TRAUMA*", "TEMP*", "TR*", "NONE", "NA", "N/A")


def glob_patterns(values: Iterable[str]) -> re.Pattern[str]:
    """One regular expression for glob patterns (``TRAUMA*``), compared in upper case."""
    return re.compile("|".join(translate(v.upper()) for v in values) or "(?!)")


class Placeholders(Protocol):
    """Which values are placeholders (the reconciler's settings answer this)."""

    @property
    def placeholder_birth_dates(self) -> list[str]: ...

    def placeholder_name(self, name: str) -> bool: ...


class DefaultPlaceholders:
    """The built-in lists, for callers given no configuration."""

    def __init__(self) -> None:
        self.placeholder_birth_dates = list(PLACEHOLDER_DATES)
        self._names = glob_patterns(PLACEHOLDER_NAMES)

    def placeholder_name(self, name: str) -> bool:
        return bool(name) and self._names.fullmatch(name.upper()) is not None


DEFAULTS = DefaultPlaceholders()
