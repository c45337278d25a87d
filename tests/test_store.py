"""The store itself: migrations match the models, URLs resolve, SQLite is durable."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from engine.config.model import ListenerSettings
from engine.intake import Intake
from engine.mpi import tables as _mpi_tables  # noqa: F401  (the metadata compared is complete)
from engine.reconcile import tables as _reconcile_tables  # noqa: F401
from engine.review import tables as _review_tables  # noqa: F401
from engine.store.database import StoreError, open_store, resolve_url
from engine.store.messages import MessageFilter, find_messages
from engine.store.schema import Base
from engine.store.writer import StoreWriter
from engine.studies import tables as _study_tables  # noqa: F401
from tests.support import adt


def test_migrations_create_exactly_the_schema_the_models_describe(db_url: str) -> None:
    engine = open_store(db_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_opening_twice_is_harmless(db_url: str) -> None:
    open_store(db_url).dispose()
    open_store(db_url).dispose()


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
        intake.on_frame(adt("T1"), "test", done.set_result)
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


@pytest.mark.parametrize("threaded", [False, True])
def test_messages_committed_together_find_their_copies(  # type: ignore[no-untyped-def]
    store, threaded: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """One commit of several messages (on PostgreSQL: one query for every copy, one pipelined
    insert): an earlier copy in the store, a copy in the same commit, and an old copy outside
    the duplicate window are told apart exactly as one message at a time would be."""
    from sqlalchemy import update

    from engine.store.schema import Message

    async def receive(intake: Intake, control_ids: list[str]) -> list[bytes]:
        loop = asyncio.get_running_loop()
        answers = [loop.create_future() for _ in control_ids]
        for control_id, answer in zip(control_ids, answers, strict=True):
            intake.on_frame(adt(control_id), "test", answer.set_result)  # one commit
        return [(await answer)[0] for answer in answers]

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
