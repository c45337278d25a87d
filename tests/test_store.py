"""The store itself: migrations match the models, URLs resolve, SQLite is durable."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, text

from engine.audit import tables as _audit_tables  # noqa: F401
from engine.hl7v2.check import examine
from engine.mpi import tables as _mpi_tables  # noqa: F401  (the metadata compared is complete)
from engine.pipeline.intake import Intake
from engine.pipeline.settings import ListenerSettings
from engine.reconcile import tables as _reconcile_tables  # noqa: F401
from engine.review import tables as _review_tables  # noqa: F401
from engine.store.database import StoreError, open_store, resolve_url
from engine.store.messages import MessageFilter, find_messages
from engine.store.received import message_row
from engine.store.schema import Base, Message
from engine.store.writer import StoreWriter
from engine.studies import tables as _study_tables  # noqa: F401
from engine.users import tables as _user_tables  # noqa: F401
from tests.support import adt, answers_to


def test_migrations_create_exactly_the_schema_the_models_describe(db_url: str) -> None:
    engine = open_store(db_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_opening_twice_is_harmless(db_url: str) -> None:
    open_store(db_url).dispose()
    open_store(db_url).dispose()


def test_the_head_the_store_checks_is_the_scripts_head(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from engine.store.database import alembic_config
    from engine.store.migrations import HEAD

    scripts = ScriptDirectory.from_config(alembic_config(f"sqlite:///{tmp_path / 'h.db'}"))
    assert scripts.get_current_head() == HEAD


def test_a_store_at_the_head_opens_without_alembic_and_with_every_table(db_url: str) -> None:
    """The usual open (a command, an engine start) skips loading alembic and its scripts, and
    still registers every part's tables (key rotation walks them)."""
    open_store(db_url).dispose()  # migrated here
    probe = (
        "import sys\n"
        "from engine.store.database import open_store\n"
        "from engine.store.schema import Base\n"
        f"open_store({db_url!r}).dispose()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
        "print(sorted(Base.metadata.tables))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    loaded, tables = done.stdout.splitlines()
    assert loaded == "[]"
    assert all(f"'{name}'" in tables for name in Base.metadata.tables)


def test_sqlite_store_uses_wal_and_full_sync(tmp_path: Path) -> None:
    engine = open_store(str(tmp_path / "s.db"))
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_a_bare_path_is_an_sqlite_file_and_the_env_var_is_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CROSSWALK_DB", raising=False)
    assert resolve_url(None) == "sqlite:///crosswalk.db"
    assert resolve_url("data/x.db") == "sqlite:///data/x.db"
    monkeypatch.setenv("CROSSWALK_DB", "postgresql+psycopg://u@h/db")
    assert resolve_url(None) == "postgresql+psycopg://u@h/db"
    assert resolve_url("other.db") == "sqlite:///other.db"


def test_an_unreadable_url_is_a_clear_error_without_its_password() -> None:
    """libpq's list in the host part (``a:5432,b:5432``) is not SQLAlchemy's."""
    for url in ("postgresql://u:s3cr3t@db1:5432,db2:5432/cw", "postgresql://u:s3cr3t@db1:x/cw"):
        with pytest.raises(StoreError, match=r"several servers are listed as \?host=") as caught:
            resolve_url(url)
        assert "s3cr3t" not in str(caught.value)


def test_an_sqlite_file_in_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="folder for the SQLite store does not exist"):
        open_store(str(tmp_path / "nope" / "x.db"))


def test_an_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot prepare the store at postgresql"):
        open_store("postgresql+psycopg://nobody:secret@127.0.0.1:1/none?connect_timeout=2")


def test_the_password_is_not_shown_in_store_errors() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("postgresql+psycopg://nobody:s3cr3t@127.0.0.1:1/none?connect_timeout=2")
    assert "s3cr3t" not in str(caught.value)


def test_stored_times_are_utc_and_filter_by_time(store) -> None:  # type: ignore[no-untyped-def]
    """Rows written by the writer's fast path read back exactly as SQLAlchemy writes them."""

    async def receive() -> list[bytes]:
        writer = StoreWriter(store)
        writer.start()
        intake = Intake(writer, ListenerSettings(name="t"))
        done: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        intake.on_frame(adt("T1"), "test", answers_to(done))
        acks = await done
        await writer.close()
        return acks

    before = datetime.now(UTC)
    assert b"MSA|AA|T1" in asyncio.run(receive())[0]
    (row,) = find_messages(store, MessageFilter(since=before - timedelta(seconds=1)))
    assert row.received_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= row.received_at <= datetime.now(UTC)
    assert find_messages(store, MessageFilter(since=datetime.now(UTC) + timedelta(seconds=1))) == []
    assert (
        len(find_messages(store, MessageFilter(until=datetime.now(UTC) + timedelta(seconds=1))))
        == 1
    )


def test_since_finds_every_message_received_since_whatever_its_id(store) -> None:  # type: ignore[no-untyped-def]
    """The lower bound on ids that makes a search by time fast is exact: a message stored
    with a later id but an earlier time (a clock set back) is left out, and none is lost."""
    now = datetime.now(UTC)
    times = [now - timedelta(hours=h) for h in (5, 1, 3, 0, 4)]  # ids 1..5, not in time order
    with store.begin() as connection:
        for n, when in enumerate(times, start=1):
            raw = adt(f"S{n}")
            row = message_row(raw, len(raw), examine(raw), when, "ehr", "test")
            row |= {"status": "routed", "status_reason": "", "ack_code": "AA", "ack": b""}
            connection.execute(insert(Message).values(row))
    for hours, expected in (
        (2, ["S4", "S2"]),
        (3.5, ["S4", "S3", "S2"]),
        (6, ["S5", "S4", "S3", "S2", "S1"]),
    ):
        found = find_messages(store, MessageFilter(since=now - timedelta(hours=hours)))
        assert [m.control_id for m in found] == expected
    assert find_messages(store, MessageFilter(since=now + timedelta(hours=1))) == []


async def receive(intake: Intake, control_ids: list[str]) -> list[bytes]:
    """Hand ``control_ids`` to intake in one pass of the loop (one commit); their ACKs."""
    loop = asyncio.get_running_loop()
    answers = [loop.create_future() for _ in control_ids]
    for control_id, answer in zip(control_ids, answers, strict=True):
        intake.on_frame(adt(control_id), "test", answers_to(answer))
    return [(await answer)[0] for answer in answers]


@pytest.mark.parametrize("threaded", [False, True])
def test_messages_committed_together_find_their_copies(  # type: ignore[no-untyped-def]
    store, threaded: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """One commit of several messages (on PostgreSQL: one query for every copy, one pipelined
    insert): an earlier copy in the store, a copy in the same commit, and an old copy outside
    the duplicate window are told apart exactly as one message at a time would be."""
    from sqlalchemy import update

    from engine.store.schema import Message

    async def scenario() -> tuple[list[bytes], list[bytes], StoreWriter]:
        writer = StoreWriter(store, threaded=threaded)
        writer.start()
        intake = Intake(writer, ListenerSettings(name="t", duplicate_window=3600))
        first = await receive(intake, ["D0", "OLD"])
        with store.begin() as connection:  # OLD was accepted two hours ago: out of the window
            connection.execute(
                update(Message)
                .where(Message.control_id == "OLD")
                .values(received_at=datetime.now(UTC) - timedelta(hours=2))
            )
        second = await receive(intake, ["D1", "D0", "D2", "OLD", "D3"])
        third = await receive(intake, ["D4", "D4", "D5"])
        await writer.close()
        return first, second + third, writer

    first, acks, writer = asyncio.run(scenario())
    assert all(b"MSA|AA|" in ack for ack in first + acks)
    rows = {(r.control_id, r.id): r for r in find_messages(store, MessageFilter(), limit=100)}
    by_id = {r.id: r for r in rows.values()}
    statuses = [(r.control_id, r.status) for r in sorted(rows.values(), key=lambda r: r.id)]
    assert statuses == [
        ("D0", "received"),
        ("OLD", "received"),
        ("D1", "received"),
        ("D0", "duplicate"),
        ("D2", "received"),
        ("OLD", "received"),
        ("D3", "received"),
        ("D4", "received"),
        ("D4", "duplicate"),
        ("D5", "received"),
    ]
    for row in by_id.values():
        if row.status == "duplicate":
            original = by_id[row.duplicate_of]
            assert original.control_id == row.control_id and original.status == "received"
            assert b"duplicate of a message already accepted" in row.ack
    if not threaded:
        assert writer.batches == 3  # each group in one commit
    assert "committing them one by one" not in caplog.text


def test_a_server_database_answers_received_messages_before_other_work(store) -> None:  # type: ignore[no-untyped-def]
    """The threaded writer (a server database's) commits received messages apart from the other
    work that came at the same moment: the ACK waits for its own statements, not for a routing
    record, an MPI batch or a delivery result (here one that takes as long as the ACK does)."""
    import threading

    answered = threading.Event()

    @dataclass
    class Waiting:
        """Other work that finishes once ``until`` is set (True), or after 4 s (False)."""

        until: threading.Event
        done: Callable[[Any], None] = lambda result: None
        started: threading.Event = field(default_factory=threading.Event)
        urgent: bool = False

        def write(self, cursor: Any, statements: Any) -> bool:
            self.started.set()
            return self.until.wait(4)

    async def scenario() -> tuple[list[bytes], bool]:
        loop = asyncio.get_running_loop()
        writer = StoreWriter(store, threaded=True)
        writer.start()
        go = threading.Event()
        gate = Waiting(go)
        writer.submit(gate)  # holds the writer's thread while the next two are queued
        await asyncio.to_thread(gate.started.wait, 5)
        waiting: asyncio.Future[bool] = loop.create_future()
        writer.submit(Waiting(answered, waiting.set_result))
        answer: asyncio.Future[list[bytes]] = loop.create_future()

        def reply(acks: list[bytes], rejected: bool = False) -> None:
            answered.set()
            answer.set_result(acks)

        Intake(writer, ListenerSettings(name="t")).on_frame(adt("U1"), "test", reply)
        go.set()
        acks = await answer
        finished = await waiting
        await writer.close()
        return acks, finished

    acks, finished = asyncio.run(scenario())
    assert b"MSA|AA|U1" in acks[0]
    assert finished, "the message was answered while the other work was still being written"


@pytest.mark.parametrize("threaded", [False, True])
def test_control_ids_are_stored_and_compared_whole(store, threaded: bool) -> None:  # type: ignore[no-untyped-def]
    """MSH-10s that share their first 199 characters belong to different messages; a copy of
    one, in a later commit or the same one, is a duplicate; a 5,000-character MSH-10 is stored
    whole (PostgreSQL's B-tree indexes would refuse it)."""
    long_a, long_b, long_c = ("L" * 199 + end for end in "ABC")
    huge = "Z" * 5000

    async def scenario() -> list[bytes]:
        writer = StoreWriter(store, threaded=threaded)
        writer.start()
        intake = Intake(writer, ListenerSettings(name="t", duplicate_window=3600))
        acks = await receive(intake, [long_a, huge])
        acks += await receive(intake, [long_b, long_a, long_c, huge])
        await writer.close()
        return acks

    acks = asyncio.run(scenario())
    assert all(b"MSA|AA|" in ack for ack in acks)
    rows = sorted(find_messages(store, MessageFilter(), limit=100), key=lambda r: r.id)
    assert [(r.control_id, r.status) for r in rows] == [
        (long_a, "received"),
        (huge, "received"),
        (long_b, "received"),
        (long_a, "duplicate"),
        (long_c, "received"),
        (huge, "duplicate"),
    ]
    assert [r.id for r in find_messages(store, MessageFilter(control_id=huge))] == [
        rows[5].id,
        rows[1].id,
    ]


def test_migration_0006_keys_stored_messages_as_intake_does(db_url: str) -> None:
    """A store written before 0006 gets the same duplicate key for each message as intake
    computes (SQL on PostgreSQL, Python on SQLite), so copies across the upgrade are found."""
    from alembic import command
    from sqlalchemy import select

    from engine.store.database import alembic_config, open_engine
    from engine.store.operations import duplicate_key
    from engine.store.schema import Message

    engine = open_engine(db_url)
    config = alembic_config(db_url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        for n, (app, facility, control) in enumerate(
            [
                ("EPIC", "GENHOSP", "1"),
                ("", "", ""),
                ("RIS", "Zürich ü", "x|y^z"),
                ("A", "B", "C" * 150),
            ]
        ):
            connection.execute(
                text(
                    "INSERT INTO messages (received_at, listener, peer, raw, size, charset,"
                    " sending_application, sending_facility, receiving_application,"
                    " receiving_facility, message_datetime, message_type, message_code,"
                    " trigger_event, control_id, processing_id, version_id, status,"
                    " status_reason, ack_code, ack) VALUES (:at, 't', 'p', :raw, 1, 'UTF-8',"
                    " :app, :facility, '', '', '', '', '', '', :control, '', '', 'received',"
                    " '', 'AA', :raw)"
                ),
                {
                    "at": datetime.now(UTC),
                    "raw": str(n).encode(),
                    "app": app,
                    "facility": facility,
                    "control": control,
                },
            )
    engine.dispose()
    engine = open_store(db_url)
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                Message.sending_application,
                Message.sending_facility,
                Message.control_id,
                Message.dedup_key,
            )
        ).all()
    engine.dispose()
    assert len(rows) == 4
    for app, facility, control, key in rows:
        assert key == duplicate_key(app, facility, control)


def test_a_read_of_received_messages_stops_at_its_byte_budget(store) -> None:  # type: ignore[no-untyped-def]
    from engine.pipeline.dispatcher import load_received

    async def scenario() -> None:
        writer = StoreWriter(store)
        writer.start()
        await receive(Intake(writer, ListenerSettings(name="t")), ["R1", "R2", "R3", "R4"])
        await writer.close()

    asyncio.run(scenario())
    size = len(adt("R1"))
    assert [m.raw for m in load_received(store, 0)] == [adt(f"R{n}") for n in range(1, 5)]
    assert len(load_received(store, 0, max_bytes=2 * size)) == 2
    assert len(load_received(store, 0, max_bytes=1)) == 1, "at least one"
    assert len(load_received(store, 0, limit=3)) == 3


def test_the_log_is_copied_into_the_sqlite_file_after_commits_not_inside_them(
    tmp_path: Path,
) -> None:
    """A background checkpoint copies committed pages into the database file soon after each
    commit, long before the writer's own checkpoint would (at 1,000 pages of log)."""
    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}")
    size_before = path.stat().st_size

    async def receive() -> list[bytes]:
        writer = StoreWriter(store)
        writer.start()
        intake = Intake(writer, ListenerSettings(name="t"))
        acks = []
        for n in range(20):  # one commit each: a few pages of log apiece, far below 1,000
            done: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
            intake.on_frame(adt(f"W{n}"), "test", answers_to(done))
            acks += await done
        for _ in range(200):
            if path.stat().st_size > size_before:
                break
            await asyncio.sleep(0.01)
        await writer.close()
        return acks

    try:
        acks = asyncio.run(receive())
        assert all(b"MSA|AA" in ack for ack in acks)
        assert path.stat().st_size > size_before, "the committed pages are still only in the log"
    finally:
        store.dispose()


def test_slow_checkpoints_are_spaced_out_to_leave_the_disk_to_commits() -> None:
    """A checkpoint fsyncs the database file: on a disk where that is slow they come less
    often, so that they take at most a quarter of the time."""
    from engine.store.checkpoints import INTERVAL, pause_after

    assert pause_after(0.0003) == INTERVAL  # a fast disk: every 10 ms after commits
    assert pause_after(0.02) == pytest.approx(0.06)  # 20 ms each: one every 80 ms
