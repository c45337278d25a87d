"""What the MPI may write: every value fits its column, on SQLite as on PostgreSQL.

The limits are the lengths of the MPI's table columns (:mod:`engine.mpi.tables`), read from the
tables themselves, and the rules are the same for every value the MPI writes:

- free text (names, address, phone, codes) longer than its column is cut to fit;
- an identifier (an identifier's value or assigning authority, an order's accession, placer or
  filler number) longer than its column is refused: cut, it could name another patient;
- a value holding NUL (0x00) is refused: PostgreSQL cannot store it in text, and SQLite does
  not either, so the two stores keep the same MPI.

A refusal is an :class:`MpiRefusal` naming the field (``PID-5.1 is longer than 100 characters``),
never the value: values are patient data, and the reason is stored and shown to operators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, String

from engine.errors import CrosswalkError
from engine.mpi.tables import Order, Patient, PatientEvent, PatientIdentifier, PatientName
from engine.store.crypto import EncryptedText, LookupText
from engine.store.schema import table_of

NUL = "\x00"

patients = table_of(Patient).c
identifiers = table_of(PatientIdentifier).c
names = table_of(PatientName).c
events = table_of(PatientEvent).c
orders = table_of(Order).c


class MpiRefusal(CrosswalkError, ValueError):
    """The MPI cannot apply this message; the text says why (kept as the delivery's error)."""


IDENTIFIER_COLUMNS: frozenset[Column[Any]] = frozenset(
    (
        identifiers.value,
        identifiers.authority,
        orders.accession,
        orders.placer_number,
        orders.filler_number,
    )
)
"""Columns that hold identifiers: never cut, an over-long value is refused. (Columns hash by
identity: :func:`fit` runs ~15 times for every registering ADT.)"""

LIMITS: dict[Column[Any], int] = {
    column: length
    for table in (patients, identifiers, names, events, orders)
    for column in table
    # Encrypted and hashed columns declare the length of the clear value they take.
    if isinstance(column.type, String | EncryptedText | LookupText)
    and (length := getattr(column.type, "length", None))
}
"""Column → the most characters it holds (text columns without a length: none)."""


def limit(column: Column[Any]) -> int | None:
    """The most characters ``column`` holds; None when it has no limit."""
    return LIMITS.get(column)


def fit(value: str, column: Column[Any], field: str | Callable[[], str]) -> str:
    """``value`` as the MPI may write it to ``column``: free text cut to fit; an over-long
    identifier, or any value holding NUL, refused with :class:`MpiRefusal` naming ``field``
    (or what ``field()`` returns: a name worth formatting only for a refusal)."""
    if NUL in value:
        raise MpiRefusal(f"{_name(field)} holds a NUL character (0x00)")
    length = LIMITS.get(column)
    if length is None or len(value) <= length:
        return value
    if column in IDENTIFIER_COLUMNS:
        raise MpiRefusal(f"{_name(field)} is longer than {length} characters")
    return value[:length]


def _name(field: str | Callable[[], str]) -> str:
    return field if isinstance(field, str) else field()


def without_nul(value: str, field: str) -> str:
    """``value`` (for a column without a length, such as an event's detail); refused if it
    holds NUL."""
    if NUL in value:
        raise MpiRefusal(f"{field} holds a NUL character (0x00)")
    return value


def problem(value: str, column: Column[Any]) -> str | None:
    """Why ``value`` cannot be written to ``column`` as it is (NUL, too long), or None.

    For exports (``mpi import``), where a row that does not fit is reported and skipped whole
    rather than cut."""
    if NUL in value:
        return "holds a NUL character (0x00)"
    length = LIMITS.get(column)
    if length is not None and len(value) > length:
        return f"longer than {length} characters"
    return None
