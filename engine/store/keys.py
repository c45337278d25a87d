"""Which keys the stored content uses, and rotating them while the engine runs.

``rotate`` re-encrypts, in small transactions, every encrypted column value that is not under
the current key (and encrypts clear values written before encryption was turned on). Each value
is replaced only if it is still what was read, so a value the engine changed meanwhile is left
to the engine (which writes with the current key once it has read the keys file again).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, LargeBinary, Text, and_, select, type_coerce, update

from engine.store import crypto
from engine.store.database import for_writing
from engine.store.schema import Delivery, Message, table_of

__all__ = ["ENCRYPTED_COLUMNS", "Rotation", "rotate", "usage"]

ENCRYPTED_COLUMNS = [
    (table_of(model).c[name], name)
    for model in (Message, Delivery)
    for name, column in table_of(model).c.items()
    if isinstance(column.type, crypto.EncryptedBytes | crypto.EncryptedText)
]
"""Every column whose values are encrypted at rest."""
BATCH = 500


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
        for column, name in ENCRYPTED_COLUMNS:
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


def rotate(
    engine: Engine,
    keyring: crypto.Keyring,
    *,
    batch: int = BATCH,
    on_progress: Callable[[str, int], None] = lambda column, done: None,
) -> Rotation:
    """Re-encrypt every value not under ``keyring.current``, ``batch`` rows a transaction."""
    result = Rotation()
    writer = for_writing(engine)
    for column, name in ENCRYPTED_COLUMNS:
        table = column.table
        label = f"{table.name}.{name}".encode()
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
    return result


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
