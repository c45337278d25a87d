"""Taking, checking and restoring a backup of the store, whatever the database and whether
the backup is encrypted."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from engine.backup import postgres
from engine.backup.contents import Contents, read_contents
from engine.backup.dumped import read_dump_contents
from engine.backup.sealed import is_sealed, open_file, seal_file
from engine.backup.sqlite import copy_online, settle_restored
from engine.errors import CrosswalkError
from engine.store.crypto import Keyring
from engine.store.database import open_store, redact, resolve_url

PG_MAGIC = b"PGDMP"


class BackupError(CrosswalkError, RuntimeError):
    """A backup cannot be taken, read or restored; the text says why."""


@dataclass
class Taken:
    """A backup written."""

    path: Path
    seconds: float
    encrypted: bool
    contents: Contents | None
    """What it holds (SQLite; a PostgreSQL dump is described by ``backup verify``)."""


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:"):
        raise BackupError("an in-memory store cannot be backed up")
    return Path(parsed.database or "").expanduser().resolve()


@contextlib.contextmanager
def _scratch(near: Path) -> Iterator[Path]:
    """A temporary file beside ``near`` (same file system; readable by its owner only)."""
    descriptor, name = tempfile.mkstemp(prefix=f".{near.name}.", dir=near.parent)
    os.close(descriptor)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def take_backup(db: str | None, target: Path, keyring: Keyring | None = None) -> Taken:
    """Back up the store at ``db`` into the new file ``target`` while the engine runs,
    encrypted with ``keyring``'s current key when one is given."""
    url = resolve_url(db)
    if target.exists():
        raise BackupError(f"{target} exists: a backup never overwrites a file")
    if not target.parent.is_dir():
        raise BackupError(f"the folder {target.parent} does not exist")
    started = time.monotonic()
    source = _sqlite_file(url)
    with _scratch(target) as clear:
        if source is not None:
            if not source.exists():
                raise BackupError(f"no store at {source}")
            copy_online(source, clear)
            contents: Contents | None = read_contents(clear)
        else:
            postgres.dump(url, clear)
            contents = None
        if keyring is not None:
            with _scratch(target) as sealed:
                seal_file(clear, sealed, keyring)
                os.replace(sealed, target)
        else:
            os.replace(clear, target)
    return Taken(target, time.monotonic() - started, keyring is not None, contents)


@dataclass
class Checked:
    """What ``backup verify`` found."""

    kind: str
    """``sqlite`` or ``postgresql``."""
    encrypted: bool
    contents: Contents | None
    listing: str = ""
    """A PostgreSQL dump's table of contents."""

    @property
    def ok(self) -> bool:
        return self.contents.ok if self.contents is not None else bool(self.listing)


@contextlib.contextmanager
def _opened(path: Path, keyring: Keyring | None) -> Iterator[tuple[Path, bool]]:
    """The backup's clear file (decrypted beside it when encrypted), and whether it was."""
    if not path.is_file():
        raise BackupError(f"no backup at {path}")
    if not is_sealed(path):
        yield path, False
        return
    with _scratch(path) as clear:
        open_file(path, clear, keyring)
        yield clear, True


def _kind(path: Path) -> str:
    with path.open("rb") as handle:
        return "postgresql" if handle.read(len(PG_MAGIC)) == PG_MAGIC else "sqlite"


def verify_backup(path: Path, keyring: Keyring | None = None) -> Checked:
    """Read the whole backup: its integrity, and what it holds."""
    with _opened(path, keyring) as (clear, encrypted):
        if _kind(clear) == "postgresql":
            listing = postgres.listing(clear)
            return Checked("postgresql", encrypted, read_dump_contents(clear), listing)
        return Checked("sqlite", encrypted, read_contents(clear))


def restore_backup(path: Path, db: str, keyring: Keyring | None = None) -> Checked:
    """Restore the backup onto a fresh place (``db``: an SQLite file that does not exist yet,
    or an empty PostgreSQL database), then bring its schema to this version's."""
    url = resolve_url(db)
    target = _sqlite_file(url)
    with _opened(path, keyring) as (clear, encrypted):
        kind = _kind(clear)
        if (kind == "sqlite") != (target is not None):
            raise BackupError(f"a {kind} backup restores onto a {kind} store, not {redact(url)}")
        if target is not None:
            if target.exists():
                raise BackupError(
                    f"{target} exists: restore onto a new file (move the old store aside first)"
                )
            checked = Checked(kind, encrypted, read_contents(clear))
            if checked.contents is None or not checked.contents.ok:
                integrity = checked.contents.integrity if checked.contents else "unreadable"
                raise BackupError(f"{path} is damaged: {integrity}")
            with _scratch(target) as partial:
                _copy(clear, partial)
                settle_restored(partial)
                os.replace(partial, target)
        else:
            checked = Checked(kind, encrypted, None, postgres.listing(clear))
            postgres.restore(clear, url)
    open_store(url).dispose()  # migrations a newer Crosswalk needs
    return checked


def _copy(source: Path, target: Path) -> None:
    with source.open("rb") as reading, target.open("wb") as writing:
        while chunk := reading.read(16 * 1024 * 1024):
            writing.write(chunk)
        writing.flush()
        os.fsync(writing.fileno())
