"""Crash safety: SIGKILL the engine at random moments while several senders are busy.

Every message that got an AA must be in the store exactly once as accepted (a sender resends
what was not acknowledged, so a message may also be kept again as a duplicate), and nothing may
be acknowledged that is not stored.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from engine.hl7v2.ack import read_ack
from engine.store.database import open_store
from engine.store.schema import MessageStatus
from engine.testing import Peer, free_port, wait_for_port
from tests.support import adt, cli_env, crosswalk, stored_messages

SENDERS = 4
KILLS = 5


class Sender(threading.Thread):
    """Sends its messages in order; after a failure it reconnects and resends the same one."""

    def __init__(self, number: int, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.number = number
        self.port = port
        self.stop = stop
        self.acknowledged: list[str] = []

    def run(self) -> None:
        index = 0
        peer: Peer | None = None
        deadline = time.monotonic() + 120
        # `stop` is looked at between messages only: the message in hand is always resent
        # until it is acknowledged, as a real sender does.
        current: str | None = None
        while time.monotonic() < deadline:
            if current is None:
                if self.stop.is_set():
                    break
                current = f"S{self.number}-{index:05d}"
            control_id = current
            try:
                if peer is None:
                    peer = Peer(self.port, timeout=5)
                reply = read_ack(peer.exchange(adt(control_id)))
            except (OSError, TimeoutError):
                if peer is not None:
                    peer.close()
                    peer = None
                time.sleep(0.05)
                continue
            assert reply.code == "AA", reply
            assert reply.control_id == control_id
            self.acknowledged.append(control_id)
            index += 1
            current = None
        if peer is not None:
            peer.close()


def start_engine(db_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        crosswalk("serve", "--db", db_url, "--port", str(port)),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=cli_env(),
        cwd=log.parent,  # no ./routes here: the built-in single listener
    )
    wait_for_port(port, process)
    return process


def test_sigkill_at_random_moments_loses_no_acknowledged_message(
    db_url: str, tmp_path: Path
) -> None:
    random.seed(os.getpid())
    port = free_port()
    log = tmp_path / "engine.log"
    process = start_engine(db_url, port, log)
    stop = threading.Event()
    senders = [Sender(n, port, stop) for n in range(SENDERS)]
    for sender in senders:
        sender.start()
    try:
        for _ in range(KILLS):
            time.sleep(random.uniform(0.2, 0.9))
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            process = start_engine(db_url, port, log)
        time.sleep(0.5)
        stop.set()
        for sender in senders:
            sender.join(120)
            assert not sender.is_alive()
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()[-3000:]

    acknowledged = [cid for sender in senders for cid in sender.acknowledged]
    assert all(len(sender.acknowledged) > 100 for sender in senders)
    rows = stored_messages(open_store(db_url))
    accepted = Counter(r.control_id for r in rows if r.status in MessageStatus.ACCEPTED)
    assert all(count == 1 for count in accepted.values()), "no message accepted twice"
    missing = [cid for cid in acknowledged if accepted[cid] != 1]
    assert not missing, f"acknowledged but not stored: {missing[:10]}"
    assert set(accepted) == set(acknowledged)
    for sender in senders:
        mine = [
            r.control_id
            for r in rows
            if r.status in MessageStatus.ACCEPTED and r.control_id.startswith(f"S{sender.number}-")
        ]
        assert mine == sender.acknowledged, "each sender's messages stored in its order"
