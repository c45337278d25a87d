"""MPI benchmark: bulk import of an MPI export, then ADT updates applied by the running engine.

1. Writes a synthetic MPI export (bench/synthetic.py) of ``--rows`` patients.
2. Baseline: the same rows inserted with bare sqlite3 ``executemany`` into the same schema
   (patients, identifiers, history), no checking: the floor for this database.
3. ``crosswalk mpi import`` of the file, as a user runs it: wall time and peak RSS.
4. The engine serves the imported store with the MPI route only. ``--updates`` ADT^A08 for
   existing patients are sent over ``--connections`` connections while the ``mpi`` queue is
   paused (ingest rate), then the queue is resumed and timed until empty (apply rate). Then
   the same again with the queue running (the MPI keeping up with a live feed).

    python bench/mpi.py [--rows 1000000] [--updates 20000] [--db URL]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mllp_load import send_blocking
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from synthetic import Person, adt_update, people, write_mpi_csv

from engine.store.database import open_store
from engine.store.schema import Delivery, DeliveryState
from engine.testing import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def run_child(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run a command; (wall seconds, peak RSS in MiB, stdout)."""
    start = time.perf_counter()
    child = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0, 1):
        raise SystemExit(f"{args[3:5]} failed with exit code {child.returncode}")
    return time.perf_counter() - start, usage.ru_maxrss // 1024, out


def baseline_sqlite(path: Path, export: Path) -> float:
    """Seconds to insert the export's rows with bare executemany into a fresh store."""
    open_store(f"sqlite:///{path}").dispose()
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA cache_size=-262144")
    now = "2026-11-23 00:00:00.000000"
    start = time.perf_counter()
    with export.open(newline="") as file:
        reader = csv.reader(file)
        next(reader)
        batch: list[list[str]] = []

        def flush(first_id: int) -> None:
            ids = range(first_id, first_id + len(batch))
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(
                "INSERT INTO patients (id, family_name, given_name, middle_name, birth_date,"
                " sex, street, city, state, postal_code, phone, event_time, created_at,"
                " updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,'2026',?,?)",
                [
                    (i, *r[2:5], r[5].replace("-", ""), *r[6:], now, now)
                    for i, r in zip(ids, batch, strict=True)
                ],
            )
            connection.executemany(
                "INSERT INTO patient_identifiers (patient_id, value, authority, type_code)"
                " VALUES (?,?,?,'MR')",
                [(i, r[0], r[1]) for i, r in zip(ids, batch, strict=True)],
            )
            connection.executemany(
                "INSERT INTO patient_events (patient_id, kind, event_time, command, detail,"
                " recorded_at) VALUES (?, 'created', '2026', 'bench', 'import', ?)",
                [(i, now) for i in ids],
            )
            connection.execute("COMMIT")

        next_id = 1
        for row in reader:
            batch.append(row)
            if len(batch) == 20000:
                flush(next_id)
                next_id += len(batch)
                batch = []
        if batch:
            flush(next_id)
    elapsed = time.perf_counter() - start
    connection.close()
    return elapsed


def queued(store_url: str) -> int:
    store = open_store(store_url, upgrade=False)
    try:
        with Session(store) as session:
            return session.scalar(
                select(func.count(Delivery.id)).where(
                    Delivery.destination == "mpi", Delivery.state == DeliveryState.QUEUED
                )
            )
    finally:
        store.dispose()


def wait_until_applied(store_url: str, limit: float = 600) -> float:
    """Seconds until the mpi queue is empty."""
    start = time.perf_counter()
    while queued(store_url):
        if time.perf_counter() - start > limit:
            raise SystemExit("the MPI queue did not drain in time")
        time.sleep(0.05)
    return time.perf_counter() - start


def updates(
    sample: list[Person], count: int, connections: int, tag: str, start: datetime
) -> list[list[bytes]]:
    """A08s for random patients of ``sample``; one patient's updates stay on one connection."""
    rng = random.Random(tag)
    batches: list[list[bytes]] = [[] for _ in range(connections)]
    for n in range(count):
        person = sample[rng.randrange(len(sample))]
        changed = replace(person, phone=f"(555){rng.randrange(100, 999)}-{n % 10000:04d}")
        when = (start + timedelta(seconds=n)).strftime("%Y%m%d%H%M%S")
        batches[int(person.mrn) % connections].append(adt_update(changed, f"{tag}{n}", when))
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--db", help="database URL (default: an SQLite file in a temp folder)")
    parser.add_argument("--data", type=Path, help="folder to keep the generated export in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        data = args.data or folder
        data.mkdir(parents=True, exist_ok=True)
        export = data / f"mpi-{args.rows}.csv"
        if not export.exists():
            start = time.perf_counter()
            write_mpi_csv(export, args.rows)
            print(f"generated {args.rows} patients in {time.perf_counter() - start:.1f}s")
        size = export.stat().st_size / 2**20
        store_url = args.db or f"sqlite:///{folder}/mpi.db"
        env = dict(os.environ, CROSSWALK_LOG_LEVEL="WARNING")
        python = [sys.executable, "-m", "engine"]
        if not args.db:
            floor = baseline_sqlite(folder / "floor.db", export)
            print(f"baseline (bare sqlite3 executemany, no checks): {floor:.1f}s")
        seconds, rss, out = run_child([*python, "mpi", "import", str(export), "--db", store_url])
        print(out.strip())
        print(
            f"crosswalk mpi import: {args.rows} rows ({size:.0f} MiB) in {seconds:.1f}s"
            f" = {args.rows / seconds:,.0f} rows/s, peak RSS {rss} MiB"
            + (f"; {seconds / floor:.2f}x the bare-insert baseline" if not args.db else "")
        )

        config = folder / "config"
        config.mkdir()
        port = free_port()
        (config / "engine.yaml").write_text(
            f"listeners:\n  ehr: {{port: {port}}}\n"
            "routes:\n  mpi:\n    source: ehr\n    filter: {type: 'ADT^*'}\n"
            "    destinations: [mpi]\n"
        )
        engine = subprocess.Popen(
            [*python, "serve", "--config", str(config), "--db", store_url], cwd=ROOT, env=env
        )
        sample = list(people(min(args.rows, 200_000)))
        try:
            wait_for_port(port, engine)
            run_child([*python, "queue", "pause", "mpi", "--db", store_url], env)
            ingest = send_blocking(
                "127.0.0.1",
                port,
                updates(sample, args.updates, args.connections, "P", datetime(2026, 12, 1)),
            )
            run_child([*python, "queue", "resume", "mpi", "--db", store_url], env)
            applied = wait_until_applied(store_url)
            print(
                f"ADT^A08 x {args.updates} over {args.connections} connections, MPI paused:"
                f" acknowledged at {ingest.rate:,.0f} msg/s;"
                f" then applied to the MPI at {args.updates / applied:,.0f} msg/s"
            )
            start = time.perf_counter()
            live = send_blocking(
                "127.0.0.1",
                port,
                updates(sample, args.updates, args.connections, "L", datetime(2026, 12, 8)),
            )
            wait_until_applied(store_url)
            total = time.perf_counter() - start
            print(
                f"live feed: acknowledged at {live.rate:,.0f} msg/s; all {args.updates} applied"
                f" {total - live.seconds:.2f}s after the last ACK ="
                f" {args.updates / total:,.0f} msg/s end to end"
            )
        finally:
            engine.send_signal(signal.SIGTERM)
            engine.wait(60)


if __name__ == "__main__":
    main()
