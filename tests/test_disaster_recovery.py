"""The disaster-recovery drill: an engine under load is backed up, keeps taking messages, loses
its store, and is restored from the backup onto a fresh file and restarted. Every message
acknowledged before the backup point is there and delivered in order, the MPI holds its
patients, and the messages after it are exactly the recovery-point gap `restore` reports.
Real processes and sockets throughout; RPO and RTO are printed (docs/operations.md)."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from pathlib import Path

from sqlalchemy import func, select

from engine.hl7v2.ack import read_ack
from engine.mpi.tables import Patient
from engine.store.database import open_store
from engine.store.schema import Message
from engine.testing import FakeReceiver, Peer, free_port, wait_for_port
from tests.support import adt, cli_env, crosswalk, run_crosswalk

LISTENERS = ("ehr", "ris")


class Sender(threading.Thread):
    """One feed: sends ADT^A01s one at a time, each waiting for its ACK, until stopped; keeps
    every control id acknowledged AA with the moment of its ACK."""

    def __init__(self, name: str, port: int) -> None:
        super().__init__(daemon=True)
        self.feed, self.port = name, port
        self.acked: list[tuple[str, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with Peer(self.port) as peer:
            n = 0
            while not self.stopping.is_set():
                control_id = f"{self.feed.upper()}{n:05d}"
                pid = f"PID|1||{control_id}^^^GENHOSP^MR||DOE^JANE||19800304|F"
                if read_ack(peer.exchange(adt(control_id, pid=pid))).code == "AA":
                    self.acked.append((control_id, time.time()))
                n += 1
                time.sleep(0.002)


def start_engine(db: Path, folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        crosswalk("serve", "--db", str(db), "--config", str(folder)),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=cli_env(),
    )
    wait_for_port(port, process)
    return process


def test_backup_under_load_restore_and_resume(tmp_path: Path) -> None:
    ports = {name: free_port() for name in LISTENERS}
    pacs_port = free_port()  # no PACS yet: every delivery waits in its queue
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "engine.yaml").write_text(
        "listeners:\n"
        + "".join(f"  {name}: {{port: {port}}}\n" for name, port in ports.items())
        + f"destinations:\n  pacs: {{host: 127.0.0.1, port: {pacs_port}, connect_timeout: 1s,"
        " retry_initial: 50ms, retry_max: 200ms}\n"
        "routes:\n"
        + "".join(
            f"  {name}: {{source: {name}, destinations: [pacs, mpi]}}\n" for name in LISTENERS
        )
    )
    store, backup, restored = tmp_path / "store.db", tmp_path / "drill.backup", tmp_path / "new.db"
    log = tmp_path / "serve.log"
    engine = start_engine(store, folder, ports["ehr"], log)
    senders = [Sender(name, ports[name]) for name in LISTENERS]
    try:
        for sender in senders:
            sender.start()
        time.sleep(2.0)
        backup_started = time.time()
        taken = run_crosswalk("backup", str(backup), "--db", str(store))
        backup_ended = time.time()
        assert taken.returncode == 0, taken.stderr
        time.sleep(1.0)  # the feeds go on after the backup: these messages will be lost
    finally:
        for sender in senders:
            sender.stopping.set()
            sender.join(10)
        disaster = time.time()
        engine.send_signal(signal.SIGKILL)
        engine.wait(10)
    for path in tmp_path.glob("store.db*"):  # the machine is gone
        path.unlink()

    recovery_started = time.monotonic()
    restore = run_crosswalk("restore", str(backup), "--db", str(restored))
    assert restore.returncode == 0, restore.stderr
    points = dict(
        re.findall(r"recovery point, listener (\w+): message \d+, control id (\w+)", restore.stdout)
    )
    assert set(points) == set(LISTENERS), restore.stdout
    pacs = FakeReceiver(port=pacs_port)
    engine = start_engine(restored, folder, ports["ehr"], log)
    recovered = time.monotonic() - recovery_started
    try:
        kept: dict[str, list[str]] = {}
        for sender in senders:
            acked = [control_id for control_id, _ in sender.acked]
            assert points[sender.feed] in acked
            cut = acked.index(points[sender.feed]) + 1
            kept[sender.feed], gap = acked[:cut], acked[cut:]
            # Everything acknowledged before the backup began is in it; the gap is the rest.
            assert all(at >= backup_started for _, at in sender.acked[cut:]), sender.feed
            assert len(kept[sender.feed]) > 50 and len(gap) > 50
        total = sum(len(ids) for ids in kept.values())
        assert pacs.wait_for(total, timeout=15), (len(pacs.received), total)
        delivered = pacs.control_ids()
        for feed, ids in kept.items():  # each feed's messages, all of them, in order, once
            assert [c for c in delivered if c.startswith(feed.upper())] == ids
        drained = time.monotonic() - recovery_started
        store_now = open_store(f"sqlite:///{restored}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the MPI worker applies what was queued for it
            with store_now.connect() as connection:
                patients = connection.execute(select(func.count()).select_from(Patient)).scalar()
            if patients == total:
                break
            time.sleep(0.1)
        assert patients == total
        with store_now.connect() as connection:
            stored = connection.execute(select(func.count()).select_from(Message)).scalar()
        assert stored == total
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(30)
        pacs.stop()
    lost = sum(len(s.acked) for s in senders) - total
    print(
        f"\nDR drill: backup took {backup_ended - backup_started:.2f} s; {total} messages in it,"
        f" {lost} acknowledged after it (RPO: the {disaster - backup_started:.1f} s since the"
        f" backup began); restore + engine ready {recovered:.2f} s (RTO), queues drained to the"
        f" PACS {drained:.2f} s after the restore began"
    )
