"""A throwaway PostgreSQL server of a test's own, on another port, that the test may freeze,
thaw and stop (fault tests never touch the shared server)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.testing import free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class ThrowawayPostgres:
    """``initdb`` in a temporary folder and a server on a free loopback port."""

    def __init__(self) -> None:
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
        )
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
