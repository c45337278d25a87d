"""Which keys the stored content uses, and rotating them while the engine runs.

``rotate`` re-encrypts, in small transactions, every encrypted column value that is not under
the current key (and encrypts clear values written before encryption was turned on). Each value
is replaced only if it is still what was read, so a value the engine changed meanwhile is left
to the engine (which writes with the current key once it has read the keys file again).

Looked-up values (:class:`engine.store.crypto.LookupText`) are hashed with a key derived from
the first key of the file, which rotation never changes; a store that was clear before
encryption was turned on gets its look-ups hashed too (:func:`hash_lookups`): identifiers and
study patient ids (their encrypted copy written beside), blocking keys, and the search hashes
of birth dates and family names. Every table the process has loaded is covered (the MPI's, the
study index's, the reconciler's and the review's register themselves when imported).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    LargeBinary,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    insert,
    not_,
    select,
    tuple_,
    type_coerce,
    update,
)

from engine.store import crypto
from engine.store.database import for_writing
from engine.store.schema import Base

__all__ = ["Rotation", "encrypted_columns", "hash_lookups", "rotate", "usage"]

BATCH = 500


def encrypted_columns() -> list[tuple[Any, str]]:
    """Every column whose values are encrypted at rest, as (column, name), of every table the
    process has loaded (messages and deliveries always; the MPI, study index, reconciler and
    review tables once imported, which opening the store does)."""
    return [
        (column, column.name)
        for table in Base.metadata.sorted_tables
        for column in table.c
        if isinstance(column.type, crypto.EncryptedBytes | crypto.EncryptedText) and "id" in table.c
    ]


def _stored(column: Any) -> Any:
    """The column as stored (no decryption on read, no encryption on write)."""
    return type_coerce(
        column, Text if isinstance(column.type, crypto.EncryptedText) else LargeBinary
    )


def _key(value: Any) -> str | None:
    if isinstance(value, memoryview):
        value = bytes(value)
    return crypto.key_of(value) if value else None


def usage(engine: Engine) -> dict[str, Counter[str]]:
    """For each encrypted column (``table.column``), how many values each key encrypts
    (``clear``: values written without encryption; empty values are not counted)."""
    found: dict[str, Counter[str]] = {}
    with engine.connect() as connection:
        for column, name in encrypted_columns():
            counts: Counter[str] = Counter()
            last = 0
            table = column.table
            while True:
                rows = connection.execute(
                    select(table.c.id, _stored(column).label("v"))
                    .where(table.c.id > last)
                    .order_by(table.c.id)
                    .limit(5000)
                ).all()
                for row in rows:
                    if row.v:
                        counts[_key(row.v) or "clear"] += 1
                if len(rows) < 5000:
                    break
                last = rows[-1].id
            found[f"{table.name}.{name}"] = counts
    return found


@dataclass
class Rotation:
    """What a rotation did."""

    reencrypted: int = 0
    skipped: int = 0
    """Values the engine changed between the read and the write (they are its to write)."""
    per_column: dict[str, int] = field(default_factory=dict)
    hashed: dict[str, int] = field(default_factory=dict)
    """Look-up values hashed (a store that was clear before), per ``table.column``."""


def rotate(
    engine: Engine,
    keyring: crypto.Keyring,
    *,
    batch: int = BATCH,
    on_progress: Callable[[str, int], None] = lambda column, done: None,
) -> Rotation:
    """Re-encrypt every value not under ``keyring.current``, ``batch`` rows a transaction;
    then hash the look-ups still clear (:func:`hash_lookups`)."""
    result = Rotation()
    writer = for_writing(engine)
    for column, name in encrypted_columns():
        table = column.table
        label = column.type.label
        text = isinstance(column.type, crypto.EncryptedText)
        stored = _stored(column)
        last = done = 0
        while True:
            with writer.begin() as connection:
                rows = connection.execute(
                    select(table.c.id, stored.label("v"))
                    .where(table.c.id > last)
                    .order_by(table.c.id)
                    .limit(batch)
                ).all()
                for row in rows:
                    value = bytes(row.v) if isinstance(row.v, memoryview) else row.v
                    if not value or _key(value) == keyring.current:
                        continue
                    fresh = _reseal(value, label, keyring, text)
                    changed = connection.execute(
                        update(table)
                        .where(and_(table.c.id == row.id, stored == value))
                        .values({name: type_coerce(fresh, stored.type)})
                    ).rowcount
                    if changed:
                        done += 1
                    else:
                        result.skipped += 1
            if rows:
                last = rows[-1].id
                on_progress(f"{table.name}.{name}", done)
            if len(rows) < batch:
                break
        result.per_column[f"{table.name}.{name}"] = done
        result.reencrypted += done
    result.hashed = hash_lookups(engine, keyring, batch=batch)
    return result


def _lookup_columns() -> list[Column[Any]]:
    return [
        column
        for table in Base.metadata.sorted_tables
        for column in table.c
        if isinstance(column.type, crypto.LookupText)
    ]


def hash_lookups(engine: Engine, keyring: crypto.Keyring, *, batch: int = BATCH) -> dict[str, int]:
    """Hash the looked-up values a store holds clear (written before encryption was turned
    on), ``batch`` rows a transaction; how many per ``table.column``. Values the column types
    write: the current process must be configured with ``keyring`` (``crypto.configure``)."""
    if crypto.current_keyring() is not keyring or not keyring.encrypt:
        raise crypto.ContentError("hashing look-ups needs the keys configured for writing")
    writer = for_writing(engine)
    done: dict[str, int] = {}
    for column in _lookup_columns():
        table = column.table
        count = 0
        while True:
            with writer.begin() as connection:
                changed = _hash_batch(connection, table, column, batch)
            count += changed
            if changed < batch:
                break
        if count:
            done[f"{table.name}.{column.name}"] = count
    return done


def _stored_text(column: Column[Any]) -> Any:
    return type_coerce(column, Text)


def _hash_batch(connection: Connection, table: Table, column: Column[Any], batch: int) -> int:
    """One batch of :func:`hash_lookups` for ``column``: how many rows it changed."""
    stored = _stored_text(column)
    clear = and_(stored != "", not_(stored.startswith(crypto.LOOKUP_MAGIC)))
    info = column.info
    if "hash_of" in info:  # a hashed copy of another column (NULL: not made yet)
        source = table.c[info["hash_of"]]
        rows = connection.execute(
            select(table.c.id, source).where(column.is_(None)).order_by(table.c.id).limit(batch)
        ).all()
        size = info.get("prefix")
        values = [
            {"row": row[0], "value": crypto.prefix_of(row[1], size) if size else row[1]}
            for row in rows
        ]
        if values:
            connection.execute(
                update(table)
                .where(table.c.id == bindparam("row"))
                .values({column.name: bindparam("value", type_=column.type)}),
                values,
            )
        return len(rows)
    if "sealed" in info:  # the value hashed, and encrypted beside it
        rows = connection.execute(
            select(table.c.id, stored).where(clear).order_by(table.c.id).limit(batch)
        ).all()
        sealed = table.c[info["sealed"]]
        if rows:
            connection.execute(
                update(table)
                .where(and_(table.c.id == bindparam("row"), stored == bindparam("clear")))
                .values(
                    {
                        column.name: bindparam("value", type_=column.type),
                        sealed.name: bindparam("copy", type_=sealed.type),
                    }
                ),
                [{"row": r[0], "clear": r[1], "value": r[1], "copy": r[1]} for r in rows],
            )
        return len(rows)
    # A key of its own (blocking keys, part of the primary key): the hashed row replaces the
    # clear one, unless it is there already.
    key = list(table.primary_key.columns)
    as_stored = [_stored_text(c) if c is column else c for c in key]
    pairs = [tuple(r) for r in connection.execute(select(*as_stored).where(clear).limit(batch))]
    if not pairs:
        return 0
    connection.execute(delete(table).where(tuple_(*as_stored).in_(pairs)))
    names = [c.name for c in key]
    position = names.index(column.name)
    label = column.type.label  # type: ignore[attr-defined]
    hashed = {
        tuple(crypto.lookup(v, label) if i == position else v for i, v in enumerate(row))
        for row in pairs
    }
    present = {
        tuple(r) for r in connection.execute(select(*key).where(tuple_(*key).in_(list(hashed))))
    }
    new = [dict(zip(names, row, strict=True)) for row in hashed - present]
    if new:
        connection.execute(insert(table), new)
    return len(pairs)


def _reseal(value: Any, label: bytes, keyring: crypto.Keyring, text: bool) -> Any:
    if text:
        clear = (
            crypto.open_bytes(
                base64.b64decode(value[len(crypto.TEXT_MAGIC) :]), label, keyring
            ).decode("utf-8")
            if value.startswith(crypto.TEXT_MAGIC)
            else value
        )
        sealed = keyring.seal(clear.encode("utf-8"), label)
        return crypto.TEXT_MAGIC + base64.b64encode(sealed).decode("ascii")
    return keyring.seal(crypto.open_bytes(value, label, keyring), label)
