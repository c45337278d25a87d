"""Retention: the `retention:` section, `crosswalk prune` (dry run and real), pruning inside a
running engine, and SQLite giving the freed space back."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from engine.config.loader import load_config
from engine.hl7v2.ack import read_ack
from engine.mpi.tables import PatientEvent
from engine.retention import prune
from engine.retention.prune import Pruning, auto_vacuum_mode, plan
from engine.retention.settings import Periods, RetentionSettings
from engine.settings import ConfigError, Duration
from engine.store.database import open_store, raw_transaction
from engine.store.fastsql import Statements
from engine.store.schema import Delivery, DeliveryState, Message, MessageStatus
from engine.testing import FakeReceiver, Peer
from tests.support import (  # noqa: F401  (store_mode: every test clear and encrypted)
    ALL_TO_PACS,
    Pipeline,
    adt,
    config_folder,
    destination_yaml,
    run_crosswalk,
    store_mode,
)

NOW = datetime.now(UTC)


def put(
    store: Engine,
    status: str,
    days: float,
    deliveries: tuple[str, ...] = (),
    *,
    duplicate_of: int | None = None,
) -> int:
    """A message received ``days`` ago with deliveries in the given states; its id."""
    received = NOW - timedelta(days=days)
    with Session(store) as session, session.begin():
        message = Message(
            received_at=received,
            listener="ehr",
            peer="127.0.0.1",
            raw=adt(f"R{days}"),
            size=100,
            status=status,
            ack=b"MSA|AA|x\r",
            duplicate_of=duplicate_of,
        )
        session.add(message)
        session.flush()
        for state in deliveries:
            session.add(
                Delivery(
                    message_id=message.id,
                    route="all",
                    destination="pacs",
                    payload=adt("P"),
                    state=state,
                    created_at=received,
                    ack=b"MSA|AA|P\r" if state == DeliveryState.DELIVERED else None,
                )
            )
        return int(message.id)


def ids(store: Engine) -> set[int]:
    with store.connect() as connection:
        return set(connection.execute(select(Message.id)).scalars())


def content_of(store: Engine, message_id: int) -> tuple[bytes, list[bytes]]:
    with Session(store) as session:
        message = session.get(Message, message_id)
        assert message is not None
        payloads = session.scalars(
            select(Delivery.payload).where(Delivery.message_id == message_id)
        ).all()
        return message.raw, list(payloads)


D = DeliveryState
RETENTION = """
retention:
  content: {delivered: 2d, filtered: 2d}
  metadata: {delivered: 30d, filtered: 10d, rejected: 30d, duplicate: 10d}
"""


@pytest.fixture
def store(db_url: str) -> Engine:
    return open_store(db_url)


def test_pruning_removes_what_retention_says_and_never_an_undelivered_message(
    db_url: str, store: Engine, tmp_path: Path
) -> None:
    old_delivered = put(store, MessageStatus.ROUTED, 40, (D.DELIVERED, D.DELIVERED))
    old_queued = put(store, MessageStatus.ROUTED, 40, (D.DELIVERED, D.QUEUED))
    old_set_aside = put(store, MessageStatus.ROUTED, 40, (D.ERRORED,))
    duplicate = put(store, MessageStatus.DUPLICATE, 40, duplicate_of=old_delivered)
    old_rejected = put(store, MessageStatus.REJECTED, 40)
    old_errored = put(store, MessageStatus.ERRORED, 40)
    filtered = put(store, MessageStatus.FILTERED, 5)
    recent = put(store, MessageStatus.ROUTED, 5, (D.DELIVERED,))
    recent_queued = put(store, MessageStatus.ROUTED, 5, (D.QUEUED,))
    fresh = put(store, MessageStatus.ROUTED, 0.5, (D.DELIVERED,))
    with Session(store) as session, session.begin():  # the MPI's history names the message
        session.add(PatientEvent(kind="created", message_id=old_delivered, recorded_at=NOW))
    folder = config_folder(tmp_path, ALL_TO_PACS, extra={"retention.yaml": RETENTION})

    dry = run_crosswalk("prune", "--dry-run", "--config", str(folder), "--db", db_url)
    assert dry.returncode == 0, dry.stderr
    lines = {
        line.split()[0] + " " + line.split()[1]: line.split()
        for line in dry.stdout.splitlines()
        if line.startswith(("metadata", "content"))
    }
    assert lines["metadata delivered"][-2:] == ["1", "2"], dry.stdout  # prunable, held back
    assert lines["metadata duplicate"][-2:] == ["1", "0"]
    assert lines["content delivered"][-2:] == ["1", "1"]  # recent; recent_queued held
    assert lines["content filtered"][-2:] == ["1", "0"]
    assert ids(store) >= {old_delivered, duplicate, filtered}  # a dry run changes nothing

    done = run_crosswalk("prune", "--config", str(folder), "--db", db_url)
    assert done.returncode == 0, done.stderr
    left = ids(store)
    assert old_delivered not in left and duplicate not in left and old_rejected not in left
    assert {old_queued, old_set_aside, old_errored, recent, recent_queued, fresh} <= left
    assert filtered in left
    assert content_of(store, recent) == (b"", [b""])
    assert content_of(store, filtered)[0] == b""
    assert content_of(store, recent_queued)[0].startswith(b"MSH")  # its delivery is queued
    assert content_of(store, fresh)[0].startswith(b"MSH")
    with Session(store) as session:  # the MPI keeps its history, without the message
        assert session.scalars(select(PatientEvent.message_id)).all() == [None]
    again = run_crosswalk("prune", "--config", str(folder), "--db", db_url)
    assert again.returncode == 0 and ids(store) == left


def test_the_engine_prunes_as_it_runs_and_resumes_where_it_stopped(
    db_url: str, store: Engine, tmp_path: Path
) -> None:
    old = [put(store, MessageStatus.ROUTED, 40, (D.DELIVERED,)) for _ in range(25)]
    held = put(store, MessageStatus.ROUTED, 40, (D.ERRORED,))
    old += [put(store, MessageStatus.ROUTED, 40, (D.DELIVERED,)) for _ in range(25)]
    retention = "retention: {metadata: {delivered: 30d}, batch: 10, rate: 500, interval: 200ms}\n"
    pacs = FakeReceiver()
    folder = config_folder(
        tmp_path,
        ALL_TO_PACS,
        endpoints=destination_yaml(pacs.port),
        extra={"retention.yaml": retention},
    )
    engine = Pipeline(db_url, folder)
    engine.start()
    try:
        with Peer(engine.port()) as peer:
            assert read_ack(peer.exchange(adt("LIVE1"))).code == "AA"
        deadline = time.monotonic() + 10
        while ids(store) & set(old) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not ids(store) & set(old)
        assert held in ids(store)
    finally:
        engine.stop()
    with store.connect() as connection:
        assert connection.execute(select(func.count()).select_from(Message)).scalar() == 2
    # Where the rule got to is stored: the set-aside message holds the mark at itself.
    pruning = Pruning(RetentionSettings(metadata=Periods(delivered=Duration(30 * 86400))))
    with store.connect() as connection:
        pruning.load(connection)
    assert pruning.walks["metadata:delivered"].floor == held - 1


def test_prune_needs_a_retention_section(db_url: str, tmp_path: Path) -> None:
    folder = config_folder(tmp_path, ALL_TO_PACS)
    refused = run_crosswalk("prune", "--dry-run", "--config", str(folder), "--db", db_url)
    assert refused.returncode == 2
    assert "no `retention:` section" in refused.stderr


def test_metadata_kept_shorter_than_content_is_refused(tmp_path: Path) -> None:
    folder = config_folder(
        tmp_path,
        ALL_TO_PACS,
        extra={
            "retention.yaml": "retention: {content: {delivered: 30d}, metadata: {delivered: 7d}}\n"
        },
    )
    with pytest.raises(ConfigError) as refused:
        load_config(folder, {})
    assert "metadata.delivered is shorter than content.delivered" in str(refused.value)


def test_a_new_sqlite_store_gives_pruned_space_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prune, "VACUUM_RESERVE", 8)  # a small store: keep only 8 free pages
    store = open_store(f"sqlite:///{tmp_path / 'space.db'}")
    assert auto_vacuum_mode(store) == "incremental"
    for _ in range(300):
        put(store, MessageStatus.FILTERED, 40)
    path = tmp_path / "space.db"
    with store.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    full = path.stat().st_size
    settings = RetentionSettings(metadata=Periods(filtered=Duration(86400)), batch=100)
    pruning = Pruning(settings)
    with store.connect() as connection:
        pruning.load(connection)
    freed = 0
    while True:
        with store.connect() as connection:
            batch = pruning.next_batch(connection, pruning.rules[0])
        if batch is None:
            break
        with raw_transaction(store) as cursor:
            applied = pruning.apply(cursor, Statements(store), batch)
        pruning.advance(batch, applied)
        freed += applied.pages_freed
    with store.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    assert freed > 0 and path.stat().st_size < full
    assert plan(store, settings)[0].prunable == 0
