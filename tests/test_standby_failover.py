"""A primary PostgreSQL and its streaming standby under a running engine (two throwaway servers
of the test's own, each on its own port), the primary crashing and the standby taking over.

The engine's URL lists both servers (libpq's ``host`` list with
``target_session_attrs=read-write``), so it writes to whichever is primary. The primary is
killed (``pg_ctl stop -m immediate``) mid-feed: every message is answered AE, never AA, while
only the read-only standby answers; the standby is promoted: AA again, without restarting the
engine.

With synchronous replication a commit, and so an AA, waits until the standby has it: every
message answered AA is in the promoted server's store once and reaches the PACS in feed order;
a standby cut off holds every commit back (AE after the engine's commit timeout) until it is
back. With asynchronous replication the primary answers AA for what the standby never got:
after a failover those messages are gone.

A known defect shows up while a synchronous standby is cut off (xfail once observed): a message
resent meanwhile is stored again, because its first copy, committed on the primary but waiting
for the standby, is not yet visible to the duplicate check. The store writer, having given up
on a commit of several operations, must not write them again one by one (unwatched, each would
wait for the standby and hold every later answer)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.store.database import open_store
from engine.store.queue import summarize
from engine.store.writer import COMMIT_TIMEOUT, CommitTimeout, StoreWriter
from engine.testing import FakeReceiver
from tests.cluster import Engines
from tests.postgres_cluster import (
    ThrowawayPostgres,
    cut_off,
    failover_url,
    primary_and_standby,
    reconnect,
)
from tests.support import ALL_TO_PACS, config_folder, destination_yaml, stored_messages
from tests.test_delivery import wait_until
from tests.test_several_engines_store_restart import check_delivered
from tests.test_store_outages import Feed

DOWN = 3.0
"""Seconds with no primary (the standby answers, read-only) before the standby is promoted."""
BACK_WITHIN = 20.0
"""Seconds the engine may take to answer AA again once there is a primary that can commit."""

pytestmark = pytest.mark.skipif(
    not os.environ.get("CROSSWALK_TEST_POSTGRES_URL"),
    reason="CROSSWALK_TEST_POSTGRES_URL is not set (no PostgreSQL tests here)",
)


@contextmanager
def feeding_one_engine(
    primary: ThrowawayPostgres, standby: ThrowawayPostgres, tmp_path: Path
) -> Iterator[tuple[Engines, Feed, FakeReceiver]]:
    """One engine whose URL lists both servers, a PACS, and a sender feeding the engine."""
    pacs = FakeReceiver()
    folder = config_folder(tmp_path, ALL_TO_PACS, endpoints=destination_yaml(pacs.port))
    url = failover_url(primary, standby)
    try:
        with Engines(folder, url, tmp_path, "--lease-ttl", "2") as engines:
            (port,) = engines.start(1)
            with Feed(port) as feed:
                yield engines, feed, pacs
    finally:
        pacs.stop()


def fail_over(feed: Feed, primary: ThrowawayPostgres, standby: ThrowawayPostgres) -> float:
    """Crash the primary: AE, never AA, at once while only the standby answers; promote the
    standby: AA again. Seconds from the promotion to the first AA."""
    primary.crash()
    assert wait_until(lambda: feed.codes()[-3:] == ["AE"] * 3, timeout=30), feed.codes()[-3:]
    accepted, answered = len(feed.accepted), len(feed.codes())
    time.sleep(DOWN)
    assert len(feed.accepted) == accepted, "no AA while no primary answers"
    assert len(feed.codes()) > answered + 10, "each answered AE at once, not held"
    promoted = time.monotonic()
    standby.promote()
    assert wait_until(lambda: len(feed.accepted) > accepted, BACK_WITHIN), "AA again, no restart"
    return time.monotonic() - promoted


def test_failover_to_a_synchronous_standby_loses_no_acknowledged_message(
    tmp_path: Path,
) -> None:
    with (
        primary_and_standby(synchronous=True) as (primary, standby),
        feeding_one_engine(primary, standby, tmp_path) as (engines, feed, pacs),
    ):
        assert wait_until(lambda: len(feed.accepted) >= 20, timeout=30)
        back = fail_over(feed, primary, standby)
        accepted = len(feed.accepted)
        assert wait_until(lambda: len(feed.accepted) >= accepted + 20, timeout=30)
        feed.__exit__()
        # The promoted server alone, not through the URL's list.
        check_delivered(standby.url, pacs, [feed])
        assert engines.processes[0].poll() is None, "the engine was not restarted"
        assert "Traceback" not in engines.log(0)
    print(f"\nAA again {back:.1f}s after the promotion; {feed.codes().count('AE')} AE in all")


def settle(feed: Feed, url: str) -> None:
    """Stop ``feed`` and wait until all it sent is delivered: from then on the engine's only
    writes are the next sender's messages, one commit each."""
    feed.__exit__()
    store = open_store(url)
    try:
        assert wait_until(lambda: summarize(store, ["pacs"])[0].queued == 0, timeout=30)
    finally:
        store.dispose()


def test_a_synchronous_standby_cut_off_holds_every_aa_back_until_it_is_back(
    tmp_path: Path,
) -> None:
    """The price of synchronous replication: with its standby gone the primary holds every
    commit; the engine gives up on each after its commit timeout and answers AE."""
    with (
        primary_and_standby(synchronous=True) as (primary, standby),
        feeding_one_engine(primary, standby, tmp_path) as (engines, first, pacs),
    ):
        assert wait_until(lambda: len(first.accepted) >= 20, timeout=30)
        settle(first, primary.url)
        cut = time.monotonic()
        conninfo = cut_off(primary, standby)
        with Feed(engines.ports[0], prefix="G") as feed:
            assert wait_until(lambda: "AE" in feed.codes(), COMMIT_TIMEOUT + 10), feed.codes()
            assert time.monotonic() - cut > COMMIT_TIMEOUT - 1, "held for the commit timeout"
            assert feed.accepted == [], "no AA while the standby is cut off"
            reconnected = time.monotonic()
            reconnect(standby, conninfo)
            assert wait_until(lambda: feed.accepted != [], BACK_WITHIN), "AA again"
            back = time.monotonic() - reconnected
            assert wait_until(lambda: len(feed.accepted) >= 20, timeout=30)
        # At least once: a resend meanwhile may be stored again (the next test).
        check_delivered(primary.url, pacs, [first, feed], stored_once=False)
        assert "Traceback" not in engines.log(0)
    print(f"\nAA again {back:.1f}s after the standby streamed again")


def test_a_message_resent_while_the_standby_is_cut_off_is_stored_once(tmp_path: Path) -> None:
    """The engine gave up on the message's commit (AE), but the primary keeps it, waiting for
    the standby; the sender's resend must become a duplicate of it once the standby is back."""
    with (
        primary_and_standby(synchronous=True) as (primary, standby),
        feeding_one_engine(primary, standby, tmp_path) as (engines, first, _pacs),
    ):
        assert wait_until(lambda: len(first.accepted) >= 10, timeout=30)
        settle(first, primary.url)
        conninfo = cut_off(primary, standby)
        with Feed(engines.ports[0], prefix="G") as feed:
            # Two copies waiting for the standby (each answered AE) make the defect; an engine
            # that never lets a second one get there is checked after five AEs instead.
            assert wait_until(
                lambda: (
                    _inserts_waiting_for_the_standby(primary) >= 2 or feed.codes().count("AE") >= 5
                ),
                6 * COMMIT_TIMEOUT + 10,
            ), feed.codes()
            assert feed.accepted == []
            reconnect(standby, conninfo)
            assert wait_until(lambda: "G0000" in feed.accepted, BACK_WITHIN)
        store = open_store(primary.url)
        try:
            copies = [r.status for r in stored_messages(store) if r.control_id == "G0000"]
        finally:
            store.dispose()
    if sum(status != "duplicate" for status in copies) > 1:
        pytest.xfail(
            "known defect: a resend does not see its first copy while that copy's commit waits"
            " on the primary for the standby (committed there, not yet visible), so it is"
            f" stored again, and the PACS gets it once per resend: {copies}"
        )
    assert sum(status != "duplicate" for status in copies) == 1, copies


def _inserts_waiting_for_the_standby(primary: ThrowawayPostgres) -> int:
    """Stored messages committed on the primary but not yet visible: waiting for the standby."""
    return len(
        primary.query(
            "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            " AND query LIKE '%INSERT INTO messages%'"
        )
    )


@dataclass
class _Probe:
    """A writer operation: a row into ``probe``, or with ``pause`` a read that takes so long."""

    label: str
    pause: float = 0.0
    urgent: bool = False
    results: list[object] = field(default_factory=list)

    def write(self, cursor: Any, statements: Any) -> str:
        if self.pause:  # no row written: nothing for the standby to confirm
            time.sleep(self.pause)
            cursor.execute("SELECT 1")
        else:
            cursor.execute("INSERT INTO probe (label) VALUES (%s)", (self.label,))
        return self.label

    def done(self, result: object) -> None:
        self.results.append(result)


def test_a_commit_held_by_a_cut_off_standby_never_holds_later_answers() -> None:
    """The writer gives up on a commit of two operations that waits for the standby; the next
    operation must still be answered within the commit timeout (AE for a sender)."""
    timeout = 1.0
    with primary_and_standby(synchronous=True) as (primary, standby):
        primary.query("CREATE TABLE probe (label text)")
        store = open_store(primary.url, upgrade=False)
        conninfo = cut_off(primary, standby)

        async def scenario() -> tuple[list[object], list[object]]:
            writer = StoreWriter(store, commit_timeout=timeout)
            writer.start()
            pair = [_Probe("a"), _Probe("b")]
            writer.submit(_Probe("busy", pause=0.3, urgent=True))
            for probe in pair:  # queued while the writer is busy: one commit for both
                writer.submit(probe)
            await _until(lambda: all(p.results for p in pair), 2 * timeout + 2)
            later = _Probe("later", urgent=True)
            writer.submit(later)
            await _until(lambda: bool(later.results), 2 * timeout + 2)
            answered = list(later.results)  # before the standby is back
            reconnect(standby, conninfo)  # lets a writer thread held by the standby go on
            await writer.close(timeout=30)
            return [*pair[0].results, *pair[1].results], answered

        try:
            given_up, answered = asyncio.run(scenario())
        finally:
            store.dispose()
    assert len(given_up) == 2 and all(isinstance(r, CommitTimeout) for r in given_up), given_up
    assert answered, "the next operation waited for the standby, unanswered"
    assert isinstance(answered[0], CommitTimeout), answered


async def _until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def test_failover_to_an_asynchronous_standby_loses_what_it_never_got(tmp_path: Path) -> None:
    """The hazard synchronous replication removes, made certain: the standby is cut off from
    the primary, which goes on answering AA alone; then the primary crashes."""
    with (
        primary_and_standby(synchronous=False) as (primary, standby),
        feeding_one_engine(primary, standby, tmp_path) as (_engines, feed, _pacs),
    ):
        assert wait_until(lambda: len(feed.accepted) >= 10, timeout=30)
        cut_off(primary, standby)
        alone = len(feed.accepted)
        assert wait_until(lambda: len(feed.accepted) >= alone + 10, timeout=30)
        fail_over(feed, primary, standby)
        feed.__exit__()
        store = open_store(standby.url)
        try:
            stored = {r.control_id for r in stored_messages(store)}
        finally:
            store.dispose()
    lost = [cid for cid in feed.accepted if cid not in stored]
    # The first AA after the cut may be for a commit streamed just before it; a few AA'd
    # before it can be lost too (not yet streamed when the standby was cut off).
    assert set(feed.accepted[alone + 1 : alone + 10]) <= set(lost), lost
    print(f"\n{len(lost)} of {len(feed.accepted)} AA'd messages lost: {lost[0]}..{lost[-1]}")
