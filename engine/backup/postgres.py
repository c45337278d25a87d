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
    """The SQLAlchemy URL as libpq takes it (no driver name).

    SQLAlchemy's list of servers, ``?host=a:5432&host=b:5433``, becomes libpq's
    ``?host=a,b&port=5432,5433`` (libpq would take ``a:5432`` for a host name).

    >>> libpq_url("postgresql+psycopg://cw@/cw?host=a:5432&host=b&target_session_attrs=any")
    'postgresql://cw@/cw?host=a%2Cb&port=5432%2C&target_session_attrs=any'
    """
    parsed = make_url(url).set(drivername="postgresql")
    entries = parsed.query.get("host", ())
    entries = (entries,) if isinstance(entries, str) else entries
    if len(entries) > 1 or any(":" in entry for entry in entries):
        servers = [_host_and_port(entry) for entry in entries]
        query = {k: v for k, v in parsed.query.items() if k not in ("host", "port")}
        query["host"] = ",".join(host for host, _ in servers)
        if any(port for _, port in servers):
            query["port"] = ",".join(port for _, port in servers)  # empty: the default port
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False)


def _host_and_port(entry: str) -> tuple[str, str]:
    """``host:port``, ``[IPv6]:port`` or a bare host, as SQLAlchemy writes a server."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = entry.partition(":")
    return host, port


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
