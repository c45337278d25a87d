"""SQLite backups: the online backup API copies the store while the engine writes to it, as it
was at one moment (one step: a single read transaction, which in WAL mode never holds the
writer back)."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

from engine.backup.contents import INFO_TABLE


def copy_online(source: Path, target: Path) -> float:
    """Copy the store at ``source`` to the new file ``target``; the moment (epoch seconds) the
    copy is consistent at, written into it with the source's name."""
    origin = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    copy = sqlite3.connect(target)
    try:
        taken = time.time()
        origin.backup(copy)  # pages=-1: every page in one step, one snapshot
        copy.execute(f"CREATE TABLE {INFO_TABLE} (taken_at TEXT NOT NULL, source TEXT NOT NULL)")
        moment = datetime.fromtimestamp(taken, UTC).isoformat(timespec="microseconds")
        copy.execute(f"INSERT INTO {INFO_TABLE} VALUES (?, ?)", (moment, str(source)))
        copy.commit()
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        copy.close()
        origin.close()
    return taken


def settle_restored(path: Path) -> None:
    """Make a restored copy a store again: without the backup's own table, in WAL mode."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute(f"DROP TABLE IF EXISTS {INFO_TABLE}")
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()
