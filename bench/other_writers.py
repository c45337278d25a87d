"""Other writers beside a busy engine: how long a CLI command's, the console's or pruning's write
waits for SQLite's write lock while the shipped engine takes messages.

`crosswalk serve` with the shipped configuration (as bench/ingest.py starts it, delivering to
bench/pacs_receiver.py) on its SQLite file; another connection (SQLite's busy timeout, as every
Crosswalk connection has) commits a one-row transaction every 50 ms and times it, while the
engine is idle (the baseline), takes one connection paced at 500 msg/s, and takes 8 connections
as fast as they are answered. The engine holds the write lock only while it commits; a writer
that kept it across its idle time would show here as seconds of waiting.

Printed per load: the other writer's p50, p90 and max in ms, and p90 against the idle run.

    python bench/other_writers.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import SHIPPED, shipped_url, start_servers
from mllp_load import run_load_blocking

from engine.store.database import BUSY_TIMEOUT

INTERVAL = 0.05
LOADS = {
    "idle": None,
    "1 connection at 500 msg/s": (1, 500, 500.0),
    "8 connections": (8, 400, None),
}


def other_writer(path: str, seconds: float) -> list[float]:
    """Commit a one-row transaction every INTERVAL for ``seconds``; each one's ms."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS bench_other_writer (at REAL)")
        took = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO bench_other_writer VALUES (?)", (time.time(),))
            connection.execute("COMMIT")
            took.append((time.perf_counter() - started) * 1000)
            time.sleep(INTERVAL)
        return sorted(took)
    finally:
        connection.close()


def measure(
    port: int, path: str, load: tuple[int, int, float | None] | None, seconds: float
) -> list[float]:
    stop = threading.Event()

    def send() -> None:
        assert load is not None
        connections, per_connection, rate = load
        round_ = 0
        while not stop.is_set():  # bounded: stops with the writer's run
            run_load_blocking("127.0.0.1", port, connections, per_connection, rate, f"O{round_}")
            round_ += 1

    sender = threading.Thread(target=send) if load is not None else None
    if sender is not None:
        sender.start()
        time.sleep(0.5)
    try:
        return other_writer(path, seconds)
    finally:
        stop.set()
        if sender is not None:
            sender.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per load (default 8)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="crosswalk-other-writers-")
    servers = start_servers(folder, None, only=[SHIPPED])
    port = servers[SHIPPED][0]
    path = shipped_url(folder, None).removeprefix("sqlite:///")
    try:
        run_load_blocking("127.0.0.1", port, 1, 300, prefix="W")  # warm-up
        baseline = None
        for name, load in LOADS.items():
            took = measure(port, path, load, args.seconds)
            p50, p90 = took[len(took) // 2], took[int(len(took) * 0.9)]
            baseline = baseline or p90
            print(
                f"other writer, engine {name:28s} n {len(took):4d}   p50 {p50:7.1f} ms"
                f"   p90 {p90:7.1f} ms   max {took[-1]:7.1f} ms   p90 / idle {p90 / baseline:6.1f}",
                flush=True,
            )
    finally:
        for _, process in servers.values():
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
