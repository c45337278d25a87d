"""The SQLite writer runs other work's statements as it comes, so that an ACK's commit is its own.

Routing records, MPI batches and delivery results are not urgent: they are written into the
open transaction while the loop has time, and committed with the next received message (or
after the linger). A received message then waits for its own statement and the COMMIT only.
"""

from __future__ import annotations

import asyncio
import logging
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


async def one_turn() -> None:
    """Let the loop run what was scheduled with call_soon."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_other_work_is_written_at_once_and_committed_with_the_next_message(
    sqlite_store: Engine,
) -> None:
    async def scenario() -> tuple[Probe, list[str], list[bytes], StoreWriter]:
        writer = StoreWriter(sqlite_store)
        writer.start()
        work = Probe("routing record")
        writer.submit(work)
        await one_turn()
        assert work.written == 1, "its statements waited for a received message"
        assert work.results == [] and labels(sqlite_store) == [], "committed before its time"
        seen_before_ack = labels(sqlite_store)
        acks = await frame(writer, "E1")
        await writer.close()
        return work, seen_before_ack, acks, writer

    work, before, acks, writer = asyncio.run(scenario())
    assert b"MSA|AA|E1" in acks[0]
    assert before == []
    assert work.results == ["routing record"] and work.written == 1
    assert labels(sqlite_store) == ["routing record"]
    assert writer.batches == 1, "the message and the other work did not share one commit"


def test_other_work_alone_is_committed_after_the_linger(sqlite_store: Engine) -> None:
    async def scenario() -> Probe:
        writer = StoreWriter(sqlite_store)
        writer.start()
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
    """The failed statement rolls back the open transaction: what was written before it is
    written again, one by one, and the received message behind it is still accepted."""

    async def scenario() -> tuple[Probe, Probe, list[bytes]]:
        writer = StoreWriter(sqlite_store)
        writer.start()
        good, bad = Probe("good"), Probe("bad", fail=True)
        writer.submit(good)
        await one_turn()
        writer.submit(bad)
        await one_turn()
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


def test_closing_commits_what_was_written(sqlite_store: Engine) -> None:
    async def scenario() -> Probe:
        writer = StoreWriter(sqlite_store)
        writer.start()
        work = Probe("MPI batch")
        writer.submit(work)
        await one_turn()
        await writer.close()
        return work

    work = asyncio.run(scenario())
    assert work.results == ["MPI batch"]
    assert labels(sqlite_store) == ["MPI batch"]


def test_a_long_run_of_other_work_is_committed_in_batches(sqlite_store: Engine) -> None:
    async def scenario() -> tuple[list[Probe], StoreWriter]:
        writer = StoreWriter(sqlite_store, max_batch=4)
        writer.start()
        work = [Probe(f"w{n:02d}") for n in range(10)]
        for item in work:
            writer.submit(item)
        await one_turn()
        await wait_for(lambda: all(item.results for item in work))
        await writer.close()
        return work, writer

    work, writer = asyncio.run(scenario())
    assert [item.results for item in work] == [[item.label] for item in work]
    assert labels(sqlite_store) == [item.label for item in work]
    assert writer.batches == 3  # 4 + 4 + 2


def test_a_received_message_overtakes_other_work_not_yet_written(sqlite_store: Engine) -> None:
    """Other work that came in the same pass of the loop as a message is written after the
    message's commit (as a server database's writer does): the ACK does not wait for it."""

    async def scenario() -> tuple[int, list[Any], Probe, StoreWriter]:
        writer = StoreWriter(sqlite_store)
        writer.start()
        work = Probe("MPI batch")
        writer.submit(work)
        seen: list[tuple[int, list[Any]]] = []
        answer: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()

        def reply(acks: list[bytes], rejected: bool = False) -> None:
            seen.append((work.written, list(work.results)))  # as the ACK goes out
            answer.set_result(acks)

        Intake(writer, ListenerSettings(name="t")).on_frame(adt("E3"), "test", reply)
        assert b"MSA|AA|E3" in (await answer)[0]
        ((written_at_ack, results_at_ack),) = seen
        await wait_for(lambda: bool(work.results))
        await writer.close()
        return written_at_ack, results_at_ack, work, writer

    written, results, work, writer = asyncio.run(scenario())
    assert (written, results) == (0, []), "the ACK waited for other work's statements"
    assert work.results == ["MPI batch"] and work.written == 1
    assert labels(sqlite_store) == ["MPI batch"]
    assert writer.batches == 2
