"""Memory bench: the engine's peak memory while large messages pile up behind an absent PACS.

`crosswalk serve` runs with the shipped configuration (routes/: the PACS routes and the MPI
feed) on a fresh SQLite store, the PACS not listening, so every message is stored, routed and
queued, and nothing leaves. One connection sends --messages ADT^A08 of --size bytes each (a Z
segment pads them). When the last one is routed, the bench reads the peak resident memory
(VmHWM) of the engine and of its routing process.

The engine's memory must be bounded by bytes, not by message count: the peak with 3x more
messages should hardly move. Each run prints the idle figure of the same engine (after start)
as the baseline.

    python bench/memory.py [--messages 100 300 1000] [--size 1000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.mllp.framing import Frame, FrameDecoder, encode_frame  # noqa: E402
from engine.testing import free_port, wait_for_port  # noqa: E402


def big_adt(sequence: int, size: int) -> bytes:
    head = (
        "MSH|^~\\&|EPIC|GENHOSP|PACS|RADIOLOGY|20261204101500||ADT^A08^ADT_A01|"
        f"MEM{sequence:08d}|P|2.5.1||||||UNICODE UTF-8\r"
        "EVN|A08|20261204101500\r"
        f"PID|1||{100000 + sequence}^^^GENHOSP^MR||DOE^JANE||19800304|F\r"
        "PV1|1|O\r"
        "ZPD|1|"
    ).encode()
    return head + b"X" * max(0, size - len(head) - 1) + b"\r"


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def current_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in found.read_text().split()] if found.exists() else []


def send(port: int, messages: int, size: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        decoder = FrameDecoder(1 << 16)
        for sequence in range(messages):
            sock.sendall(encode_frame(big_adt(sequence, size)))
            while not any(isinstance(e, Frame) for e in decoder.feed(sock.recv(65536))):
                pass


def run(messages: int, size: int) -> tuple[int, int, int, float]:
    folder = Path(tempfile.mkdtemp(prefix="crosswalk-memory-"))
    try:
        port, pacs = free_port(), free_port()
        db = f"sqlite:///{folder}/crosswalk.db"
        env = dict(os.environ, CROSSWALK_PORT=str(port), PACS_PORT=str(pacs))
        env["CROSSWALK_LOG_LEVEL"] = "WARNING"
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve", "--config", str(ROOT / "routes"), "--db", db],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, engine, timeout=60)
            time.sleep(0.5)
            idle = current_kib(engine.pid)
            started = time.perf_counter()
            send(port, messages, size)
            store = create_engine(db)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                with store.connect() as connection:
                    waiting = connection.execute(
                        text("SELECT count(*) FROM messages WHERE status = 'received'")
                    ).scalar()
                if not waiting:
                    break
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            time.sleep(1.0)  # the MPI worker and delivery windows fill after routing
            store.dispose()
            child = max((peak_kib(c) for c in children(engine.pid)), default=0)
            return idle, peak_kib(engine.pid), child, elapsed
        finally:
            engine.terminate()
            engine.wait(60)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--size", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"ADT^A08 of {args.size:,} bytes, shipped routes, PACS absent (all queued)")
    print(f"{'messages':>9} {'volume':>9} {'idle':>9} {'engine peak':>12} {'routing peak':>13}")
    for count in args.messages:
        idle, engine, child, _ = run(count, args.size)
        volume = count * args.size / 2**20
        print(
            f"{count:>9} {volume:>7.0f}MiB {idle / 1024:>7.0f}MiB {engine / 1024:>10.0f}MiB"
            f" {child / 1024:>11.0f}MiB"
        )


if __name__ == "__main__":
    main()
