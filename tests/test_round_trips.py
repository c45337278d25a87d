"""The ACK path's cost in round trips to a server database: one per message, the duplicate
check folded into the insert and the commit into the statement (issue 15).

The engine's writer talks to PostgreSQL through a TCP relay that counts turns: each time the
client speaks after the server answered is one round trip, whatever the bytes are.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from sqlalchemy.engine import make_url

from engine.pipeline.intake import Intake
from engine.pipeline.settings import ListenerSettings
from engine.store.database import open_engine, open_store
from engine.store.messages import MessageFilter, find_messages
from engine.store.writer import StoreWriter
from tests.conftest import POSTGRES_ENV
from tests.support import adt, answers_to


@dataclass
class TurnCountingRelay:
    """Relays one TCP connection at a time to ``target``, counting the client's turns."""

    target: tuple[str, int]
    turns: int = 0
    _server_spoke: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sockets: list[socket.socket] = field(default_factory=list)

    def start(self) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        self._sockets.append(listener)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return int(listener.getsockname()[1])

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                sink.close()
                return
            with self._lock:
                if from_client and self._server_spoke:
                    self.turns += 1
                self._server_spoke = not from_client
            try:
                sink.sendall(data)
            except OSError:
                return


@pytest.fixture
def postgres_url(db_url: str) -> Iterator[str]:
    if not db_url.startswith("postgresql"):
        pytest.skip("round trips are a server database's cost")
    assert os.environ.get(POSTGRES_ENV)
    open_store(db_url).dispose()  # migrated, through its own connections
    yield db_url


def test_one_round_trip_per_message_on_the_ack_path(postgres_url: str) -> None:
    """Messages sent one at a time (each waits for its ACK, as one sequential connection does)
    cost one round trip each, duplicates included; and they are stored exactly as before."""
    url = make_url(postgres_url)
    relay = TurnCountingRelay((url.host or "127.0.0.1", url.port or 5432))
    relayed = url.set(host="127.0.0.1", port=relay.start())
    engine = open_engine(relayed.render_as_string(hide_password=False))
    control_ids = [f"W{i}" for i in range(10)] + [f"C{i % 7}" for i in range(21)]

    async def scenario() -> tuple[list[bytes], list[int]]:
        writer = StoreWriter(engine)
        writer.start()
        intake = Intake(writer, ListenerSettings(name="t", duplicate_window=3600))
        acks: list[bytes] = []
        turns: list[int] = []
        for control_id in control_ids:
            answer = asyncio.get_running_loop().create_future()
            intake.on_frame(adt(control_id), "test", answers_to(answer))
            acks += await answer
            turns.append(relay.turns)
        await writer.close()
        return acks, turns

    try:
        acks, turns = asyncio.run(scenario())
    finally:
        engine.dispose()
        relay.close()
    # The first ten open the connection and let the driver prepare the statement.
    counted = turns[-1] - turns[9]
    assert counted == len(control_ids) - 10
    assert all(b"MSA|AA|" in ack for ack in acks)
    store = open_store(postgres_url)
    try:
        rows = sorted(find_messages(store, MessageFilter(), limit=100), key=lambda r: r.id)
    finally:
        store.dispose()
    statuses = [(r.control_id, r.status) for r in rows]
    assert statuses[10:] == [(f"C{i % 7}", "received" if i < 7 else "duplicate") for i in range(21)]
    first = {r.control_id: r.id for r in rows if r.status == "received"}
    for row, ack in zip(rows, acks, strict=True):
        if row.status == "duplicate":
            assert row.duplicate_of == first[row.control_id]
            assert row.status_reason == f"duplicate of message {first[row.control_id]}"
            assert ack == row.ack and b"duplicate of a message already accepted" in ack
        else:
            assert row.duplicate_of is None and row.status_reason == ""
