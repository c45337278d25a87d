"""Several engines on one PostgreSQL behind a real HAProxy, as real processes (tests, bench).

``haproxy()`` starts Debian's haproxy in the foreground on a loopback port, balancing TCP
connections over the engines' listeners (health-checked every 200 ms, so a dead engine is left
out at once); ``Engines`` starts ``crosswalk serve`` processes on one database, each listening
on its own port; ``Feed`` sends one sender's messages in order, each until it is acknowledged,
reconnecting (through the balancer, to another engine) when its connection fails.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from engine.testing import Peer, free_port, wait_for_port
from tests.support import cli_env, crosswalk

HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
)


@contextlib.contextmanager
def haproxy(port: int, backends: list[int], folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """HAProxy on 127.0.0.1:``port`` in front of the listeners on ``backends``."""
    assert HAPROXY is not None
    servers = "".join(
        f"    server e{n} 127.0.0.1:{backend} check inter 200ms fall 1 rise 2\n"
        for n, backend in enumerate(backends)
    )
    config = folder / "haproxy.cfg"
    config.write_text(
        "global\n    maxconn 2000\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 60s\n"
        "    timeout server 60s\n"
        f"frontend mllp\n    bind 127.0.0.1:{port}\n    default_backend engines\n"
        f"backend engines\n    balance roundrobin\n{servers}",
        encoding="utf-8",
    )
    with (folder / "haproxy.log").open("wb") as log:
        process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log, stderr=log)
        try:
            wait_for_port(port, process, timeout=10)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class Engines:
    """``crosswalk serve`` processes on one database, each on its own port, logging to files.

    Every process started is killed on ``close()`` (SIGCONT first, in case it was paused).
    """

    def __init__(
        self,
        folder: Path,
        db_url: str,
        logs: Path,
        *extra: str,
        code: Path | None = None,
        admin: bool = False,
    ) -> None:
        self.code = code
        self.admin = admin
        """Give each engine an admin endpoint on a port of its own (``admin_ports``)."""
        self.admin_ports: list[int] = []
        """Run the engine from this source tree instead of this one (a baseline)."""
        self.folder = folder
        self.db_url = db_url
        self.logs = logs
        self.extra = extra
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []

    def start(self, count: int) -> list[int]:
        """Start ``count`` engines and wait until each listens; their ports."""
        started = []
        for _ in range(count):
            port = free_port()
            n = len(self.processes)
            admin = []
            if self.admin:
                self.admin_ports.append(free_port())
                admin = ["--admin-port", str(self.admin_ports[-1])]
            log = (self.logs / f"engine{n}.log").open("wb")
            process = subprocess.Popen(
                crosswalk(
                    "serve",
                    "--config",
                    str(self.folder),
                    "--db",
                    self.db_url,
                    "--port",
                    str(port),
                    *admin,
                    *self.extra,
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=cli_env(CROSSWALK_LOG_LEVEL="INFO"),
                cwd=self.code,
            )
            log.close()
            self.processes.append(process)
            self.ports.append(port)
            started.append(port)
        for port, process in zip(self.ports[-count:], self.processes[-count:], strict=True):
            wait_for_port(port, process, timeout=60)
        return started

    def log(self, n: int) -> str:
        return (self.logs / f"engine{n}.log").read_text(encoding="utf-8", errors="replace")

    def stop(self, n: int, timeout: float = 20) -> int:
        """SIGTERM engine ``n`` and wait for it; its exit code."""
        process = self.processes[n]
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Feed(threading.Thread):
    """One sender: its messages in order, each sent until acknowledged AA (reconnecting and
    sending again after a connection failure), with a pause between messages."""

    def __init__(self, port: int, messages: list[bytes], pause: float = 0.0) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.messages = messages
        self.pause = pause
        self.acked: list[bytes] = []
        self.resent = 0
        self.failure: str | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        peer: Peer | None = None
        try:
            for message in self.messages:
                deadline = time.monotonic() + 60
                while True:
                    if time.monotonic() > deadline or self.stopping.is_set():
                        self.failure = "gave up sending"
                        return
                    try:
                        if peer is None:
                            peer = Peer(self.port, timeout=3)
                        answer = peer.exchange(message)
                    except (OSError, TimeoutError, ConnectionError):
                        if peer is not None:
                            peer.close()
                            peer = None
                        self.resent += 1
                        time.sleep(0.1)
                        continue
                    if b"MSA|AA|" in answer:
                        self.acked.append(message)
                        break
                    self.resent += 1  # AE: not stored, send again
                    time.sleep(0.1)
                if self.pause:
                    time.sleep(self.pause)
        finally:
            if peer is not None:
                peer.close()


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False
