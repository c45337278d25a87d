"""`crosswalk backup`, `backup verify` and `restore`: what they refuse, encryption with the keys
of encryption at rest, damage found, and PostgreSQL through pg_dump (tests/test_disaster_recovery.py
drills the whole recovery under load)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from engine.backup.postgres import libpq_url
from engine.mpi.tables import Patient
from engine.store.crypto import new_key_line
from engine.store.database import open_store
from engine.testing import Peer, free_port
from tests.support import ROOT, adt, crosswalk, running_engine

MPI_EXPORT = ROOT / "samples" / "mpi_export.csv"


def run(*args: str, keys: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CROSSWALK_KEYS"}
    env["COLUMNS"] = "200"
    if keys is not None:
        env["CROSSWALK_KEYS"] = str(keys)
    return subprocess.run(crosswalk(*args), capture_output=True, text=True, env=env, timeout=60)


def patients(url: str) -> int:
    store = open_store(url)
    try:
        with store.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(Patient)).scalar() or 0)
    finally:
        store.dispose()


@pytest.fixture
def loaded(tmp_path: Path) -> Path:
    db = tmp_path / "store.db"
    assert run("mpi", "import", str(MPI_EXPORT), "--db", str(db)).returncode == 0
    return db


def test_an_encrypted_backup_needs_its_keys_and_restores_whole(
    loaded: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "content.keys"
    keys.write_text(new_key_line() + "\n")
    backup = tmp_path / "b.backup"
    taken = run("backup", str(backup), "--db", str(loaded), keys=keys)
    assert taken.returncode == 0, taken.stderr
    assert b"GENHOSP" not in backup.read_bytes() and b"SQLite format" not in backup.read_bytes()
    refused = run("backup", "verify", str(backup))
    assert refused.returncode == 2 and "encrypted backup: give the keys file" in refused.stderr
    checked = run("backup", "verify", str(backup), keys=keys)
    assert checked.returncode == 0, checked.stderr
    assert "integrity: ok" in checked.stdout and "patients 20" in checked.stdout
    restored = tmp_path / "restored.db"
    done = run("restore", str(backup), "--db", str(restored), keys=keys)
    assert done.returncode == 0, done.stderr
    assert patients(f"sqlite:///{restored}") == patients(f"sqlite:///{loaded}") == 20
    again = run("restore", str(backup), "--db", str(restored), keys=keys)
    assert again.returncode == 2 and "exists: restore onto a new file" in again.stderr


def test_a_changed_byte_is_found(loaded: Path, tmp_path: Path) -> None:
    keys = tmp_path / "content.keys"
    keys.write_text(new_key_line() + "\n")
    sealed, clear = tmp_path / "sealed.backup", tmp_path / "clear.backup"
    assert run("backup", str(sealed), "--db", str(loaded), keys=keys).returncode == 0
    assert run("backup", str(clear), "--db", str(loaded), "--no-encrypt", keys=keys).returncode == 0
    data = bytearray(sealed.read_bytes())
    data[len(data) // 2] ^= 0x01
    sealed.write_bytes(bytes(data))
    tampered = run("backup", "verify", str(sealed), keys=keys)
    assert tampered.returncode == 2 and "integrity check" in tampered.stderr
    data = bytearray(clear.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = b"\xff" * 4096  # a page of the database
    clear.write_bytes(bytes(data))
    damaged = run("backup", "verify", str(clear))
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert "integrity: ok" not in damaged.stdout
    assert run("backup", str(clear), "--db", str(loaded)).returncode == 2  # never overwrites


@pytest.fixture
def postgres_databases() -> Iterator[tuple[str, str]]:
    base = os.environ.get("CROSSWALK_TEST_POSTGRES_URL")
    if not base or shutil.which("pg_dump") is None:
        pytest.skip("needs CROSSWALK_TEST_POSTGRES_URL and pg_dump")
    names = [f"cw_backup_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in names:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(base)
        yield tuple(url.set(database=name).render_as_string(hide_password=False) for name in names)  # type: ignore[misc]
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_postgresql_is_backed_up_with_pg_dump_and_restored(
    postgres_databases: tuple[str, str], tmp_path: Path
) -> None:
    source, target = postgres_databases
    assert run("mpi", "import", str(MPI_EXPORT), "--db", source).returncode == 0
    backup = tmp_path / "pg.backup"
    taken = run("backup", str(backup), "--db", source)
    assert taken.returncode == 0, taken.stderr
    checked = run("backup", "verify", str(backup))
    assert checked.returncode == 0 and "postgresql backup" in checked.stdout, checked.stderr
    done = run("restore", str(backup), "--db", target)
    assert done.returncode == 0, done.stderr
    assert patients(target) == patients(source) == 20


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://cw:pw@db/cw", "postgresql://cw:pw@db/cw"),
        ("postgresql+psycopg://cw@/cw?host=a:5432", "postgresql://cw@/cw?host=a&port=5432"),
        (
            "postgresql+psycopg://cw@/cw?host=a:5432&host=[::1]:5433&target_session_attrs=any",
            "postgresql://cw@/cw?host=a%2C%3A%3A1&port=5432%2C5433&target_session_attrs=any",
        ),
        ("postgresql+psycopg://cw@/cw?host=a&host=b", "postgresql://cw@/cw?host=a%2Cb"),
        ("postgresql+psycopg://cw@/cw?host=/run/pg", "postgresql://cw@/cw?host=%2Frun%2Fpg"),
    ],
)
def test_pg_dump_gets_a_list_of_servers_in_libpq_form(url: str, expected: str) -> None:
    assert libpq_url(url) == expected


def test_postgresql_listed_with_its_standby_is_backed_up_from_the_one_that_answers(
    postgres_databases: tuple[str, str], tmp_path: Path
) -> None:
    """The URL of a primary and its standby (docs/operations.md): here a server that is down,
    then the shared one."""
    source, target = postgres_databases
    listed = []
    for url in (make_url(source), make_url(target)):
        servers = (f"127.0.0.1:{free_port()}", f"{url.host}:{url.port or 5432}")
        query = {"host": servers, "target_session_attrs": "read-write"}
        listed.append(url.set(host=None, port=None, query=query).render_as_string(False))
    assert run("mpi", "import", str(MPI_EXPORT), "--db", listed[0]).returncode == 0
    backup = tmp_path / "pg.backup"
    taken = run("backup", str(backup), "--db", listed[0])
    assert taken.returncode == 0, taken.stderr
    done = run("restore", str(backup), "--db", listed[1])
    assert done.returncode == 0, done.stderr
    assert patients(target) == 20


def _fill(url: str) -> None:
    """The same MPI and messages (one a duplicate) into a store."""
    assert run("mpi", "import", str(MPI_EXPORT), "--db", url).returncode == 0
    with running_engine(url) as engine, Peer(engine.port(), timeout=10) as peer:
        for control_id in ("C1", "C2", "C3", "C2"):
            assert b"MSA|AA|" in peer.exchange(adt(control_id))


def _described(output: str) -> dict[str, str]:
    """``backup verify``'s lines by their label (``rows``, ``migration``…)."""
    lines = (line.strip().split(": ", 1) for line in output.splitlines()[1:])
    return {parts[0]: parts[1] for parts in lines if len(parts) == 2}


def test_verify_describes_a_postgresql_dump_as_it_does_an_sqlite_backup(
    postgres_databases: tuple[str, str], tmp_path: Path
) -> None:
    """Counts, messages by status, queued deliveries, migration and each listener's recovery
    point read from the dump itself match those of an SQLite backup of the same data; the
    newest message time is the store's own."""
    source = postgres_databases[0]
    sqlite = f"sqlite:///{tmp_path / 'store.db'}"
    for url in (source, sqlite):
        _fill(url)
    shown = {}
    for name, url in (("pg", source), ("sqlite", sqlite)):
        backup = tmp_path / f"{name}.backup"
        assert run("backup", str(backup), "--db", url).returncode == 0
        checked = run("backup", "verify", str(backup))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        shown[name] = _described(checked.stdout)
    pg, lite = shown["pg"], shown["sqlite"]
    assert pg["integrity"] == "ok"
    for label in ("migration", "rows", "messages by status"):
        assert pg[label] == lite[label], label
    assert "messages 4" in pg["rows"] and "patients 20" in pg["rows"]
    assert "proposals 0" in pg["rows"]
    point = "recovery point, listener test"
    assert pg[point].split(", received")[0] == lite[point].split(", received")[0]
    assert "control id C2" in pg[point]
    store = open_store(source)
    with store.connect() as connection:
        newest = connection.execute(text("SELECT max(received_at) FROM messages")).scalar_one()
    store.dispose()
    assert pg["newest message"].startswith(newest.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))


def test_a_truncated_postgresql_dump_fails_verify(
    postgres_databases: tuple[str, str], tmp_path: Path
) -> None:
    source = postgres_databases[0]
    _fill(source)
    backup = tmp_path / "pg.backup"
    assert run("backup", str(backup), "--db", source).returncode == 0
    data = backup.read_bytes()
    backup.write_bytes(data[: len(data) * 3 // 4])
    checked = run("backup", "verify", str(backup))
    assert checked.returncode != 0
    assert "integrity: ok" not in checked.stdout
