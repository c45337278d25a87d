"""Retention benchmark: ingest ACK latency while the engine prunes a large store, against the
same engine on the same store with pruning off, in the same run; and the SQLite file's size.

A store of --messages delivered messages (default 3,000,000, spread over 60 days, ~1 KB each) is
built once with bulk inserts; it is copied for each phase. Each phase runs `crosswalk serve` as a
subprocess on its copy and sends --send messages at --pace msg/s on one connection, timing each
ACK:
- quiet: the `retention:` section with `enabled: false` (nothing pruned);
- pruning: metadata of delivered messages older than 30 days (half the store) pruned at the
  section's default rate (1000 messages a second, 200 a batch), while the same feed runs.
Printed: ACK p50/p99 of each phase and their ratio (target: pruning p99 within 1.5x of quiet),
messages pruned during the phase, and the file's size (with its WAL) at the start and end.

    python bench/retention.py [--messages 3000000] [--send 20000] [--pace 200]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.hl7v2.ack import read_ack
from engine.store.database import open_store
from engine.testing import FakeReceiver, Peer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
BODY = (
    "EVN|A08|20261123101500\r"
    "PID|1||{n}^^^GENHOSP^MR||DOE^JANE^Q||19800304|F|||1 MAIN ST^^SPRINGFIELD^IL^62701||555-0100\r"
    "PV1|1|O|RAD^^^GENHOSP||||1234^WELBY^MARCUS|||||||||||V{n}\r" + "NTE|1||" + "x" * 600 + "\r"
)


def message(control_id: str) -> bytes:
    return (
        "MSH|^~\\&|EPIC|GENHOSP|PACS|RADIOLOGY|20261123101500||ADT^A08^ADT_A01|"
        f"{control_id}|P|2.5.1\r" + BODY.format(n=control_id)
    ).encode()


def build(path: Path, count: int) -> None:
    """``count`` routed messages, each with one delivered delivery, over the last 60 days."""
    open_store(f"sqlite:///{path}").dispose()  # the schema, with incremental vacuum
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    start = datetime.now(UTC) - timedelta(days=60)
    step = timedelta(days=59) / count
    chunk = 20000
    for first in range(0, count, chunk):
        db.execute("BEGIN")
        rows, deliveries = [], []
        for n in range(first, min(count, first + chunk)):
            when = (start + step * n).strftime("%Y-%m-%d %H:%M:%S.%f")
            raw = message(f"B{n}")
            rows.append((n + 1, when, raw, len(raw), f"B{n}"))
            deliveries.append((n + 1, raw, when))
        db.executemany(
            "INSERT INTO messages (id, received_at, listener, peer, raw, size, sending_application,"
            " sending_facility, receiving_application, receiving_facility, message_datetime,"
            " message_type, message_code, trigger_event, control_id, dedup_key, processing_id,"
            " version_id, status, status_reason, ack_code, ack) VALUES (?, ?, 'ehr', '127.0.0.1',"
            " ?, ?, 'EPIC', 'GENHOSP', 'PACS', 'RADIOLOGY', '20261123101500', 'ADT^A08^ADT_A01',"
            " 'ADT', 'A08', ?, '', 'P', '2.5.1', 'routed', '', 'AA', X'')",
            rows,
        )
        db.executemany(
            "INSERT INTO deliveries (message_id, route, destination, partition, payload,"
            " control_id, state, attempts, last_error, ack, created_at) VALUES"
            " (?, 'all', 'pacs', 0, ?, '', 'delivered', 1, '', X'', ?)",
            deliveries,
        )
        db.execute("COMMIT")
    db.close()


def size(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def phase(store: Path, folder: Path, enabled: bool, send: int, pace: float) -> dict[str, float]:
    pacs = FakeReceiver()
    port = free_port()
    (folder / "endpoints.yaml").write_text(
        f"listeners:\n  ehr: {{port: {port}}}\n"
        f"destinations:\n  pacs: {{host: 127.0.0.1, port: {pacs.port}}}\n"
        "routes:\n  all: {source: ehr, destinations: [pacs]}\n"
        f"retention: {{enabled: {str(enabled).lower()}, metadata: {{delivered: 30d}}}}\n"
    )
    before = size(store)
    log = (folder / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--db", str(store), "--config", str(folder)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    latencies = []
    try:
        wait_for_port(port, process, timeout=120)
        with Peer(port) as peer:
            started = time.monotonic()
            for n in range(send):
                due = started + n / pace
                time.sleep(max(0.0, due - time.monotonic()))
                sent = time.perf_counter()
                assert read_ack(peer.exchange(message(f"L{enabled}{n}"))).code == "AA"
                latencies.append(time.perf_counter() - sent)
    finally:
        process.terminate()
        process.wait(60)
        pacs.stop()
        log.close()
    with sqlite3.connect(store) as db:
        left = db.execute("SELECT count(*) FROM messages").fetchone()[0]
    latencies.sort()
    return {
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "messages_left": left,
        "size_before": before / 2**20,
        "size_after": size(store) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3_000_000)
    parser.add_argument("--send", type=int, default=20_000)
    parser.add_argument("--pace", type=float, default=200.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crosswalk-retention-"))
    try:
        base = work / "base.db"
        started = time.monotonic()
        build(base, args.messages)
        print(
            f"store: {args.messages:,} messages, {size(base) / 2**20:,.0f} MiB,"
            f" built in {time.monotonic() - started:.0f} s"
        )
        results = {}
        for name, enabled in (("quiet", False), ("pruning", True)):
            copy = work / f"{name}.db"
            shutil.copy(base, copy)
            folder = work / name
            folder.mkdir()
            results[name] = phase(copy, folder, enabled, args.send, args.pace)
            r = results[name]
            print(
                f"{name:8} ACK p50 {r['p50']:.2f} ms  p99 {r['p99']:.2f} ms  messages left"
                f" {r['messages_left']:,.0f}  file {r['size_before']:,.0f} ->"
                f" {r['size_after']:,.0f} MiB"
            )
        ratio = results["pruning"]["p99"] / results["quiet"]["p99"]
        print(f"p99 pruning / quiet: {ratio:.2f}x (target <= 1.5x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
