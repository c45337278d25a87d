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
from engine.testing import FakeReceiver, Peer, free_port, wait_for_port
from tests.support import (
    ALL_TO_PACS,
    SLOW_ROUTE,
    adt,
    cli_env,
    config_folder,
    crosswalk,
    destination_yaml,
    stored_messages,
)

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


def test_sigkill_while_routing_and_delivering_loses_and_reorders_nothing(
    db_url: str, tmp_path: Path
) -> None:
    """The whole path under SIGKILL: intake, the routing process, the PACS queue. Every
    acknowledged message reaches the PACS (at least once), and each sender's messages arrive
    in the order they were sent, first copies and last copies alike."""
    random.seed(os.getpid() + 1)
    pacs = FakeReceiver()
    port = free_port()
    endpoints = destination_yaml(pacs.port).replace("{port: 0}", f"{{port: {port}}}")
    folder = config_folder(tmp_path, ALL_TO_PACS, endpoints=endpoints)
    log = tmp_path / "engine.log"

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            crosswalk("serve", "--db", db_url, "--config", str(folder)),
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=cli_env(),
        )
        wait_for_port(port, process)
        return process

    process = start()
    stop = threading.Event()
    senders = [Sender(n, port, stop) for n in range(3)]
    for sender in senders:
        sender.start()
    try:
        for _ in range(2):
            time.sleep(random.uniform(0.4, 0.9))
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            process = start()
        time.sleep(0.5)
        stop.set()
        for sender in senders:
            sender.join(120)
            assert not sender.is_alive()
        acknowledged = [cid for sender in senders for cid in sender.acknowledged]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(acknowledged) <= set(pacs.control_ids()):
            time.sleep(0.1)
    finally:
        stop.set()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()[-3000:]
        pacs.stop()

    arrived = pacs.control_ids()
    assert set(acknowledged) <= set(arrived), "every acknowledged message reached the PACS"
    for sender in senders:
        mine = [cid for cid in arrived if cid.startswith(f"S{sender.number}-")]
        firsts = list(dict.fromkeys(mine))
        lasts = list(reversed(dict.fromkeys(reversed(mine))))
        assert firsts == sorted(firsts) and lasts == sorted(lasts), "sent order kept"
        assert set(sender.acknowledged) <= set(firsts)


def test_sigterm_with_a_routing_backlog_exits_within_the_shutdown_timeout(
    db_url: str, tmp_path: Path
) -> None:
    """Routing far behind (~25 ms a message, hundreds waiting): SIGTERM still ends the engine
    within --shutdown-timeout, and every accepted message is either routed or left received for
    the next start; none is lost."""
    pacs = FakeReceiver()
    folder = config_folder(tmp_path, SLOW_ROUTE, endpoints=destination_yaml(pacs.port))
    port = free_port()
    log = tmp_path / "engine.log"
    process = subprocess.Popen(
        [
            *crosswalk("serve", "--config", str(folder), "--db", db_url, "--port", str(port)),
            *("--shutdown-timeout", "2"),
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=cli_env(),
    )
    sent = [f"T{n:04d}" for n in range(400)]
    try:
        wait_for_port(port, process)
        with Peer(port) as peer:
            for control_id in sent:
                peer.send(adt(control_id))
            for _ in sent:
                assert read_ack(peer.read()).code == "AA"
    finally:
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        took = time.monotonic() - started
    pacs.stop()
    assert code == 0, log.read_text()[-3000:]
    assert took < 6.0, f"SIGTERM took {took:.1f}s\n" + log.read_text()[-3000:]
    rows = stored_messages(open_store(db_url))
    assert sorted(r.control_id for r in rows) == sent
    statuses = Counter(r.status for r in rows)
    assert set(statuses) <= {MessageStatus.ROUTED, MessageStatus.RECEIVED}, [
        r.status_reason for r in rows if r.status == MessageStatus.ERRORED
    ][:3]
    assert statuses[MessageStatus.RECEIVED] > 0, "the backlog was left for the next start"
    assert "left unrouted at shutdown" in log.read_text()
