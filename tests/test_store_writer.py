"""The SQLite writer: other work waits to share a received message's commit, and SQLite's write
lock is free while the engine waits.

Routing records, MPI batches and delivery results are not urgent: they wait up to the linger to
be committed with the next received message. Their statements are not run ahead of that commit
in an open transaction: that would hold the write lock across the loop's idle time, and every
other writer (a CLI command, the console, pruning) would wait for it, seconds under load.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from engine.pipeline.intake import Intake
from engine.pipeline.settings import ListenerSettings
from engine.store.database import open_store
from engine.store.writer import LINGER, StoreWriter
from tests.support import adt, answers_to


@pytest.fixture
def sqlite_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    engine = open_store(f"sqlite:///{tmp_path}/writer.db")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE probe (label TEXT NOT NULL)"))
    yield engine
    engine.dispose()


@dataclass
class Probe:
    """Other work (not urgent): inserts its label, or fails while writing when ``fail``."""

    label: str
    fail: bool = False
    urgent: bool = False
    written: int = 0
    results: list[Any] = field(default_factory=list)

    def write(self, cursor: Any, statements: Any) -> str:
        self.written += 1
        cursor.execute("INSERT INTO probe (label) VALUES (?)", (self.label,))
        if self.fail:
            raise ValueError(f"{self.label} cannot be written")
        return self.label

    def done(self, result: Any) -> None:
        self.results.append(result)


def labels(store: Engine) -> list[str]:
    """What another connection sees committed."""
    with store.connect() as connection:
        return [row[0] for row in connection.execute(text("SELECT label FROM probe ORDER BY 1"))]


def frame(writer: StoreWriter, control_id: str) -> asyncio.Future[list[bytes]]:
    answer: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
    Intake(writer, ListenerSettings(name="t")).on_frame(adt(control_id), "test", answers_to(answer))
    return answer


async def wait_for(predicate: Callable[[], bool]) -> None:
    """Until ``predicate`` holds, 2 s at most (the linger commits other work alone)."""
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(LINGER)


def started(store: Engine, **settings: Any) -> StoreWriter:
    writer = StoreWriter(store, **settings)
    writer.start()
    return writer


async def one_turn() -> None:
    """Let the loop run what was scheduled with call_soon."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_the_write_lock_is_free_while_other_work_waits_for_company(sqlite_store: Engine) -> None:
    """Another connection can write at once while the writer holds work for its next commit."""

    async def scenario() -> tuple[bool, Probe, list[bytes]]:
        writer = started(sqlite_store)
        work = Probe("routing record")
        writer.submit(work)
        await one_turn()
        other = sqlite3.connect(sqlite_store.url.database or "", timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" if the writer holds it
            other.execute("INSERT INTO probe (label) VALUES ('other writer')")
            other.execute("COMMIT")
            wrote = True
        except sqlite3.OperationalError:
            wrote = False
        finally:
            other.close()
        acks = await frame(writer, "E1")
        await writer.close()
        return wrote, work, acks

    wrote, work, acks = asyncio.run(scenario())
    assert wrote, "the writer held SQLite's write lock while the loop was idle"
    assert b"MSA|AA|E1" in acks[0]
    assert work.results == ["routing record"]
    assert labels(sqlite_store) == ["other writer", "routing record"]


def test_other_work_alone_is_committed_after_the_linger(sqlite_store: Engine) -> None:
    async def scenario() -> Probe:
        writer = started(sqlite_store)
        work = Probe("delivery result")
        writer.submit(work)
        await wait_for(lambda: bool(work.results))
        await writer.close()
        return work

    work = asyncio.run(scenario())
    assert work.results == ["delivery result"]
    assert labels(sqlite_store) == ["delivery result"]


def test_a_write_that_fails_fails_alone(
    sqlite_store: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A group commit whose write fails is rolled back and written again operation by
    operation: the others are committed, the received message among them accepted."""

    async def scenario() -> tuple[Probe, Probe, list[bytes]]:
        writer = started(sqlite_store)
        good, bad = Probe("good"), Probe("bad", fail=True)
        writer.submit(good)
        writer.submit(bad)
        acks = await frame(writer, "E2")
        await writer.close()
        return good, bad, acks

    with caplog.at_level(logging.WARNING, logger="engine.store.writer"):
        good, bad, acks = asyncio.run(scenario())
    assert b"MSA|AA|E2" in acks[0]
    assert good.results == ["good"]
    assert len(bad.results) == 1 and isinstance(bad.results[0], ValueError)
    assert labels(sqlite_store) == ["good"], "the failed write left a row behind"
    assert "committing them one by one" in caplog.text


def test_closing_commits_what_waits_for_company(sqlite_store: Engine) -> None:
    async def scenario() -> Probe:
        writer = started(sqlite_store)
        work = Probe("MPI batch")
        writer.submit(work)
        await writer.close()
        return work

    work = asyncio.run(scenario())
    assert work.results == ["MPI batch"]
    assert labels(sqlite_store) == ["MPI batch"]


def test_a_long_run_of_other_work_is_committed_in_batches(sqlite_store: Engine) -> None:
    async def scenario() -> tuple[list[Probe], StoreWriter]:
        writer = started(sqlite_store, max_batch=4)
        work = [Probe(f"w{n:02d}") for n in range(10)]
        for item in work:
            writer.submit(item)
        await wait_for(lambda: all(item.results for item in work))
        await writer.close()
        return work, writer

    work, writer = asyncio.run(scenario())
    assert [item.results for item in work] == [[item.label] for item in work]
    assert labels(sqlite_store) == [item.label for item in work]
    assert writer.batches == 3  # 4 + 4 + 2


def test_messages_arriving_together_share_one_commit_with_the_work(sqlite_store: Engine) -> None:
    """Several messages in one pass of the loop and the work that waited: one fsync for all."""

    async def scenario() -> tuple[list[list[bytes]], Probe, StoreWriter]:
        writer = started(sqlite_store)
        work = Probe("routing record")
        writer.submit(work)
        answers = [frame(writer, f"T{n}") for n in range(3)]
        acks = [await answer for answer in answers]
        await writer.close()
        return acks, work, writer

    acks, work, writer = asyncio.run(scenario())
    assert [b"MSA|AA|T%d" % n in ack[0] for n, ack in enumerate(acks)] == [True] * 3
    assert work.results == ["routing record"]
    assert writer.batches == 1
