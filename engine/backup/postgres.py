"""PostgreSQL backups: ``pg_dump`` (custom format: consistent at one point, while engines write)
and ``pg_restore``, wrapped; the client programs must be on the PATH (Debian:
postgresql-client)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from engine.errors import CrosswalkError


class DumpError(CrosswalkError, RuntimeError):
    """pg_dump or pg_restore failed or is missing; the text says which and why."""


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq takes it (no driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def program(name: str) -> str:
    """The path of a PostgreSQL client program (``DumpError`` if it is not installed)."""
    found = shutil.which(name)
    if found is None:
        raise DumpError(f"{name} is not installed (Debian: apt-get install postgresql-client)")
    return found


def _run(name: str, *args: str) -> str:
    done = subprocess.run([program(name), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise DumpError(f"{name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def dump(url: str, target: Path) -> None:
    """``pg_dump --format=custom`` of the database at ``url`` into ``target``."""
    _run("pg_dump", "--format=custom", "--no-owner", "--file", str(target), libpq_url(url))


def listing(path: Path) -> str:
    """The table of contents of a dump (``pg_restore --list``): proves it can be read."""
    return _run("pg_restore", "--list", str(path))


def restore(path: Path, url: str) -> None:
    """Restore a dump into the (empty) database at ``url``."""
    _run("pg_restore", "--no-owner", "--exit-on-error", "--dbname", libpq_url(url), str(path))
