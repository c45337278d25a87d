"""Two engines on one PostgreSQL that is shut down mid-feed and started again (a throwaway
server of the test's own, on its own port; a failover looks the same to the engines: the
connections drop and the server answers again at the same address).

While the store is gone every message is answered AE, never AA, on the sender's connection;
the engines are not restarted: they reconnect by themselves, take the leases again (each
engine its share), and every message answered AA is stored once and reaches the PACS in its
feed's order."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from engine.leases.records import read_leases
from engine.store.database import open_store
from engine.store.queue import summarize
from engine.testing import FakeReceiver
from tests.cluster import Engines
from tests.postgres_cluster import throwaway_postgres
from tests.support import config_folder, destination_yaml, stored_messages
from tests.test_delivery import wait_until
from tests.test_store_outages import Feed

ROUTES = "routes:\n  all:\n    source: ehr\n    destinations: [pacs]\n"
TTL = 2.0
DOWN = 5.0
"""Seconds the server stays down: longer than a lease, so every lease expires meanwhile."""


def _leases_shared(url: str, pids: list[int]) -> bool:
    """Every lease held, unexpired, by a running engine, and each engine holding some."""
    store = open_store(url)
    try:
        rows = [r for r in read_leases(store) if not r.name.startswith("engine:")]
    finally:
        store.dispose()
    holders = {int(r.holder.split(":")[-2]) for r in rows if not r.expired}
    return bool(rows) and all(not r.expired for r in rows) and holders == set(pids)


def test_two_engines_ride_out_a_postgres_restart(tmp_path: Path) -> None:
    with throwaway_postgres() as server:
        pacs = FakeReceiver()
        folder = config_folder(
            tmp_path,
            ROUTES,
            endpoints=destination_yaml(pacs.port, partition_by="PID-3.1", partitions=2),
        )
        try:
            with Engines(folder, server.url, tmp_path, "--lease-ttl", str(TTL)) as engines:
                ports = engines.start(2)
                pids = [p.pid for p in engines.processes]
                assert wait_until(lambda: _leases_shared(server.url, pids), timeout=30)
                feeds = [
                    Feed(port, pid=f"PID|1||P{n}^^^GENHOSP^MR||DOE^F{n}", prefix=f"E{n}-")
                    for n, port in enumerate(ports)
                ]
                for feed in feeds:
                    feed.__enter__()
                try:
                    assert wait_until(lambda: all(len(f.accepted) >= 20 for f in feeds), 30)
                    server.halt()
                    assert wait_until(
                        lambda: all(f.codes()[-3:] == ["AE"] * 3 for f in feeds), timeout=30
                    ), [f.codes()[-3:] for f in feeds]
                    accepted = [len(f.accepted) for f in feeds]
                    time.sleep(DOWN)
                    assert [len(f.accepted) for f in feeds] == accepted, "no AA without a store"
                    assert all(p.poll() is None for p in engines.processes), "still running"
                    restarted = time.monotonic()
                    server.start()
                    assert wait_until(
                        lambda: all(
                            len(f.accepted) >= n + 20 for f, n in zip(feeds, accepted, strict=True)
                        ),
                        timeout=60,
                    ), "AA again without a restart"
                    recovered = time.monotonic() - restarted
                    assert wait_until(lambda: _leases_shared(server.url, pids), timeout=30)
                finally:
                    for feed in feeds:
                        feed.__exit__()
                check_delivered(server.url, pacs, feeds)
                assert all(p.poll() is None for p in engines.processes)
                for n in range(2):  # the outage in one line a part, no statement, no traceback
                    assert "Traceback" not in engines.log(n)
        finally:
            pacs.stop()
    print(f"\nAA again {recovered:.1f}s after PostgreSQL was started again (down {DOWN:g}s)")


def check_delivered(
    url: str, pacs: FakeReceiver, feeds: list[Feed], *, stored_once: bool = True
) -> None:
    """Each feed's AA'd messages stored once as accepted (at least once without
    ``stored_once``) and delivered in order; at least once: a copy sent again after the outage
    repeats, the first arrivals keep the order."""
    for feed in feeds:
        assert set(feed.codes()) <= {"AA", "AE"}
    every = {cid for feed in feeds for cid in feed.accepted}
    assert wait_until(lambda: every <= set(pacs.control_ids()), timeout=60), sorted(
        every - set(pacs.control_ids())
    )[:10]
    store = open_store(url)
    try:
        assert wait_until(lambda: summarize(store, ["pacs"])[0].queued == 0, timeout=30)
        stored = Counter(r.control_id for r in stored_messages(store) if r.status != "duplicate")
    finally:
        store.dispose()
    received = pacs.control_ids()
    for feed in feeds:
        copies = [stored[cid] for cid in feed.accepted]
        assert all(n == 1 for n in copies) if stored_once else all(copies), "each stored (once)"
        first: list[str] = []
        for cid in received:
            if cid.startswith(feed.prefix) and cid not in first:
                first.append(cid)
        assert [cid for cid in first if cid in feed.accepted] == feed.accepted
