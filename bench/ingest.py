"""Ingest benchmark: Crosswalk (durable commits) against a bare python-hl7 server, same client.

The servers run as subprocesses and one client measures them in the same run:
- crosswalk shipped: `crosswalk serve` with the shipped configuration (the routes/ folder, as
  `make run` starts it: the PACS routes and the MPI feed) delivering to a live PACS
  (bench/pacs_receiver.py): what a new user measures; the queue left when a figure's run ends
  is printed, since the ACK path only counts if routing, the MPI and delivery keep up;
- crosswalk: the same with one listener and no routes (SQLite, WAL, synchronous=FULL): intake
  alone; bench/pipeline.py measures intake, routing and delivery together;
- python-hl7: hl7.mllp's start_hl7_server parsing each message and answering create_ack(),
  storing nothing (the baseline of the issue);
- durable floor: bench/minimal_durable_server.py, one SQLite commit per message and nothing else
  (what the disk's fsync allows; context for reading the numbers, not a competitor);
- crosswalk encrypted: the same engine with message content encrypted at rest (AES-256-GCM,
  CROSSWALK_KEYS), its cost beside the clear store;
- crosswalk on tmpfs (SQLite default only, where /dev/shm exists): the same engine with its store
  in memory, where fsync costs nothing. NOT durable, never a configuration to run: it shows the
  engine's own cost per message, so the gap to the first line is what the disk's fsync takes.

For each: one sequential connection (send, wait for the ACK: the real feed pattern), 8 concurrent
connections, and one connection paced at 500 msg/s for ACK latency. Each figure is the median of
--rounds runs. Messages are 1.3 KB ADT^A01 with 14 segments and unique control ids.

    python bench/ingest.py [--messages 4000] [--rounds 3] [--db URL]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mllp_load import RunResult, adt_message, run_load_blocking
from pipeline import make_config

from engine.store.crypto import new_key_line
from engine.testing import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PACED_RATE = 500
MEMORY_FOLDER = Path("/dev/shm")
ON_TMPFS = "crosswalk on tmpfs"
ENCRYPTED = "crosswalk encrypted"
SHIPPED = "crosswalk shipped"
FLOOR = "durable floor"


SERVERS = [FLOOR, SHIPPED, "crosswalk", ENCRYPTED, "python-hl7", ON_TMPFS]


def start_servers(
    folder: str, db: str | None, only: list[str] | None = None
) -> dict[str, tuple[int, subprocess.Popen[bytes]]]:
    quiet = {"stdout": subprocess.DEVNULL}
    names = [FLOOR, SHIPPED, "crosswalk", ENCRYPTED, "python-hl7"]
    if db is None and MEMORY_FOLDER.is_dir():
        names.append(ON_TMPFS)
    ports = {name: free_port() for name in names}
    config = Path(folder) / "ingest-only"
    config.mkdir()
    (config / "listeners.yaml").write_text(f"listeners:\n  ehr:\n    port: {ports['crosswalk']}\n")

    def crosswalk(url: str, port: int) -> list[str]:
        serve = ["serve", "--config", str(config), "--db", url, "--port", str(port)]
        return [sys.executable, "-m", "engine", *serve]

    commands: dict[str, list[str]] = {
        "crosswalk": crosswalk(db or f"sqlite:///{folder}/crosswalk.db", ports["crosswalk"]),
        "python-hl7": [
            sys.executable,
            str(ROOT / "bench" / "baseline_hl7_server.py"),
            str(ports["python-hl7"]),
        ],
        FLOOR: [
            sys.executable,
            str(ROOT / "bench" / "minimal_durable_server.py"),
            str(ports[FLOOR]),
            f"{folder}/floor.db",
        ],
    }
    shipped = make_config(Path(folder), 0)
    commands[SHIPPED] = [
        sys.executable,
        "-m",
        "engine",
        "serve",
        "--config",
        str(shipped),
        "--db",
        shipped_url(folder, db),
    ]
    keys = Path(folder) / "content.keys"
    keys.write_text(new_key_line() + "\n")
    commands[ENCRYPTED] = crosswalk(
        db.replace("crosswalk.db", "encrypted.db")
        if db and "crosswalk.db" in db
        else f"sqlite:///{folder}/encrypted.db",
        ports[ENCRYPTED],
    )
    if ON_TMPFS in ports:
        memory = Path(tempfile.mkdtemp(dir=MEMORY_FOLDER, prefix="crosswalk-bench-"))
        commands[ON_TMPFS] = crosswalk(f"sqlite:///{memory}/crosswalk.db", ports[ON_TMPFS])
    commands = {name: command for name, command in commands.items() if not only or name in only}
    env = dict(os.environ, CROSSWALK_LOG_LEVEL="WARNING")
    pacs_port = free_port()
    pacs = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "pacs_receiver.py"), str(pacs_port), os.devnull],
        **quiet,  # type: ignore[call-overload]
    )
    wait_for_port(pacs_port, pacs)
    shipped_env = dict(
        env,
        PACS_PORT=str(pacs_port),
        CROSSWALK_PORT=str(ports[SHIPPED]),
        CROSSWALK_MAPPINGS=str(ROOT / "mappings"),
    )
    servers = {"PACS": (pacs_port, pacs)}
    for name, command in commands.items():
        own = dict(env, CROSSWALK_KEYS=str(keys)) if name == ENCRYPTED else env
        own = shipped_env if name == SHIPPED else own
        process = subprocess.Popen(command, cwd=ROOT, env=own, **quiet)  # type: ignore[call-overload]
        wait_for_port(ports[name], process)
        servers[name] = (ports[name], process)
    return servers


def shipped_url(folder: str, db: str | None) -> str:
    """The shipped configuration's store: its own SQLite file, or the same server database."""
    return db or f"sqlite:///{folder}/shipped.db"


def backlog(url: str) -> int:
    """Messages the shipped engine still has to route or deliver (queued or received)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            waiting = connection.execute(
                text("SELECT count(*) FROM messages WHERE status IN ('received', 'queued')")
            ).scalar_one()
            queued = connection.execute(
                text("SELECT count(*) FROM deliveries WHERE state = 'queued'")
            ).scalar_one()
        return int(waiting) + int(queued)
    finally:
        engine.dispose()


def median_run(runs: list[RunResult]) -> RunResult:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


def measure(
    port: int, tag: str, messages: int, rounds: int, paced: int = PACED_RATE * 4
) -> dict[str, RunResult]:
    run_load_blocking("127.0.0.1", port, 1, 300, prefix=f"W{tag}")  # warm-up
    results: dict[str, list[RunResult]] = {"1 connection": [], "8 connections": [], "paced": []}
    for r in range(rounds):
        results["1 connection"].append(
            run_load_blocking("127.0.0.1", port, 1, messages, prefix=f"S{tag}{r}")
        )
        results["8 connections"].append(
            run_load_blocking("127.0.0.1", port, 8, messages // 8, prefix=f"C{tag}{r}")
        )
        results["paced"].append(
            run_load_blocking("127.0.0.1", port, 1, paced, PACED_RATE, prefix=f"P{tag}{r}")
        )
    return {kind: median_run(runs) for kind, runs in results.items()}


def tail(result: RunResult) -> str:
    """The spread of a paced run's ACK latencies: a p99 over 2 ms from an event (a checkpoint)
    shows as a jump between p98 and p99; a broad distribution rises evenly."""
    points = (0.5, 0.9, 0.95, 0.98, 0.99, 0.999)
    shown = ", ".join(f"p{p * 100:g} {result.percentile(p):.2f}" for p in points)
    over = sum(1 for latency in result.latencies if latency > 0.002)
    worst = max(result.latencies, default=0.0) * 1000
    return f"{shown}, max {worst:.2f} ms; {over} of {len(result.latencies)} over 2 ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000, help="per run (default 4000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--db", help="database URL for Crosswalk (default: a fresh SQLite file)")
    parser.add_argument(
        "--paced-messages",
        type=int,
        default=PACED_RATE * 4,
        help=f"per paced run (default {PACED_RATE * 4}); its p99 is the 1%% slowest of them",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SERVERS,
        help="measure only this server (repeat for several): e.g. the floor and the shipped one",
    )
    args = parser.parse_args()
    measured: dict[str, dict[str, RunResult]] = {}
    left: tuple[int, int] = (0, 0)
    with tempfile.TemporaryDirectory() as folder:
        servers = start_servers(folder, args.db, args.only)
        try:
            for number, (name, (port, _)) in enumerate(servers.items()):
                if name == "PACS":
                    continue
                measured[name] = measure(
                    port, str(number), args.messages, args.rounds, args.paced_messages
                )
                if name == SHIPPED:
                    at_end = backlog(shipped_url(folder, args.db))
                    time.sleep(1)
                    left = (at_end, backlog(shipped_url(folder, args.db)))
        finally:
            for _, process in servers.values():
                process.terminate()
                process.wait(timeout=30)
            for leftover in MEMORY_FOLDER.glob("crosswalk-bench-*"):
                shutil.rmtree(leftover, ignore_errors=True)

    size = len(adt_message(0))
    print(
        f"{os.cpu_count()} CPUs; {args.messages} messages of {size} bytes per run; "
        f"median of {args.rounds} rounds"
    )
    for name, results in measured.items():
        for kind, result in results.items():
            label = f"{name}: {kind if kind != 'paced' else f'1 connection at {PACED_RATE} msg/s'}"
            print(result.line(label))
    if FLOOR in measured and SHIPPED in measured:
        floor, shipped = measured[FLOOR], measured[SHIPPED]
        for kind in ("1 connection", "8 connections"):
            print(
                f"{SHIPPED} / {FLOOR}, {kind}: {shipped[kind].rate / floor[kind].rate:.2f}"
                + (" (target >= 0.8)" if kind == "1 connection" else "")
            )
    if SHIPPED in measured:
        print(
            f"{SHIPPED} ACK p99 at {PACED_RATE} msg/s:"
            f" {measured[SHIPPED]['paced'].percentile(0.99):.2f} ms (target <= 2 ms);"
            f" left to route or deliver after its last run: {left[0]}, a second later: {left[1]}"
        )
        print(f"{SHIPPED} ACK latency at {PACED_RATE} msg/s: {tail(measured[SHIPPED]['paced'])}")
    if "crosswalk" not in measured:
        return
    cw = measured["crosswalk"]
    if "python-hl7" in measured:
        base = measured["python-hl7"]
        one = cw["1 connection"].rate / base["1 connection"].rate
        eight = cw["8 connections"].rate / base["8 connections"].rate
        print(
            f"crosswalk / python-hl7: 1 connection {one:.2f}x (target >= 3x), "
            f"8 connections {eight:.2f}x"
        )
    if FLOOR in measured:
        print(
            f"crosswalk (no routes) / {FLOOR}, 1 connection: "
            f"{cw['1 connection'].rate / measured[FLOOR]['1 connection'].rate:.2f}"
        )
    if ON_TMPFS in measured and "python-hl7" in measured:
        memory = measured[ON_TMPFS]["1 connection"].rate
        wait = (1 / cw["1 connection"].rate - 1 / memory) * 1e6
        print(
            f"{ON_TMPFS} (no fsync, not durable) / python-hl7, 1 connection:"
            f" {memory / measured['python-hl7']['1 connection'].rate:.2f}x; the durable commit"
            f" adds {wait:.0f} µs a message"
        )
    if ENCRYPTED in measured:
        sealed = measured[ENCRYPTED]["1 connection"].rate / cw["1 connection"].rate
        print(
            f"{ENCRYPTED} / crosswalk, 1 connection: {sealed:.2f}"
            " (content encrypted at rest; target >= 0.90)"
        )
    p99 = cw["paced"].percentile(0.99)
    print(f"crosswalk ACK p99 at {PACED_RATE} msg/s: {p99:.2f} ms (target <= 2 ms)")


if __name__ == "__main__":
    main()
