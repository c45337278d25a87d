"""Leases on a real PostgreSQL (engine/leases/): acquire, renew, expiry, takeover, fencing, and
the keeper sharing work between engines; SQLite has none (one engine per file)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from engine.leases import keeper as keeper_module
from engine.leases.keeper import Lease, LeaseKeeper
from engine.leases.records import (
    Fence,
    LeaseLost,
    acquire,
    end_stalled_transactions,
    lease_engine,
    read_leases,
    release,
    renew,
    survey,
)
from engine.store.database import open_store
from engine.store.operations import DeliveryUpdate, RoutedMessage, RoutingRecord
from engine.store.schema import DeliveryState
from engine.store.writer import StoreWriter
from engine.testing import free_port
from tests.support import cli_env, crosswalk, serving

ON_POSTGRESQL = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
"""Leases need PostgreSQL: these tests run on the test server (skipped when it is not set)."""


@pytest.fixture
def pg(store: Engine) -> Engine:
    """A migrated store in a new schema of the test PostgreSQL."""
    return store


@ON_POSTGRESQL
def test_a_free_lease_is_taken_once_and_its_holder_takes_it_again_at_a_new_epoch(
    pg: Engine,
) -> None:
    assert acquire(pg, "queue:pacs#0", "a", 30) == 1
    assert acquire(pg, "queue:pacs#0", "b", 30) is None
    assert acquire(pg, "queue:pacs#0", "a", 30) == 2
    (row,) = read_leases(pg)
    assert (row.name, row.holder, row.epoch, row.expired) == ("queue:pacs#0", "a", 2, False)


@ON_POSTGRESQL
def test_renewal_keeps_a_lease_and_an_expired_one_is_taken_over_at_a_higher_epoch(
    pg: Engine,
) -> None:
    epoch = acquire(pg, "mpi", "a", 0.5)
    assert epoch == 1
    assert renew(pg, "a", {"mpi": 1}, 0.5) == ({"mpi"}, set())
    assert acquire(pg, "mpi", "b", 30) is None  # renewed: still a's
    time.sleep(0.7)
    assert acquire(pg, "mpi", "b", 30) == 2
    assert renew(pg, "a", {"mpi": 1}, 30) == (set(), set())  # a finds it gone
    assert renew(pg, "b", {"mpi": 2}, 30) == ({"mpi"}, set())


@ON_POSTGRESQL
def test_a_released_lease_is_free_at_once(pg: Engine) -> None:
    acquire(pg, "routing", "a", 30)
    release(pg, "b", {"routing": 1})  # not b's: nothing happens
    assert acquire(pg, "routing", "b", 30) is None
    release(pg, "a", {"routing": 1})
    assert acquire(pg, "routing", "b", 30) == 2


@ON_POSTGRESQL
def test_survey_names_leases_held_by_others_and_counts_live_engines(pg: Engine) -> None:
    for holder in ("a", "b"):
        acquire(pg, f"engine:{holder}", holder, 30)
    acquire(pg, "engine:dead", "dead", 0.01)
    acquire(pg, "mpi", "a", 30)
    acquire(pg, "routing", "b", 30)
    time.sleep(0.05)
    seen = survey(pg, ["mpi", "routing", "queue:pacs#0"], "a")
    assert seen.taken == {"routing"}
    assert seen.engines == 2


def _delivery(pg: Engine) -> tuple[int, int]:
    """A stored message with one queued delivery: their ids."""
    with pg.begin() as connection:
        message_id = connection.execute(
            text(
                "INSERT INTO messages (received_at, listener, peer, raw, size, status,"
                " sending_application, sending_facility, receiving_application,"
                " receiving_facility, message_datetime, message_type, message_code,"
                " trigger_event, control_id, dedup_key, processing_id, version_id,"
                " status_reason, ack_code, ack)"
                " VALUES (now(), 'l', 'p', 'x', 1, 'routed', '', '', '', '', '', '', '', '',"
                " 'c1', 'k', '', '', '', '', '') RETURNING id"
            )
        ).scalar_one()
        delivery_id = connection.execute(
            text(
                "INSERT INTO deliveries (message_id, route, destination, partition, payload,"
                " control_id, state, attempts, last_error, created_at)"
                " VALUES (:m, 'r', 'pacs', 0, 'x', 'c1', 'queued', 0, '', now()) RETURNING id"
            ),
            {"m": message_id},
        ).scalar_one()
    return message_id, delivery_id


def _state(pg: Engine, delivery_id: int) -> str:
    with pg.connect() as connection:
        return connection.execute(
            text("SELECT state FROM deliveries WHERE id = :id"), {"id": delivery_id}
        ).scalar_one()


@ON_POSTGRESQL
def test_a_write_fenced_by_a_lease_taken_over_is_refused_and_the_holders_write_commits(
    pg: Engine,
) -> None:
    message_id, delivery_id = _delivery(pg)
    acquire(pg, "queue:pacs#0", "a", 0.2)
    stale = Fence("queue:pacs#0", "a", 1)
    time.sleep(0.3)
    assert acquire(pg, "queue:pacs#0", "b", 30) == 2
    current = Fence("queue:pacs#0", "b", 2)

    async def write() -> tuple[object, object]:
        writer = StoreWriter(pg)
        writer.start()
        try:
            refused = await asyncio.gather(
                writer.run(
                    DeliveryUpdate(delivery_id, DeliveryState.DELIVERED, 1, "", b"", fence=stale)
                ),
                return_exceptions=True,
            )
            routing = await asyncio.gather(
                writer.run(
                    RoutingRecord(
                        [RoutedMessage(message_id, "filtered", "")], lambda r: None, fence=stale
                    )
                ),
                return_exceptions=True,
            )
            await writer.run(
                DeliveryUpdate(delivery_id, DeliveryState.ERRORED, 1, "x", b"", fence=current)
            )
            return refused[0], routing[0]
        finally:
            await writer.close()

    refused, routing = asyncio.run(write())
    assert isinstance(refused, LeaseLost) and isinstance(routing, LeaseLost)
    assert _state(pg, delivery_id) == DeliveryState.ERRORED
    with pg.connect() as connection:
        status = connection.execute(
            text("SELECT status FROM messages WHERE id = :id"), {"id": message_id}
        ).scalar_one()
    assert status == "routed"  # the stale routing was not written


@ON_POSTGRESQL
def test_a_takeover_waits_for_a_fenced_write_in_progress(pg: Engine) -> None:
    """The fence locks the lease row until its transaction ends: what the old holder commits
    happens before the takeover, never after it."""
    acquire(pg, "mpi", "a", 0.2)
    connection = pg.raw_connection()
    cursor = connection.cursor()
    Fence("mpi", "a", 1).check(cursor)
    time.sleep(0.3)  # expired while the write is in progress
    taken: list[int | None] = []
    thief = threading.Thread(target=lambda: taken.append(acquire(pg, "mpi", "b", 30)))
    thief.start()
    thief.join(0.5)
    assert thief.is_alive() and not taken  # waiting for the write's transaction
    connection.commit()
    thief.join(5)
    connection.close()
    assert taken == [2]
    with pytest.raises(LeaseLost):
        check = pg.raw_connection()
        try:
            Fence("mpi", "a", 1).check(check.cursor())
        finally:
            check.close()


@ON_POSTGRESQL
def test_a_fenced_write_left_idle_by_a_paused_engine_does_not_hold_the_takeover(
    pg: Engine,
) -> None:
    """The server ends an engine's transaction idle for half the lease time: a holder paused in
    the middle of a fenced write releases the lease row before the lease can expire."""
    end_stalled_transactions(pg, 0.4, "host:1:aaaaaa")
    acquire(pg, "mpi", "a", 0.4)
    stalled = pg.raw_connection()
    try:
        Fence("mpi", "a", 1).check(stalled.cursor())  # then nothing: the engine is paused
        time.sleep(0.6)
        began = time.monotonic()
        assert acquire(pg, "mpi", "b", 30) == 2
        assert time.monotonic() - began < 0.5
    finally:
        with contextlib.suppress(Exception):
            stalled.close()


@ON_POSTGRESQL
def test_a_fenced_write_paused_mid_statement_is_ended_by_the_engine_taking_over(
    pg: Engine,
) -> None:
    """A holder paused in the middle of a statement (here a COPY waiting for its rows) is not
    idle, so the server's idle timeout does not end it: the engine taking the expired lease
    over ends that holder's transactions, and takes the lease at its next try."""
    stalled_holder = "host:1:aaaaaa"
    end_stalled_transactions(pg, 0.4, stalled_holder)
    assert acquire(pg, "mpi", stalled_holder, 0.4) == 1
    leases = lease_engine(pg, 0.3)
    stalled = pg.raw_connection()
    try:
        cursor = stalled.cursor()
        cursor.execute("CREATE TEMPORARY TABLE stall (x integer)")
        Fence("mpi", stalled_holder, 1).check(cursor)
        copy = cursor.copy("COPY stall (x) FROM STDIN")  # type: ignore[attr-defined]
        copy.__enter__()  # then nothing: the engine is paused in the middle of it
        time.sleep(0.8)  # the lease expired, and the idle timeout did not end it
        assert acquire(leases, "mpi", "host:2:bbbbbb", 30) is None
        assert acquire(leases, "mpi", "host:2:bbbbbb", 30) == 2
    finally:
        stalled.invalidate()  # closed as it is: a rollback would wait on the COPY
        leases.dispose()


class Work:
    """A piece of work that records when it ran."""

    def __init__(self, name: str, log: list[tuple[str, str, float]]) -> None:
        self.name = name
        self.log = log
        self.lease: Lease | None = None
        self.stopped_valid = []
        """Whether its lease was still valid, each time the work was told to stop."""

    async def start(self, lease: Lease) -> None:
        self.lease = lease
        self.log.append(("start", self.name, time.monotonic()))

    async def stop(self) -> None:
        self.log.append(("stop", self.name, time.monotonic()))
        self.stopped_valid.append(self.lease is not None and self.lease.valid())

    stopped_valid: list[bool]


NAMES = ["mpi", "queue:pacs#0", "queue:pacs#1", "routing"]


async def _keeper(
    pg: Engine, log: list[tuple[str, str, float]], ttl: float, works: list[Work] | None = None
) -> LeaseKeeper:
    keeper = LeaseKeeper(pg, ttl=ttl)
    await keeper.start()
    for name in NAMES:
        work = Work(name, log)
        keeper.want(name, work.start, work.stop)
        if works is not None:
            works.append(work)
    return keeper


async def _until(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@ON_POSTGRESQL
def test_two_engines_share_the_work_and_one_takes_all_when_the_other_stops(pg: Engine) -> None:
    async def scenario() -> float:
        log: list[tuple[str, str, float]] = []
        first = await _keeper(pg, log, ttl=1.0)
        second: LeaseKeeper | None = None
        try:
            await _until(lambda: len(first.held) == 4, 5)
            second = await _keeper(pg, log, ttl=1.0)
            await _until(lambda: len(first.held) == 2 and len(second.held) == 2, 10)
            assert set(first.held).isdisjoint(second.held)
            # The second dies without a word: its leases expire, the first takes them.
            assert second._task is not None and second._watch is not None
            second._task.cancel()
            second._watch.cancel()
            died = time.monotonic()
            await _until(lambda: len(first.held) == 4, 10)
            return time.monotonic() - died
        finally:
            await first.stop()

    takeover = asyncio.run(scenario())
    assert takeover < 1.0 + 1.0 / 4 + 1.0  # the lease time, a renewal period, and slack
    assert all(row.expired for row in read_leases(pg) if not row.name.startswith("engine:"))


@ON_POSTGRESQL
def test_work_handed_back_stops_with_its_lease_still_valid_and_work_taken_over_without(
    pg: Engine,
) -> None:
    """Handing a lease back (another engine joined), the work is stopped while the lease is
    still valid, so that it may finish what is in flight (a delivery worker's exchange with
    the PACS, which the next holder would otherwise send again); the lease is invalid once the
    work has stopped. A lease lost to a takeover is invalid before its work is stopped."""

    async def scenario() -> list[Work]:
        log: list[tuple[str, str, float]] = []
        works: list[Work] = []
        first = await _keeper(pg, log, ttl=1.0, works=works)
        second: LeaseKeeper | None = None
        try:
            await _until(lambda: len(first.held) == 4, 5)
            second = await _keeper(pg, log, ttl=1.0)
            await _until(lambda: len(first.held) == 2 and len(second.held) == 2, 10)
            # The first stops renewing (a paused engine) and the second takes the rest over;
            # the first's next renewal finds them taken.
            assert first._task is not None and first._watch is not None
            first._task.cancel()
            first._watch.cancel()
            await _until(lambda: len(second.held) == 4, 10)
            await first._tick()
            return works
        finally:
            await first.stop()
            if second is not None:
                await second.stop()

    works = asyncio.run(scenario())
    stops = sorted(w.stopped_valid[0] for w in works)
    assert stops == [False, False, True, True], [(w.name, w.stopped_valid) for w in works]
    assert all(w.lease is not None and not w.lease.valid() for w in works)


@ON_POSTGRESQL
def test_a_holder_that_cannot_renew_stops_its_work_before_the_lease_can_be_taken(
    pg: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a paused process, or one cut off from the store: its work stops, on its own clock,
    before the database's expiry."""

    async def scenario() -> tuple[list[tuple[str, str, float]], float]:
        log: list[tuple[str, str, float]] = []
        keeper = await _keeper(pg, log, ttl=2.0)
        try:
            await _until(lambda: len(keeper.held) == 4, 5)
            cut = threading.Event()
            real = keeper_module.renew

            def unreachable(*args, **kwargs):  # type: ignore[no-untyped-def]
                if cut.is_set():
                    time.sleep(5)
                    raise OSError("the store is unreachable")
                return real(*args, **kwargs)

            monkeypatch.setattr(keeper_module, "renew", unreachable)
            cut.set()
            await _until(lambda: not keeper.held, 5)
            with pg.connect() as connection:
                db_now = connection.execute(text("SELECT now()")).scalar_one()
            return log, min(r.expires_at for r in read_leases(pg)) - db_now
        finally:
            keeper._stopped = True
            for task in (keeper._task, keeper._watch):
                assert task is not None
                task.cancel()

    log, left = asyncio.run(scenario())
    assert sorted(name for event, name, _ in log if event == "stop") == NAMES
    assert left.total_seconds() > 0  # stopped while no other engine could take them yet


def test_sqlite_has_no_leases(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        with pytest.raises(ValueError, match="SQLite store serves one engine"):
            LeaseKeeper(store)
    finally:
        store.dispose()


def test_a_second_engine_on_one_sqlite_file_is_refused_with_the_first_ones_pid(
    tmp_path: Path,
) -> None:
    db = tmp_path / "c.db"
    first_port, second_port = free_port(), free_port()
    with serving(
        ["--db", str(db), "--port", str(first_port)], first_port, tmp_path / "1.log"
    ) as first:
        second = subprocess.run(
            crosswalk("serve", "--db", str(db), "--port", str(second_port)),
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=60,
        )
        assert first.poll() is None  # the first goes on
    assert second.returncode != 0
    assert f"is in use by another engine (pid {first.pid} on" in second.stderr
    assert "run several engines on PostgreSQL" in second.stderr
    assert first.returncode == 0
    # Once the first has stopped, the file is free again.
    with serving(["--db", str(db), "--port", str(second_port)], second_port, tmp_path / "2.log"):
        pass
