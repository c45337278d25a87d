"""The dispatcher when routing falls behind: memory stays bounded, nothing is lost or doubled."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from engine import dispatcher
from engine.router import Router, Routing
from engine.store.database import open_store
from engine.store.schema import MessageStatus
from engine.testing import FakeReceiver, Peer
from tests.support import adt, running_pipeline, stored_messages


def test_routing_far_behind_reads_the_rest_from_the_store(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(dispatcher, "PENDING_LIMIT", 4)
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
    assert "routing is 4 messages behind" in caplog.text
    assert "from the store" in caplog.text
    assert "routing process failed" not in caplog.text  # routed in the child throughout
