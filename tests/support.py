"""Test helpers: an engine running in a background thread, and a blocking MLLP peer."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from engine.config.model import EngineConfig
from engine.pipeline.server import Server
from engine.pipeline.settings import ListenerSettings
from engine.store import crypto
from engine.store.schema import Message
from engine.testing import wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def hl7(*segments: str) -> bytes:
    """Join segments with CR, as on the wire."""
    return ("\r".join(segments) + "\r").encode("utf-8")


def adt(
    control_id: str = "MSG00001",
    *,
    version: str = "2.5.1",
    extra_msh: str = "",
    pid: str = "PID|1||123456^^^GENHOSP^MR||DOE^JANE||19800304|F",
) -> bytes:
    """A small ADT^A01 with the given control id (MSH-13.. appended from ``extra_msh``)."""
    return hl7(
        f"MSH|^~\\&|EPIC|GENHOSP|PACS|RADIOLOGY|20261123101500||ADT^A01^ADT_A01|{control_id}|P|"
        f"{version}{extra_msh}",
        "EVN|A01|20261123101500",
        pid,
        "PV1|1|O",
    )


class EngineThread:
    """A :class:`Server` on its own event loop in a background thread."""

    def __init__(
        self, db_url: str, listeners: dict[str, ListenerSettings], *, uvloop: bool = False
    ) -> None:
        self.config = EngineConfig(listeners=listeners)
        self.server = Server(self.config, db_url)
        if uvloop:  # the loop `crosswalk serve` runs on, where it is installed
            import uvloop as uv

            self.loop = uv.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> EngineThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        return self

    def port(self, name: str | None = None) -> int:
        listener = self.server.listeners[name or next(iter(self.server.listeners))]
        return listener.port

    def stats(self, name: str | None = None) -> Any:
        return self.server.listeners[name or next(iter(self.server.listeners))].stats

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(grace=5), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextmanager
def running_engine(db_url: str, **settings: Any) -> Iterator[EngineThread]:
    """An engine with one listener ``test`` on a free loopback port; ``settings`` override."""
    listener = replace(ListenerSettings(name="test", port=0), **settings)
    engine = EngineThread(db_url, {"test": listener}).start()
    try:
        yield engine
    finally:
        engine.stop()


def segment(payload: bytes, name: str, encoding: str = "utf-8") -> list[str]:
    """The fields of the first ``name`` segment of a message (fields[n] is field n)."""
    for line in payload.decode(encoding).replace("\n", "\r").split("\r"):
        if line.startswith(name):
            fields = line.split(line[3]) if name == "MSH" else line.split("|")
            return ["MSH", line[3], *fields[1:]] if name == "MSH" else fields
    raise AssertionError(f"no {name} segment in {payload!r}")


def field(payload: bytes, name: str, position: int, encoding: str = "utf-8") -> str:
    fields = segment(payload, name, encoding)
    return fields[position] if position < len(fields) else ""


def stored_messages(engine: Engine) -> list[Message]:
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(select(Message).order_by(Message.id)))


def crosswalk(*args: str) -> list[str]:
    """The command line of ``crosswalk ARGS`` run with this interpreter."""
    return [sys.executable, "-m", "engine", *args]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, COLUMNS="200", CROSSWALK_LOG_LEVEL="INFO")
    env.update(extra)
    return env


def run_crosswalk(
    *args: str, timeout: float = 60, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    """Run ``crosswalk ARGS`` as a user would, capturing its output (``columns``: the width of
    the terminal it believes it writes to)."""
    return subprocess.run(
        crosswalk(*args),
        capture_output=True,
        text=True,
        env=cli_env(COLUMNS=str(columns)),
        timeout=timeout,
    )


@contextmanager
def serving(
    args: list[str],
    port: int,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``crosswalk serve ARGS`` as a real process logging to ``log``, once ``port`` listens;
    stopped with SIGTERM on the way out (its exit code is then ``returncode``)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            crosswalk("serve", *args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env or cli_env(),
            cwd=cwd,
        )
        try:
            wait_for_port(port, process)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def assert_fits(output: str, columns: int, values: list[str]) -> None:
    """Every line of ``output`` fits ``columns``, and each of ``values`` (ids, dates, accession
    numbers) is printed whole on one line."""
    lines = output.splitlines()
    too_wide = [line for line in lines if len(line.rstrip()) > columns]
    assert not too_wide, too_wide
    missing = [value for value in values if not any(value in line for line in lines)]
    assert not missing, (missing, output)


ENDPOINTS = """
listeners:
  ehr: {port: 0}
destinations:
  pacs: {host: 127.0.0.1, port: 9}
"""


def config_folder(
    tmp_path: Path,
    routes: str,
    *,
    endpoints: str = ENDPOINTS,
    mappings: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """A configuration folder ``tmp_path/routes`` (with ``tmp_path/mappings``) for tests."""
    folder = tmp_path / "routes"
    folder.mkdir(exist_ok=True)
    (folder / "endpoints.yaml").write_text(endpoints, encoding="utf-8")
    (folder / "routes.yaml").write_text(routes, encoding="utf-8")
    for name, text in (extra or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    tables = tmp_path / "mappings"
    tables.mkdir(exist_ok=True)
    for name, text in (mappings or {}).items():
        (tables / name).write_text(text, encoding="utf-8")
    return folder


def destination_yaml(port: int, **settings: object) -> str:
    """Endpoints with a listener on a free port and a destination `pacs` on ``port``."""
    values = {
        "host": "127.0.0.1",
        "port": port,
        "connect_timeout": "1s",
        "ack_timeout": "1s",
        "retry_initial": "50ms",
        "retry_max": "200ms",
        **settings,
    }
    body = "".join(f"    {key}: {value}\n" for key, value in values.items())
    return f"listeners:\n  ehr: {{port: 0}}\ndestinations:\n  pacs:\n{body}"


ALL_TO_PACS = "routes:\n  all:\n    source: ehr\n    destinations: [pacs]\n"
SLOW_ROUTE = """
routes:
  slow:
    source: ehr
    steps:
      - set:
          field: MSH-8
          template: "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}x"
    destinations: [pacs]
"""
"""A route that takes ~25 ms a message (a template's empty loop of a million turns)."""


class Pipeline(EngineThread):
    """A whole engine (listener, router, delivery) from a configuration folder, in a thread."""

    def __init__(self, db_url: str, folder: Path, reload_interval: float = 0.2) -> None:
        from engine.config.loader import load_config

        config = load_config(folder, {})
        self.config = config
        self.server = Server(
            config, db_url, config_folder=folder, load=load_config, reload_interval=reload_interval
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)


@contextmanager
def running_pipeline(
    db_url: str, tmp_path: Path, pacs_port: int, routes: str = ALL_TO_PACS, **destination: object
) -> Iterator[Pipeline]:
    folder = config_folder(tmp_path, routes, endpoints=destination_yaml(pacs_port, **destination))
    pipeline = Pipeline(db_url, folder)
    pipeline.start()
    try:
        yield pipeline
    finally:
        pipeline.stop()


@pytest.fixture(autouse=True, params=["clear", "encrypted"])
def store_mode(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Imported into a test module: every test of it twice, on a clear store and with content
    encryption on (a fresh keys file, also given to the commands the tests run): the MPI's and
    study index's values encrypted, their look-ups keyed hashes."""
    if request.param == "encrypted":
        keys = tmp_path / "content.keys"
        keys.write_text(crypto.new_key_line() + "\n")
        crypto.configure(crypto.Keyring.load(keys))
        monkeypatch.setenv(crypto.ENV_VAR, str(keys))
    try:
        yield request.param
    finally:
        crypto.configure(None)


def answers_to(future: asyncio.Future[list[bytes]]) -> Callable[..., None]:
    """A listener's reply callback that settles ``future`` with the ACK payloads."""

    def reply(acks: list[bytes], rejected: bool = False) -> None:
        future.set_result(acks)

    return reply
