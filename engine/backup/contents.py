"""What an SQLite backup holds: its integrity, migration, counts, and its recovery point (the
newest message of each listener: what its senders must send again after a restore)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

INFO_TABLE = "crosswalk_backup"
"""Written into the copy by ``backup``: when it was taken, and from where."""

COUNTED = (
    "messages",
    "deliveries",
    "patients",
    "studies",
    "proposals",
    "review_decisions",
    "audit_events",
)


@dataclass(frozen=True)
class ListenerPoint:
    """The newest message of one listener in the backup."""

    listener: str
    message_id: int
    received_at: str
    control_id: str


@dataclass
class Contents:
    integrity: str
    migration: str
    taken_at: str = ""
    source: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, int] = field(default_factory=dict)
    queued: int = 0
    newest_message: str = ""
    last_message_id: int = 0
    points: list[ListenerPoint] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and bool(self.migration)


def read_contents(path: Path) -> Contents:
    """Check and describe the SQLite database at ``path`` (read only)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        integrity = "; ".join(row[0] for row in db.execute("PRAGMA integrity_check").fetchall())
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        migration = ""
        if "alembic_version" in tables:
            found = db.execute("SELECT version_num FROM alembic_version").fetchone()
            migration = found[0] if found else ""
        contents = Contents(integrity=integrity, migration=migration)
        if INFO_TABLE in tables:
            contents.taken_at, contents.source = db.execute(
                f"SELECT taken_at, source FROM {INFO_TABLE}"
            ).fetchone()
        for table in COUNTED:
            if table in tables:
                contents.counts[table] = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if "messages" in tables:
            contents.by_status = dict(
                db.execute("SELECT status, count(*) FROM messages GROUP BY status").fetchall()
            )
            newest, last = db.execute("SELECT max(received_at), max(id) FROM messages").fetchone()
            contents.newest_message, contents.last_message_id = newest or "", last or 0
            contents.points = [
                ListenerPoint(*row)
                for row in db.execute(
                    "SELECT m.listener, m.id, m.received_at, m.control_id FROM messages m"
                    " JOIN (SELECT listener, max(id) AS id FROM messages GROUP BY listener) n"
                    " ON n.id = m.id ORDER BY m.listener"
                )
            ]
        if "deliveries" in tables:
            contents.queued = db.execute(
                "SELECT count(*) FROM deliveries WHERE state = 'queued'"
            ).fetchone()[0]
        return contents
    except sqlite3.DatabaseError as error:
        return Contents(integrity=f"not a readable SQLite database: {error}", migration="")
    finally:
        db.close()
