"""Several engines on one PostgreSQL behind a real HAProxy, as real processes: the holder of
the leases is killed (SIGKILL) or paused (SIGSTOP, then SIGCONT after the takeover) while
several feeds send. Every acknowledged message is delivered, each feed's order holds at the
PACS, and at most the in-flight message of each queue is delivered twice."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.leases.records import read_leases
from engine.store.database import open_store
from engine.testing import FakeReceiver, free_port
from tests.cluster import HAPROXY, Engines, Feed, haproxy
from tests.support import adt, config_folder, destination_yaml
from tests.test_delivery import wait_until

pytestmark = [
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
    pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed"),
]

ROUTES = "routes:\n  all:\n    source: ehr\n    destinations: [pacs, mpi]\n"
TTL = 2.0
PER_FEED = 120


def _feeds(port: int, count: int) -> list[Feed]:
    return [
        Feed(
            port,
            [
                adt(f"F{f}-{i:04d}", pid=f"PID|1||P{f}^^^GENHOSP^MR||DOE^F{f}||19800304|F")
                for i in range(PER_FEED)
            ],
            pause=0.01,
        )
        for f in range(count)
    ]


def _holder_pid(db_url: str) -> tuple[int, int]:
    """The pid of the engine holding the routing lease, and how many queue leases it holds."""
    store = open_store(db_url)
    deadline = time.monotonic() + 15
    try:
        while True:  # between two holders while the engines share the work out
            rows = [r for r in read_leases(store) if not r.expired]
            holder = next((r.holder for r in rows if r.name == "routing"), None)
            if holder is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        store.dispose()
    assert holder is not None, "no engine holds the routing lease"
    queues = sum(1 for r in rows if r.holder == holder and r.name.startswith("queue:"))
    return int(holder.split(":")[-2]), queues


def _wait_for_takeover(db_url: str, victim: int, timeout: float = 15) -> float:
    """Seconds until every lease the victim held is held, unexpired, by another engine."""
    store = open_store(db_url)
    began = time.monotonic()
    work = []
    try:
        while time.monotonic() - began < timeout:
            rows = read_leases(store)
            work = [r for r in rows if not r.name.startswith("engine:")]
            if work and all(not r.expired and int(r.holder.split(":")[-2]) != victim for r in work):
                return time.monotonic() - began
            time.sleep(0.05)
    finally:
        store.dispose()
    held = [(r.name, r.holder.split(":")[-2], "expired" if r.expired else "held") for r in work]
    raise AssertionError(f"no takeover within {timeout}s (victim {victim}): {held}")


def _check_delivered(pacs: FakeReceiver, feeds: list[Feed], faults: int, queues: int) -> None:
    acked = [[m.split(b"|")[9].decode() for m in feed.acked] for feed in feeds]
    assert all(feed.failure is None for feed in feeds), [feed.failure for feed in feeds]
    assert [len(ids) for ids in acked] == [PER_FEED] * len(feeds)
    expected = {cid for ids in acked for cid in ids}
    deadline = time.monotonic() + 60
    while not expected <= set(pacs.control_ids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    received = pacs.control_ids()
    assert expected <= set(received), sorted(expected - set(received))[:10]
    for f, ids in enumerate(acked):  # each feed's order at the PACS, first arrivals
        first: list[str] = []
        for cid in received:
            if cid.startswith(f"F{f}-") and cid not in first:
                first.append(cid)
        assert first == ids
    twice = {cid: n for cid, n in Counter(received).items() if n > 1}
    assert sum(n - 1 for n in twice.values()) <= faults * queues, twice


@contextlib.contextmanager
def _cluster_under_load(
    db_url: str, tmp_path: Path, engine_count: int, feed_count: int
) -> Iterator[tuple[Engines, FakeReceiver, list[Feed]]]:
    """``engine_count`` engines (one partition each) behind HAProxy, ``feed_count`` feeds
    started, PER_FEED messages acknowledged and some delivered: the moment to hit the lease
    holder."""
    pacs = FakeReceiver()
    folder = config_folder(
        tmp_path,
        ROUTES,
        endpoints=destination_yaml(pacs.port, partition_by="PID-3.1", partitions=engine_count),
    )
    front = free_port()
    feeds = _feeds(front, feed_count)
    try:
        with Engines(folder, db_url, tmp_path, "--lease-ttl", str(TTL)) as engines:
            ports = engines.start(engine_count)
            with haproxy(front, ports, tmp_path):
                for feed in feeds:
                    feed.start()
                while sum(len(feed.acked) for feed in feeds) < PER_FEED:
                    time.sleep(0.05)
                # On a loaded machine delivery can lag the ACKs by seconds: wait for it.
                assert wait_until(lambda: len(pacs.received) > 0, timeout=60), "nothing delivered"
                yield engines, pacs, feeds
    finally:
        for feed in feeds:
            feed.stopping.set()
        pacs.stop()


def test_two_engines_behind_haproxy_survive_the_lease_holder_killed_under_load(
    db_url: str, tmp_path: Path
) -> None:
    with _cluster_under_load(db_url, tmp_path, 2, 4) as (_, pacs, feeds):
        victim, queues = _holder_pid(db_url)
        os.kill(victim, signal.SIGKILL)
        took = _wait_for_takeover(db_url, victim)
        for feed in feeds:
            feed.join(120)
        _check_delivered(pacs, feeds, faults=1, queues=queues)
    assert took < TTL + TTL / 4 + 2.0
    print(f"takeover after SIGKILL: {took:.2f}s (lease {TTL:g}s)")


def test_three_engines_a_paused_holder_resumed_after_the_takeover_sends_nothing_stale(
    db_url: str, tmp_path: Path
) -> None:
    with _cluster_under_load(db_url, tmp_path, 3, 5) as (engines, pacs, feeds):
        victim, queues = _holder_pid(db_url)
        os.kill(victim, signal.SIGSTOP)
        try:
            took = _wait_for_takeover(db_url, victim)
            time.sleep(1.0)
        finally:
            os.kill(victim, signal.SIGCONT)
        for feed in feeds:
            feed.join(120)
        n = engines.processes.index(next(p for p in engines.processes if p.pid == victim))
        assert engines.processes[n].poll() is None  # resumed, still serving
        _check_delivered(pacs, feeds, faults=1, queues=queues)
    assert "not renewed in time" in engines.log(n) or "taken over" in engines.log(n)
    assert took < TTL + TTL / 4 + 2.0
    print(f"takeover after SIGSTOP: {took:.2f}s (lease {TTL:g}s)")
