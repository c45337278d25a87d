"""A store that fails under a running engine, and stores the engine must refuse to start on.

SQLite on a full disk (a small tmpfs of the test's own: needs root to mount, else skipped) and
PostgreSQL shut down and started again mid-feed (a throwaway server on its own port): while the
store cannot commit every message is answered AE, never AA; the sender keeps its connection; the
engine recovers by itself; everything that got AA is stored once and reaches the PACS in order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from engine.hl7v2.ack import read_ack
from engine.store.database import StoreError, open_store
from engine.store.queue import summarize
from engine.testing import FakeReceiver, Peer, free_port
from tests.fault_figures import print_fault_row
from tests.postgres_cluster import throwaway_postgres
from tests.support import (
    ALL_TO_PACS,
    adt,
    cli_env,
    config_folder,
    crosswalk,
    destination_yaml,
    run_crosswalk,
    running_pipeline,
    stored_messages,
)
from tests.test_delivery import wait_until


class Feed:
    """A sender on one connection that sends F0000, F0001, … and resends each message until it
    gets AA, as an interface engine does; it records every answer."""

    def __init__(
        self, port: int, pid: str = "PID|1||123456^^^GENHOSP^MR||DOE^JANE", prefix: str = "F"
    ) -> None:
        self.peer = Peer(port, timeout=30)
        self.pid = pid
        self.prefix = prefix
        self.answers: list[tuple[str, str]] = []
        self.accepted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Feed:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        self.peer.close()

    def codes(self) -> list[str]:
        return [code for _, code in self.answers]

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            control_id = f"{self.prefix}{number:04d}"
            reply = read_ack(self.peer.exchange(adt(control_id, pid=self.pid)))
            assert reply.control_id == control_id
            self.answers.append((control_id, reply.code))
            if reply.code == "AA":
                self.accepted.append(control_id)
                number += 1
            else:
                time.sleep(0.05)


def assert_nothing_accepted_is_lost(
    feed: Feed, db_url: str, pacs: FakeReceiver, scenario: str
) -> None:
    """Each AA'd message stored once as accepted, and delivered in the order it was accepted."""
    assert set(feed.codes()) <= {"AA", "AE"}
    store = open_store(db_url)
    # After a store outage routing retries every 5 s and a worker's pause before sending again
    # grows to 30 s (delivery.md): all must arrive within a minute.
    assert wait_until(lambda: set(feed.accepted) <= set(pacs.control_ids()), timeout=60)
    assert wait_until(lambda: summarize(store, ["pacs"])[0].queued == 0)
    accepted = [r.control_id for r in stored_messages(store) if r.status not in ("rejected",)]
    store.dispose()
    assert sorted(set(accepted)) == feed.accepted
    received = pacs.control_ids()
    # At least once: a worker whose results could not be stored sends again from the first
    # one not stored, so copies repeat; the last copy of each arrives in order (delivery.md).
    last_copies = sorted(
        set(received), key=lambda c: max(i for i, r in enumerate(received) if r == c)
    )
    assert last_copies == feed.accepted
    assert print_fault_row(scenario, feed.codes(), accepted, feed.accepted, received) == 0


def survive_outage(
    feed: Feed, fail: Callable[[], object], recover: Callable[[], object], down: float
) -> None:
    """Break the store mid-feed: AE from then on, no AA for ``down`` seconds; mend it: AA again
    on the same connection, without a restart."""
    assert wait_until(lambda: len(feed.accepted) >= 10)
    fail()
    assert wait_until(lambda: feed.codes()[-3:] == ["AE"] * 3, timeout=30)
    accepted = len(feed.accepted)
    time.sleep(down)
    assert len(feed.accepted) == accepted, "no AA while the store cannot commit"
    recover()
    assert wait_until(lambda: len(feed.accepted) >= accepted + 10, timeout=60)


def fill(path: Path) -> None:
    """Write ``path`` until its disk is full to the last byte."""
    with contextlib.suppress(OSError), path.open("wb") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
            os.fsync(out.fileno())


@contextlib.contextmanager
def small_disk(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted for the test (skipped where mounting is not allowed)."""
    folder = Path(tempfile.mkdtemp(prefix="crosswalk-full-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip("cannot mount a small tmpfs here (needs root): " + mounted.stderr.decode())
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()


def test_sqlite_on_a_full_disk_answers_ae_then_recovers_when_space_is_freed(
    tmp_path: Path,
) -> None:
    """The disk fills mid-feed: AE (never AA) on the same connection; space freed: AA again
    without a restart; every AA'd message stored and delivered in order."""
    with small_disk("64m") as disk:
        db_url = f"sqlite:///{disk / 'crosswalk.db'}"
        filler = disk / "filler"
        pacs = FakeReceiver()
        pid = "PID|1||123456^^^GENHOSP^MR||DOE^JANE||19800304|F|||" + "A" * 20_000
        with running_pipeline(db_url, tmp_path, pacs.port) as engine:
            with Feed(engine.port(), pid) as feed:

                def full() -> None:
                    fill(filler)
                    status = run_crosswalk("queue", "status", "--db", db_url)
                    assert (
                        f"the disk holding the store {disk / 'crosswalk.db'} has" in status.stdout
                    )
                    assert "every message is answered AE" in status.stdout

                survive_outage(feed, fail=full, recover=filler.unlink, down=1.0)
            status = run_crosswalk("queue", "status", "--db", db_url)
            assert "the disk holding the store" not in status.stdout, "space was freed"
            assert_nothing_accepted_is_lost(feed, db_url, pacs, "SQLite: disk full, then freed")
        pacs.stop()
    assert "AE" in feed.codes()


def test_postgres_shut_down_and_started_mid_feed_answers_ae_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A throwaway PostgreSQL is shut down mid-feed and started again 3 s later: AE while it is
    down, on the same connection; then AA again without a restart; nothing AA'd is lost and
    the PACS gets everything in order. The log says so in a few lines, not two per AE."""
    with throwaway_postgres() as server, caplog.at_level(logging.ERROR):
        pacs = FakeReceiver()
        with running_pipeline(server.url, tmp_path, pacs.port) as engine:
            with Feed(engine.port()) as feed:
                survive_outage(feed, fail=server.halt, recover=server.start, down=3.0)
            assert_nothing_accepted_is_lost(
                feed, server.url, pacs, "PostgreSQL: shut down 3 s mid-feed, started again"
            )
        pacs.stop()
    not_stored = [r for r in caplog.records if "message NOT stored" in r.getMessage()]
    failed = [r for r in caplog.records if "store write failed" in r.getMessage()]
    assert feed.codes().count("AE") >= 20
    assert 1 <= len(not_stored) <= 4, [r.getMessage() for r in not_stored]
    assert 1 <= len(failed) <= 8, [r.getMessage() for r in failed]


# -- stores the engine refuses to start on --------------------------------------------------------


def test_a_corrupted_sqlite_file_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """`crosswalk serve` on a file that is not an SQLite database exits at once, naming it."""
    bad = tmp_path / "crosswalk.db"
    bad.write_bytes(b"SQLite format 3\0" + os.urandom(8192))
    folder = config_folder(tmp_path, ALL_TO_PACS, endpoints=destination_yaml(free_port()))
    result = subprocess.run(
        crosswalk("serve", "--config", str(folder), "--db", str(bad)),
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert result.returncode != 0
    assert "is not a readable SQLite database" in result.stderr
    assert "restore it from a backup" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_store_at_a_newer_migration_is_refused_naming_both(db_url: str) -> None:
    """A store written by a newer Crosswalk: refused, naming its migration and ours."""
    store = open_store(db_url)
    with store.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    store.dispose()
    with pytest.raises(StoreError) as refused:
        open_store(db_url)
    message = str(refused.value)
    assert "newer migration than this Crosswalk knows" in message
    assert "'0099_from_the_future'" in message and "never downgrades" in message
