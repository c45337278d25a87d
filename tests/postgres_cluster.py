"""A throwaway PostgreSQL server of a test's own, on another port, that the test may freeze,
thaw, stop and crash (fault tests never touch the shared server); and a primary with a
synchronous streaming standby, each on its own port, to fail over from one to the other."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from engine.testing import free_port
from tests.test_delivery import wait_until


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class ThrowawayPostgres:
    """``initdb`` in a temporary folder and a server on a free loopback port.

    ``settings`` go on the server's command line: this server's own, not copied to a standby
    made from it."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        self.settings = settings or {}
        initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.skip("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
        self._initdb, self._pg_ctl = initdb, pg_ctl
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="crosswalk-pg-"))
        self.data = self.folder / "data"
        self._user: str | None = None
        if os.geteuid() == 0:  # the server refuses to run as root
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run a server")
            self._user = "postgres"
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", self._user, "--"] if self._user else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> ThrowawayPostgres:
        if not self.data.exists():
            self._run(self._initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
            " -c max_connections=40"
        ) + "".join(f" -c {shlex.quote(f'{k}={v}')}" for k, v in self.settings.items())
        log = str(self.folder / "server.log")
        self._run(
            self._pg_ctl, "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start"
        )
        return self

    def pids(self) -> list[int]:
        """The postmaster and every process it started."""
        head = int((self.data / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{head}/task/{head}/children").read_text().split()
        return [head, *map(int, children)]

    def freeze(self) -> None:
        """Stop every server process (SIGSTOP): connections stay open, nothing answers."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def halt(self) -> None:
        """Shut the server down (fast: sessions are ended) keeping its data, to start again."""
        self._run(self._pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def crash(self) -> None:
        """Stop the server as a crash would (immediate: no checkpoint, sessions cut)."""
        self._run(self._pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def promote(self) -> None:
        """Make this standby a primary; returns once it takes writes."""
        self._run(self._pg_ctl, "-D", str(self.data), "-w", "-t", "60", "promote")

    def query(self, sql: str) -> list[tuple[object, ...]]:
        """Run ``sql`` on this server alone (its own port, not a URL's list); its rows, if any."""
        conninfo = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.thaw()
        with contextlib.suppress(Exception):
            self._run(self._pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres()
    try:
        yield server.start()
    finally:
        server.stop()


def standby_of(primary: ThrowawayPostgres, name: str) -> ThrowawayPostgres:
    """A streaming standby of ``primary`` made by ``pg_basebackup -R`` (not started); it
    connects as ``application_name`` ``name``, the name ``synchronous_standby_names`` lists."""
    pg_basebackup = _bin("pg_basebackup")
    if pg_basebackup is None:
        pytest.skip("PostgreSQL's pg_basebackup is not installed")
    standby = ThrowawayPostgres()
    conninfo = f"host=127.0.0.1 port={primary.port} user=postgres application_name={name}"
    standby._run(pg_basebackup, "-D", str(standby.data), "-R", "-c", "fast", "-d", conninfo)
    return standby


def failover_url(*servers: ThrowawayPostgres) -> str:
    """One store URL listing ``servers``: libpq connects to whichever takes writes."""
    hosts = "&".join(f"host=127.0.0.1:{server.port}" for server in servers)
    return f"postgresql+psycopg://postgres@/postgres?{hosts}&target_session_attrs=read-write"


def streaming(primary: ThrowawayPostgres) -> list[tuple[object, ...]]:
    """(application_name, sync_state) of each standby streaming from ``primary``."""
    return primary.query(
        "SELECT application_name, sync_state FROM pg_stat_replication WHERE state = 'streaming'"
    )


def cut_off(primary: ThrowawayPostgres, standby: ThrowawayPostgres) -> str:
    """Stop ``standby`` streaming from ``primary``, as a network fault would; returns once the
    primary has no standby. The standby's ``primary_conninfo``, for :func:`reconnect`."""
    ((conninfo,),) = standby.query("SHOW primary_conninfo")
    standby.query("ALTER SYSTEM SET primary_conninfo = ''")
    standby.query("SELECT pg_reload_conf()")
    cut = wait_until(lambda: not primary.query("SELECT 1 FROM pg_stat_replication"), 30)
    assert cut, "still streaming 30 s after it was cut off"
    return str(conninfo)


def reconnect(standby: ThrowawayPostgres, conninfo: str) -> None:
    """Let a standby :func:`cut_off` stream again (it catches up by itself)."""
    quoted = conninfo.replace("'", "''")
    standby.query(f"ALTER SYSTEM SET primary_conninfo = '{quoted}'")
    standby.query("SELECT pg_reload_conf()")


@contextlib.contextmanager
def primary_and_standby(
    synchronous: bool = True,
) -> Iterator[tuple[ThrowawayPostgres, ThrowawayPostgres]]:
    """A primary and a streaming standby of it, both started; with ``synchronous`` the primary
    lists the standby in ``synchronous_standby_names`` (``synchronous_commit`` stays ``on``).
    Yields once the standby streams, ``sync`` or ``async`` as asked."""
    name = "standby"
    primary = ThrowawayPostgres({"synchronous_standby_names": name} if synchronous else None)
    standby: ThrowawayPostgres | None = None
    try:
        primary.start()
        standby = standby_of(primary, name).start()
        wanted = [(name, "sync" if synchronous else "async")]
        assert wait_until(lambda: streaming(primary) == wanted, 30), f"not {wanted} in 30 s"
        yield primary, standby
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()
