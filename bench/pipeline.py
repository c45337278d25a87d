"""End-to-end benchmark: senders → Crosswalk (durable store, sample routes) → a PACS receiver.

Every message goes through the shipped routes/adt-to-pacs.yaml (identifier rewrite through a
mapping table, name normalisation, segment deletion) and is delivered over MLLP to
bench/pacs_receiver.py. Senders are threads with blocking sockets, each waiting for its ACK.
The run ends when the receiver has every message; then order is checked per feed and per
patient.

    python bench/pipeline.py [--messages 8000] [--db URL] [--partitions 0] [--without-mpi]
                             [--no-routing-process]

The shipped configuration also feeds every ADT to the master patient index (routes/mpi-feed.yaml,
applied by the MPI worker in the same process); ``--without-mpi`` leaves that route out.

Also prints the per-message cost of routing with the sample routes, measured in-process.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mllp_load import RunResult, adt_message, run_load_blocking

from engine.config.loader import load_config
from engine.routes.router import Router
from engine.testing import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def make_config(folder: Path, partitions: int, mpi: bool = True) -> Path:
    """The shipped routes, with the PACS destination partitioned if asked (and without the
    route that feeds the MPI, if asked: the PACS routes alone)."""
    config = folder / "routes"
    config.mkdir()
    for path in (ROOT / "routes").glob("*.yaml"):
        if path.name == "mpi-feed.yaml" and not mpi:
            continue
        text = path.read_text()
        if path.name == "endpoints.yaml" and partitions:
            text = text.replace(
                "    on_nak: stop",
                f"    on_nak: stop\n    partition_by: PID-3.1\n    partitions: {partitions}",
            )
        (config / path.name).write_text(text)
    return config


def routing_cost(samples: int = 3000) -> tuple[float, float]:
    """µs per message to route a bench ADT with the sample routes, and with a bare route."""
    router = Router(load_config(ROOT / "routes", {}))
    messages = [adt_message(i) for i in range(samples)]
    start = time.perf_counter()
    for message in messages:
        router.route(message, "UNICODE UTF-8", "ehr")
    sample = (time.perf_counter() - start) / samples * 1e6
    with tempfile.TemporaryDirectory() as folder:
        bare = Path(folder) / "routes"
        bare.mkdir()
        (bare / "a.yaml").write_text(
            "listeners:\n  ehr: {port: 0}\ndestinations:\n  pacs: {host: h, port: 1}\n"
            "routes:\n  all:\n    source: ehr\n    destinations: [pacs]\n"
        )
        plain = Router(load_config(bare, {}))
        start = time.perf_counter()
        for message in messages:
            plain.route(message, "UNICODE UTF-8", "ehr")
        bare_cost = (time.perf_counter() - start) / samples * 1e6
    return sample, bare_cost


TARGET_RATE = 4000
"""Messages a second delivered end to end by 8 feeds (issue 15)."""


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (Linux); None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process has used so far; 0 if it is gone."""
    fields = _stat(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the engine's routing process)."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and int(fields[1]) == pid
    ]


class CpuMeter:
    """CPU time each process of the run spends, for a per-message account of where it goes:
    two cores give at most 2 s of CPU a second, so 8 feeds at TARGET_RATE msg/s leave
    2 / TARGET_RATE s (500 µs) a message for the engine, its routing process, the PACS
    receiver and the senders together."""

    def __init__(self, engine: int, receiver: int) -> None:
        self.engine, self.receiver = engine, receiver
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "engine": cpu_seconds(self.engine),
            "routing process": sum(cpu_seconds(p) for p in children_of(self.engine)),
            "PACS receiver": cpu_seconds(self.receiver),
            "senders": own.ru_utime + own.ru_stime,
        }

    def line(self, messages: int) -> str:
        end = self._read()
        used = {name: max(0.0, end[name] - self.start[name]) for name in end}
        parts = ", ".join(f"{name} {used[name] / messages * 1e6:.0f}" for name in used)
        total = sum(used.values()) / messages * 1e6
        budget = 2 / TARGET_RATE * 1e6 if os.cpu_count() == 2 else None
        allowed = f" (2 cores at {TARGET_RATE:,} msg/s allow {budget:.0f})" if budget else ""
        return f"  CPU µs a message: {parts}; in all {total:.0f}{allowed}"


def run(
    feeds: int,
    per_feed: int,
    db: str | None,
    partitions: int,
    mpi: bool = True,
    serve_options: tuple[str, ...] = (),
) -> None:
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        config = make_config(folder, partitions, mpi)
        pacs_port, port = free_port(), free_port()
        arrivals_file = folder / "arrivals.txt"
        receiver = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "pacs_receiver.py"),
                str(pacs_port),
                str(arrivals_file),
            ],
            stdout=subprocess.DEVNULL,
        )
        env = dict(
            os.environ,
            CROSSWALK_LOG_LEVEL="WARNING",
            PACS_PORT=str(pacs_port),
            CROSSWALK_PORT=str(port),
            CROSSWALK_MAPPINGS=str(ROOT / "mappings"),
        )
        engine = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine",
                "serve",
                "--config",
                str(config),
                "--db",
                db or f"sqlite:///{folder}/bench.db",
                *serve_options,
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            wait_for_port(pacs_port, receiver)
            wait_for_port(port, engine)
            run_load_blocking("127.0.0.1", port, 1, 200, prefix="WARM")
            total = feeds * per_feed
            meter = CpuMeter(engine.pid, receiver.pid)
            sent_at = time.time()
            result: list[RunResult] = []
            thread = threading.Thread(
                target=lambda: result.append(
                    run_load_blocking("127.0.0.1", port, feeds, per_feed, prefix="F")
                )
            )
            thread.start()
            thread.join()
            acked_at = time.time()
            # Wait until the receiver has everything (it writes its list when stopped; poll
            # Crosswalk's queue through the store instead of the receiver to avoid that).
            deadline = time.time() + 120
            delivered_at = None
            cpu = "  CPU µs a message: not measured (the queue never emptied)"
            while time.time() < deadline:
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "engine",
                        "messages",
                        "list",
                        "--status",
                        "queued",
                        "--db",
                        db or f"sqlite:///{folder}/bench.db",
                        "--format",
                        "json",
                        "--limit",
                        "1",
                    ],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if done.stdout.strip() in ("[]", ""):
                    delivered_at = time.time()
                    cpu = meter.line(total)
                    break
                time.sleep(0.2)
        finally:
            engine.send_signal(signal.SIGTERM)
            engine.wait(60)
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(30)
        lines = [line.split() for line in arrivals_file.read_text().splitlines()]
    arrivals = [(float(t), cid, pid) for t, _, cid, pid in lines if cid.startswith("F")]
    ingest = result[0]
    last_arrival = max(t for t, _, _ in arrivals)
    e2e_rate = len(arrivals) / (last_arrival - sent_at)
    label = f"{feeds} feed(s)" + (f", {partitions} partitions" if partitions else "")
    print(
        f"{label}: {total} messages; senders acknowledged at {ingest.rate:.0f} msg/s"
        f" (ACK p50 {ingest.percentile(0.5):.2f} ms, p99 {ingest.percentile(0.99):.2f} ms);"
        f" delivered end to end at {e2e_rate:.0f} msg/s"
        f" (last delivery {last_arrival - acked_at:+.2f}s after the last ACK)"
    )
    unique = {cid for _, cid, _ in arrivals}
    print(
        f"  received {len(arrivals)} deliveries, {len(unique)} distinct, of {total} sent;"
        f" queue empty: {delivered_at is not None}"
    )
    # Order: per feed (the prefix F<feed>) when not partitioned, per patient always.
    by_feed: dict[str, list[str]] = {}
    by_patient: dict[str, list[str]] = {}
    for _, cid, pid in arrivals:
        by_feed.setdefault(cid[:2], []).append(cid)
        by_patient.setdefault(pid, []).append(cid)
    feed_ok = all(ids == sorted(ids) for ids in by_feed.values())
    patient_ok = all(ids == sorted(ids) for ids in by_patient.values())
    print(f"  in order per feed: {feed_ok}; per patient: {patient_ok}")
    print(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--db")
    parser.add_argument("--partitions", type=int, default=0)
    parser.add_argument(
        "--without-mpi", action="store_true", help="leave out the route feeding the MPI"
    )
    parser.add_argument(
        "--no-routing-process",
        action="store_true",
        help="route on the engine's event loop (crosswalk serve --no-routing-process)",
    )
    args = parser.parse_args()
    options = ("--no-routing-process",) if args.no_routing_process else ()
    sample, bare = routing_cost()
    print(f"{os.cpu_count()} CPUs; messages of {len(adt_message(0))} bytes")
    print(
        f"routing cost per message: sample routes {sample:.0f} µs, pass-through route"
        f" {bare:.0f} µs (transforms {sample - bare:.0f} µs)"
    )
    for feeds, messages in ((1, args.messages // 4), (8, args.messages // 8)):
        run(feeds, messages, args.db, args.partitions, not args.without_mpi, options)


if __name__ == "__main__":
    main()
