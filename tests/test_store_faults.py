"""The store failing under a running engine: a PostgreSQL server of the test's own that freezes.

Senders must get a prompt AE (not stored, send again), never a hang and never an AA for what
was not committed; once the server answers again, the feed goes on without a restart.
"""

from __future__ import annotations

import time

from engine.hl7v2.ack import read_ack
from engine.pipeline.settings import ListenerSettings
from engine.store.database import open_store
from engine.testing import Peer
from tests.postgres_cluster import throwaway_postgres
from tests.support import EngineThread, adt, stored_messages

COMMIT_TIMEOUT = 1.0


def timed_exchange(peer: Peer, payload: bytes, timeout: float = 30) -> tuple[str, float]:
    started = time.monotonic()
    peer.send(payload)
    reply = read_ack(peer.read(timeout))
    return reply.code, time.monotonic() - started


def test_a_frozen_postgres_server_gets_senders_an_ae_within_the_commit_timeout() -> None:
    with throwaway_postgres() as server:
        engine = EngineThread(server.url, {"t": ListenerSettings(name="t", port=0)})
        engine.server.commit_timeout = COMMIT_TIMEOUT
        engine.start()
        try:
            with Peer(engine.port(), timeout=30) as peer:
                assert timed_exchange(peer, adt("BEFORE"))[0] == "AA"
                server.freeze()
                try:
                    code, waited = timed_exchange(peer, adt("FROZEN1"))
                    assert code == "AE"
                    assert waited < COMMIT_TIMEOUT + 1.5, f"AE after {waited:.1f}s"
                    code, waited = timed_exchange(peer, adt("FROZEN2"))
                    assert code == "AE"
                    # a new connection to a frozen server: libpq's connect_timeout bounds it
                    assert waited < 7, f"AE after {waited:.1f}s"
                finally:
                    server.thaw()
                deadline = time.monotonic() + 30
                while (code := timed_exchange(peer, adt("FROZEN1"))[0]) != "AA":
                    assert code == "AE" and time.monotonic() < deadline
                    time.sleep(0.2)
                assert timed_exchange(peer, adt("AFTER"))[0] == "AA"
        finally:
            engine.stop()
        store = open_store(server.url)
        rows = stored_messages(store)
        store.dispose()
    accepted = [(r.control_id, r.status) for r in rows if r.status != "duplicate"]
    assert ("BEFORE", "received") in accepted or ("BEFORE", "filtered") in accepted
    assert [c for c, _ in accepted].count("FROZEN1") == 1, "stored once, copies marked"
    assert "AFTER" in [c for c, _ in accepted]
