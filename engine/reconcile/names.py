"""Names and numbers prepared for matching: plain spelling, phonetic codes, nicknames."""

from __future__ import annotations

import re
from functools import cache, lru_cache

import jellyfish
from nicknames import NickNamer

from engine.mpi.demographics import name_words, plain_name

__all__ = [
    "family_key",
    "identifier_key",
    "name_words",
    "phone_key",
    "phonetic",
    "plain_name",
    "same_person_names",
]

_DIGITS = re.compile(r"\D+")


@cache
def phonetic(name: str) -> str:
    """The Metaphone code of a name's letters ('' for no letters): SMITH and SMYTHE agree."""
    letters = name.replace(" ", "")
    return jellyfish.metaphone(letters) if letters else ""


@lru_cache(maxsize=1 << 18)
def family_key(name: str) -> str:
    """The phonetic code a family name is blocked on: its first part (HERNANDEZ LOPEZ)."""
    first = name.split(" ", 1)[0]
    return phonetic(first)[:6]


@cache
def _namer() -> NickNamer:
    return NickNamer()


@cache
def same_person_names(given: str) -> frozenset[str]:
    """Given names that may stand for ``given``: its nicknames and its formal forms (BILL:
    WILLIAM, ROBERT …), from the `nicknames` package's curated table. Only direct relations:
    two nicknames of one formal name (BILL, BOB) are not taken as the same name."""
    if not given:
        return frozenset()
    namer = _namer()
    lower = given.lower()
    names = {lower} | namer.nicknames_of(lower) | namer.canonicals_of(lower)
    return frozenset(n.upper() for n in names)


def identifier_key(value: str) -> str:
    """An identifier reduced to what survives reformatting between sites: its digits without
    leading zeros when it has at least five, else its letters and digits ('' when nothing is
    left).

    >>> identifier_key("MRN-0012-3456")
    '123456'
    """
    if value.isdigit() and len(value) >= 5 and value[0] != "0":
        return value  # the common case, without a regular expression
    digits = _DIGITS.sub("", value).lstrip("0")
    if len(digits) >= 5:
        return digits
    return "".join(c for c in value.upper() if c.isalnum())


def phone_key(value: str) -> str:
    """The last seven digits of a phone number ('' for fewer): area codes are often omitted."""
    digits = _DIGITS.sub("", value)
    return digits[-7:] if len(digits) >= 7 else ""
