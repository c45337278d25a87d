"""Routing in a forked child process: same results as on the event loop, new configurations,
a child that dies, and a child that holds none of the engine's ports or files."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine.config.loader import load_config
from engine.pipeline.routing_process import ForkedRouting, InlineRouting, RoutedBatch
from engine.routes.router import Router
from engine.store.received import AcceptedMessage
from engine.testing import Peer, free_port, wait_for_port
from tests.support import (
    SLOW_ROUTE,
    adt,
    cli_env,
    config_folder,
    crosswalk,
    destination_yaml,
)

pytestmark = pytest.mark.skipif(not ForkedRouting.available(), reason="needs Linux and 2 cores")

ROUTES = """routes:
  a08-only:
    source: ehr
    filter: {type: ADT^A08}
    destinations: [pacs]
  mrn:
    source: ehr
    steps:
      - set: {field: PID-3.1, template: "MRN{{ field('PID-3.1') }}"}
    destinations: [pacs]
"""


def router(tmp_path: Path, routes: str = ROUTES) -> Router:
    return Router(load_config(config_folder(tmp_path, routes), {}))


def batch(count: int, start: int = 1) -> list[AcceptedMessage]:
    return [
        AcceptedMessage(i, adt(f"C{i}"), "UNICODE UTF-8", "ehr")
        for i in range(start, start + count)
    ]


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def child_of(forked: ForkedRouting) -> int:
    """The pid of the routing child ``forked`` routes with now."""
    assert forked._child is not None
    return forked._child.pid


def gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "\nState:\tZ" in status.read_text()


def test_the_child_routes_exactly_as_the_event_loop_does(tmp_path: Path) -> None:
    async def scenario() -> tuple[RoutedBatch, RoutedBatch, int]:
        forked = ForkedRouting(router(tmp_path))
        try:
            result = await forked.route(batch(50))
            pid = child_of(forked)
            assert pid != os.getpid() and pid in children(os.getpid())
        finally:
            await forked.close()
        return result, await InlineRouting(router(tmp_path)).route(batch(50)), pid

    forked, inline, pid = asyncio.run(scenario())
    assert forked == inline
    assert [m.message_id for m in forked.routed] == list(range(1, 51))
    first = forked.routed[0]
    assert first.status == "routed" and first.reason == "routed by mrn to pacs"
    assert b"PID|1||MRN123456^^^GENHOSP^MR" in first.deliveries[0]["payload"]  # type: ignore[operator]
    assert gone(pid), "closing reaps the child"


def test_a_new_configuration_forks_a_new_child(tmp_path: Path) -> None:
    other = ROUTES.replace("MRN{{", "NEW{{")

    async def scenario() -> None:
        forked = ForkedRouting(router(tmp_path))
        try:
            await forked.route(batch(2))
            old = child_of(forked)
            (tmp_path / "other").mkdir()
            forked.swap(router(tmp_path / "other", other))
            result = await forked.route(batch(2, start=10))
            assert child_of(forked) != old
            assert gone(old)
            assert b"PID|1||NEW123456" in result.routed[0].deliveries[0]["payload"]  # type: ignore[operator]
        finally:
            await forked.close()

    asyncio.run(scenario())


def test_a_dead_child_is_replaced_and_its_batch_routed_nothing_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> tuple[RoutedBatch, int, int]:
        forked = ForkedRouting(router(tmp_path))
        try:
            await forked.route(batch(1))
            killed = child_of(forked)
            os.kill(killed, signal.SIGKILL)
            result = await forked.route(batch(20, start=100))
            assert not forked._failed
            return result, killed, child_of(forked)
        finally:
            await forked.close()

    with caplog.at_level(logging.WARNING):
        result, killed, now = asyncio.run(scenario())
    assert now != killed and gone(killed)
    assert [m.message_id for m in result.routed] == list(range(100, 120))
    assert all(m.status == "routed" for m in result.routed)
    assert f"routing process {killed} exited; routing its batch one message at a time" in (
        caplog.text
    )


def test_a_message_that_kills_the_child_is_errored_and_the_engine_lives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Deadly(Router):
        def route(self, raw: bytes, charset: str | None, listener: str):  # type: ignore[no-untyped-def]
            if b"|C2|" in raw:
                os._exit(3)  # as a crash in a C library would (only ever runs in the child)
            return super().route(raw, charset, listener)

    async def scenario() -> RoutedBatch:
        forked = ForkedRouting(Deadly(load_config(config_folder(tmp_path, ROUTES), {})))
        try:
            result = await forked.route(batch(3))
            assert not forked._failed
            return result
        finally:
            await forked.close()

    with caplog.at_level(logging.ERROR):
        result = asyncio.run(scenario())
    assert [m.status for m in result.routed] == ["routed", "errored", "routed"]
    assert result.routed[1].reason.startswith("the routing process died on this message, twice")
    assert "message 2: the routing process died on this message, twice" in caplog.text
    assert not children(os.getpid())


def test_when_no_child_can_be_forked_the_event_loop_routes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)

    async def scenario() -> RoutedBatch:
        forked = ForkedRouting(router(tmp_path))
        result = await forked.route(batch(3))
        assert forked._failed and forked._child is None
        await forked.close()
        return result

    with caplog.at_level(logging.ERROR):
        result = asyncio.run(scenario())
    assert [m.status for m in result.routed] == ["routed"] * 3
    assert "routing on the event loop from now on" in caplog.text


def test_a_routing_bug_in_the_child_errors_that_message_only(tmp_path: Path) -> None:
    class Broken(Router):
        def route(self, raw: bytes, charset: str | None, listener: str):  # type: ignore[no-untyped-def]
            if b"|C2|" in raw:
                raise KeyError("bug")
            return super().route(raw, charset, listener)

    async def scenario() -> RoutedBatch:
        forked = ForkedRouting(Broken(load_config(config_folder(tmp_path, ROUTES), {})))
        try:
            return await forked.route(batch(3))
        finally:
            await forked.close()

    result = asyncio.run(scenario())
    assert [m.status for m in result.routed] == ["routed", "errored", "routed"]
    assert result.routed[1].reason == "routing failed: KeyError: 'bug'"
    ((message_id, trace),) = result.failures
    assert message_id == 2 and trace.endswith("\nKeyError")  # its text stays out of the log


def test_the_child_holds_no_port_and_dies_with_the_engine(tmp_path: Path) -> None:
    """The child closes the engine's sockets and files: a SIGKILLed engine's port is free for
    its restart at once; signals meant for the engine leave the child alone, and the child,
    left without its engine, exits."""
    port = free_port()
    endpoints = destination_yaml(free_port()).replace("{port: 0}", f"{{port: {port}}}")
    routes = "routes:\n  all:\n    source: ehr\n    destinations: [pacs]\n"
    folder = config_folder(tmp_path, routes, endpoints=endpoints)
    db = f"sqlite:///{tmp_path}/engine.db"
    log = tmp_path / "engine.log"

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            crosswalk("serve", "--config", str(folder), "--db", db),
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
        try:
            wait_for_port(port, process)
        except RuntimeError:
            process.kill()
            process.wait(10)
            raise
        return process

    engine = start()
    try:
        peer = Peer(port)
        assert b"MSA|AA|C1" in peer.exchange(adt("C1"))
        peer.close()
        deadline = time.monotonic() + 10
        while not children(engine.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = children(engine.pid)
        # The child closes what it inherited right after the fork; give it that moment.
        deadline = time.monotonic() + 5
        while len(fds := os.listdir(f"/proc/{child}/fd")) > 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(fds) <= 4, fds  # stdin, stdout, stderr and its socket to the engine
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the engine decides
            os.kill(child, signum)
        peer = Peer(port)
        assert b"MSA|AA|C2" in peer.exchange(adt("C2"))
        peer.close()
        time.sleep(0.2)
        assert not gone(child) and children(engine.pid) == {child}
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
        engine = start()  # binds the same port at once
        deadline = time.monotonic() + 10
        while not gone(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(child)
    finally:
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(30) == 0, log.read_text()[-3000:]


def test_a_message_that_hangs_routing_is_errored_and_the_feed_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A regular expression that backtracks for ever on one message: nothing in Python can
    stop it, so the child is killed; that message alone is recorded as errored."""
    routes = """routes:
  names:
    source: ehr
    filter: {field: PID-5.1, regex: '^(A+)+$'}
    destinations: [pacs]
"""
    evil = "PID|1||123456^^^GENHOSP^MR||" + "A" * 40 + "!^JANE||19800304|F"
    messages = [
        AcceptedMessage(
            1, adt("C1", pid="PID|1||1^^^GENHOSP^MR||AAAA^JANE"), "UNICODE UTF-8", "ehr"
        ),
        AcceptedMessage(2, adt("C2", pid=evil), "UNICODE UTF-8", "ehr"),
        AcceptedMessage(
            3, adt("C3", pid="PID|1||3^^^GENHOSP^MR||SMITH^JOHN"), "UNICODE UTF-8", "ehr"
        ),
    ]

    async def scenario() -> tuple[RoutedBatch, RoutedBatch, float]:
        forked = ForkedRouting(router(tmp_path, routes), timeout=0.5)
        try:
            started = time.monotonic()
            result = await forked.route(messages)
            took = time.monotonic() - started
            after = await forked.route(batch(2, start=10))
            return result, after, took
        finally:
            await forked.close()

    with caplog.at_level(logging.WARNING):
        result, after, took = asyncio.run(scenario())
    assert [m.status for m in result.routed] == ["routed", "errored", "filtered"]
    assert result.routed[1].reason.startswith("routing took longer than 0.5s and was stopped")
    assert "took longer than 0.5s; killed; routing its batch one message at a time" in caplog.text
    assert took < 5
    assert [m.status for m in after.routed] == ["filtered", "filtered"]  # DOE: no match
    assert "message 2: routing took longer than 0.5s and was stopped; recorded as errored" in (
        caplog.text
    )
    assert not children(os.getpid()), "every child killed or closed is reaped"


def test_a_child_left_with_a_batch_at_shutdown_is_ended_at_once(tmp_path: Path) -> None:
    """The engine stops while the child routes a long batch (its answer will never be read):
    closing kills and reaps it at once instead of waiting for the batch, so no thread stays
    blocked waiting for the child and holds up the engine's exit."""

    async def scenario() -> tuple[float, int]:
        forked = ForkedRouting(router(tmp_path, SLOW_ROUTE), timeout=60)
        routing = asyncio.create_task(forked.route(batch(400)))
        await asyncio.sleep(0.5)
        pid = child_of(forked)
        routing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await routing
        started = time.monotonic()
        await forked.close()
        return time.monotonic() - started, pid

    took, pid = asyncio.run(scenario())
    assert took < 2, f"closing waited {took:.1f}s for a batch of ~10 s"
    assert gone(pid) and not children(os.getpid())
