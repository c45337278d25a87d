"""The dispatcher when routing falls behind: memory stays bounded, nothing is lost or doubled."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from engine.pipeline import dispatcher
from engine.routes.router import Router, Routing
from engine.store.database import open_store
from engine.store.schema import MessageStatus
from engine.testing import FakeReceiver, Peer
from tests.support import adt, running_pipeline, stored_messages


@pytest.mark.parametrize(
    ("limit", "value"),
    [("PENDING_LIMIT", 4), ("PENDING_BYTES", 4 * len(adt("F0-00")))],
    ids=["messages", "bytes"],
)
def test_routing_far_behind_reads_the_rest_from_the_store(
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    limit: str,
    value: int,
) -> None:
    """Memory is bounded by count and by bytes: past either, the backlog is read from the
    store, with nothing lost or doubled and each feed's order kept."""
    monkeypatch.setattr(dispatcher, limit, value)
    route = Router.route

    def slow(self: Router, raw: bytes, charset: str | None, listener: str) -> Routing:
        time.sleep(0.01)  # routing much slower than intake (in the routing process too)
        return route(self, raw, charset, listener)

    monkeypatch.setattr(Router, "route", slow)
    pacs = FakeReceiver()
    feeds = {f"F{n}": [f"F{n}-{i:02d}" for i in range(15)] for n in range(4)}

    def feed(control_ids: list[str]) -> None:
        with Peer(engine.port()) as peer:
            for control_id in control_ids:
                peer.send(adt(control_id))
            for _ in control_ids:
                peer.read()

    with running_pipeline(db_url, tmp_path, pacs.port) as engine:
        senders = [threading.Thread(target=feed, args=(ids,)) for ids in feeds.values()]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(30)
        assert pacs.wait_for(60, timeout=30)
        time.sleep(0.3)
    pacs.stop()
    received = pacs.control_ids()
    assert sorted(received) == sorted(cid for ids in feeds.values() for cid in ids)
    for prefix, ids in feeds.items():
        assert [cid for cid in received if cid.startswith(prefix + "-")] == ids
    rows = stored_messages(open_store(db_url))
    assert {r.status for r in rows} == {MessageStatus.ROUTED}
    assert "messages (0 KiB) behind; reading them from the store" in caplog.text
    assert "from the store" in caplog.text
    assert "routing process failed" not in caplog.text  # routed in the child throughout


def test_routing_errors_reach_the_log_without_field_values(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A route failing on a value with an apostrophe (Python quotes it with ``"``): the stored
    reason keeps the value, the WARNING names only the route and destination."""
    from tests.support import Pipeline, config_folder

    routes = """
routes:
  names:
    source: ehr
    steps:
      - set:
          field: PID-5.2
          template: "{{ lookup('names', 'family', field('PID-5.1'), 'given') }}"
    destinations: [pacs]
"""
    folder = config_folder(tmp_path, routes, mappings={"names.csv": "family,given\nDOE,JOHN\n"})
    pipeline = Pipeline(db_url, folder)
    pipeline.start()
    try:
        with Peer(pipeline.port()) as peer:
            peer.exchange(adt("APOS1", pid="PID|1||1^^^H^MR||O'BRIEN-SMITH^MARY||19800101|F"))
        store = open_store(db_url)
        deadline = time.monotonic() + 10
        while stored_messages(store)[0].status == MessageStatus.RECEIVED:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        pipeline.stop()
    (row,) = stored_messages(store)
    assert row.status == MessageStatus.ERRORED and "BRIEN" in row.status_reason
    logged = [r.getMessage() for r in caplog.records if r.levelno >= 30]
    assert any("errored in routing: errored in names;" in line for line in logged)
    assert not [line for line in logged if "BRIEN" in line or "MARY" in line]


def test_a_routing_bug_is_logged_with_its_frames_not_its_text() -> None:
    from engine.pipeline.routing_process import route_batch
    from engine.store.received import AcceptedMessage

    class Broken:
        def route(self, raw: bytes, charset: str | None, listener: str) -> Routing:
            raise KeyError(raw.decode())  # a bug quoting the message

    result = route_batch(Broken(), [AcceptedMessage(7, b"O'BRIEN-SMITH", None, "ehr")])  # type: ignore[arg-type]
    ((message_id, trace),) = result.failures
    assert message_id == 7 and "KeyError" in trace and "in route" in trace
    assert "BRIEN" not in trace
    assert "BRIEN" in result.routed[0].reason and "BRIEN" not in result.routed[0].summary


def test_a_message_the_database_kept_without_saying_so_is_routed_after_a_recheck(
    db_url: str, tmp_path: Path
) -> None:
    """A commit that failed or timed out may have been kept by the server all the same: such a
    message lies in the store as received, older than what was routed since. A recheck (intake
    calls it on every failed commit) reads the store from the oldest waiting message."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from engine.hl7v2.check import examine
    from engine.store.received import message_row
    from engine.store.schema import Message

    pacs = FakeReceiver()
    with running_pipeline(db_url, tmp_path, pacs.port) as engine:
        store = open_store(db_url)
        raw = adt("KEPT")
        row = message_row(raw, len(raw), examine(raw), datetime.now(UTC), "ehr", "test")
        row |= {"status": "received", "status_reason": "", "ack_code": "AE", "ack": b""}
        with store.begin() as connection:
            connection.execute(insert(Message).values(row))
        with Peer(engine.port()) as peer:
            peer.exchange(adt("LATER"))
        assert pacs.wait_for(1)
        time.sleep(0.3)
        assert pacs.control_ids() == ["LATER"], "the dispatcher does not know of KEPT yet"
        engine.loop.call_soon_threadsafe(engine.server.dispatcher.recheck)
        assert pacs.wait_for(2)
    pacs.stop()
    assert pacs.control_ids() == ["LATER", "KEPT"]


def test_an_engine_stopped_mid_batch_leaves_the_later_messages_behind_it(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped while a batch is being routed (the batch is cut: its record may never be
    written), the engine does not route the messages that came after it on its way out: the
    next start routes them all from the store, and their deliveries queue in arrival order."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from engine.hl7v2.ack import read_ack
    from engine.store.schema import Delivery, Message
    from engine.testing import free_port

    route = Router.route

    def slow_first(self: Router, raw: bytes, charset: str | None, listener: str) -> Routing:
        if b"|SLOW|" in raw:
            time.sleep(1.5)  # still routing when the engine is told to stop
        return route(self, raw, charset, listener)

    monkeypatch.setattr(Router, "route", slow_first)
    pacs_port = free_port()  # nobody listens: deliveries stay queued, in order
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
    with running_pipeline(db_url, tmp_path / "first", pacs_port) as engine:
        peer = Peer(engine.port())
        for control_id in ("SLOW", "A2", "A3"):
            assert read_ack(peer.exchange(adt(control_id))).code == "AA"
        peer.close()
    monkeypatch.setattr(Router, "route", route)
    store = open_store(db_url)
    try:
        with running_pipeline(db_url, tmp_path / "second", pacs_port):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with Session(store) as session:
                    if len(session.scalars(select(Delivery.id)).all()) == 3:
                        break
                time.sleep(0.05)
        with Session(store) as session:
            queued = (
                session.execute(
                    select(Message.control_id)
                    .join(Delivery, Delivery.message_id == Message.id)
                    .order_by(Delivery.id)
                )
                .scalars()
                .all()
            )
    finally:
        store.dispose()
    assert queued == ["SLOW", "A2", "A3"]
