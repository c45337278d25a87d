"""A trigram index of stored messages' text (SQLite FTS5), kept in batches after the fact.

A text search reads every message it looks at; over a million messages that takes over a
second. This index finds the few that hold a text in milliseconds. It is not written by intake
(the ACK waits for nothing but the message's own row): :func:`catch_up` adds the messages
stored since the last batch, in batches of their own, from a background thread of the console.
A search reads the index up to where it reaches and scans the newer messages as before, so a
lagging index is slower, never wrong.

Each message is indexed as its raw bytes read one byte to a character (latin-1), and the
tokenizer is case-sensitive: a match of the index is a match of the bytes, as the scan has it.
Texts shorter than three bytes, PostgreSQL stores and stores whose content is encrypted (the
index would hold it in clear) are searched by scanning. :func:`purge` drops the entries of
messages that retention deleted or emptied.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Connection, Engine, Select, column, exists, func, select, table, text

from engine.store import crypto
from engine.store.database import for_writing
from engine.store.schema import Message

log = logging.getLogger(__name__)

TABLE = "message_text"
SHORTEST = 3
"""Bytes a text needs for the index to find it: its pieces are three bytes long."""
BATCH = 500
"""Messages indexed per transaction (~0.1 s of SQLite's write lock): intake's writes pass
between two."""

_index = table(TABLE, column("rowid"), column("body"))
_CREATE = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {TABLE}"
    " USING fts5(body, tokenize='trigram case_sensitive 1', detail='full')"
)


def usable(engine: Engine) -> bool:
    """Whether this store keeps the index (SQLite, content not encrypted)."""
    return engine.dialect.name == "sqlite" and crypto.current_keyring() is None


def _exists(connection: Connection) -> bool:
    found = connection.execute(
        text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": TABLE},
    )
    return found.first() is not None


def reach(connection: Connection) -> int | None:
    """The newest message id the index holds (0 when empty); None without an index."""
    if connection.dialect.name != "sqlite" or not _exists(connection):
        return None
    newest = connection.execute(select(_index.c.rowid).order_by(_index.c.rowid.desc()).limit(1))
    return int(newest.scalar() or 0)


def catch_up(
    engine: Engine, *, batch: int = BATCH, most: int | None = None, pause: float = 0.0
) -> int:
    """Index the messages stored since the last batch (at most ``most``); how many were.
    ``pause``: seconds to wait after each full batch, so that the engine's writers, which wait
    for the write lock by polling, are not outrun while a large store is indexed.

    With encrypted content the index is dropped instead: it would hold the content in clear.
    """
    if engine.dialect.name != "sqlite":
        return 0
    writer = for_writing(engine)
    if crypto.current_keyring() is not None:
        with writer.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {TABLE}")
        return 0
    done = 0
    while most is None or done < most:
        with writer.begin() as connection:
            connection.exec_driver_sql(_CREATE)
            since = reach(connection) or 0
            size = batch if most is None else min(batch, most - done)
            rows = connection.execute(
                select(Message.id, Message.raw)
                .where(Message.id > since)
                .order_by(Message.id)
                .limit(size)
            ).all()
            if rows:
                # An emptied message too: its entry marks how far the index reaches.
                connection.execute(
                    _index.insert(), [{"rowid": r.id, "body": _body(r.raw or b"")} for r in rows]
                )
        done += len(rows)
        if len(rows) < size:
            break
        time.sleep(pause)
    return done


def _body(raw: bytes) -> str:
    return raw.decode("latin-1")


def purge(engine: Engine, *, step: int = 20000) -> int:
    """Drop the entries of messages deleted or emptied since they were indexed; how many."""
    if not usable(engine):
        return 0
    with engine.connect() as connection:
        if not _exists(connection):
            return 0
        top = reach(connection) or 0
    gone = 0
    writer = for_writing(engine)
    for first in range(0, top + 1, step):
        with writer.begin() as connection:
            stale = (
                select(_index.c.rowid)
                .where(_index.c.rowid.between(first, first + step - 1))
                .where(~exists().where(Message.id == _index.c.rowid, func.length(Message.raw) > 0))
            )
            # The entry of the newest indexed message stays: it marks how far the index reaches.
            doomed = [r for r in connection.execute(stale).scalars() if r != top]
            if doomed:
                connection.execute(_index.delete().where(_index.c.rowid.in_(doomed)))
                gone += len(doomed)
    return gone


def matches(forms: set[bytes], ids: tuple[Any, Any] | None = None) -> Select[Any] | None:
    """The ids of the messages whose bytes hold one of ``forms`` (per the index), within
    ``ids`` (low, high: SQL values) when given; None when a form is too short for the index."""
    if not forms or any(len(form) < SHORTEST for form in forms):
        return None
    phrases = " OR ".join('"' + _body(form).replace('"', '""') + '"' for form in sorted(forms))
    found = select(_index.c.rowid).where(
        text(f"{TABLE} MATCH :phrases").bindparams(phrases=phrases)
    )
    if ids is not None:  # the index then reads that range only
        found = found.where(_index.c.rowid.between(*ids))
    return found


def more_than(connection: Connection, found: Select[Any], count: int) -> bool:
    """Whether the index names more than ``count`` messages (it reads at most ``count + 1``)."""
    capped = found.limit(count + 1).subquery()
    return int(connection.execute(select(func.count()).select_from(capped)).scalar() or 0) > count
