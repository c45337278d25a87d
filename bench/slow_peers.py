"""Slow, greedy and hostile peers bench: a healthy feed's throughput and ACK latency with and
without each attack, on one engine, in the same run.

`crosswalk serve` (SQLite, no routes, default listener: max_connections 64, idle 3600 s, read
30 s) serves a healthy sender (one connection, send and wait for the ACK, for --seconds) while
an attacker process runs one of:

- ``idle``: --peers connections that send nothing, reconnecting whenever they are closed;
- ``trickle``: --peers connections that open a frame and send one byte a second, reconnecting;
- ``hostile``: 4 connections sending hostile frames (bad headers, NULs, wrong charsets, bad
  escapes, oversize, garbage between frames) as fast as they are answered.

Printed per scenario: healthy msg/s, p50 and p99 ms, and their ratio to the quiet run; for
``hostile``, frames answered and rejected rows stored (each must have its reason).

    python bench/slow_peers.py [--seconds 8] [--peers 300]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from engine.mllp.framing import Frame, FrameDecoder, encode_frame  # noqa: E402
from engine.store.database import open_store  # noqa: E402
from engine.store.schema import Message  # noqa: E402
from engine.testing import Peer, free_port, wait_for_port  # noqa: E402

HEALTHY = (
    "MSH|^~\\&|EPIC|GENHOSP|PACS|RADIOLOGY|20261123101500||ADT^A01^ADT_A01|{id}|P|2.5.1\r"
    "EVN|A01|20261123101500\rPID|1||123456^^^GENHOSP^MR||DOE^JANE||19800304|F\rPV1|1|O\r"
)
HOSTILE = [
    b"\x00\x00\x00",
    b"MSH",
    b"MSH|^~\\&|A|B|C|D|1||ADT^A01|H{n}|P|2.5.1||||||8859/\x001\r",
    b"MSH|^~\\&|A|B|C|D|1|||H{n}|P|2.5\r",
    b"MSH|^~\\&|A|B|C|D|1||ADT^A01|H{n}|P|2.5.1||||||UTF-16\r",
    b"MSH|^~\\&|A|B|C|D|1||ADT^A01|H{n}|P|2.5.1||||||EBCDIC\r",
    b"MSH|^~\\&|A|B|C|D|1||ADT^A01|H{n}|P|2.5.1\rPID|1||\xff\xfe\xfd\r",
    b"\xef\xbb\xbfMSH|^~\\&|A|B|C|D|1||ADT^A01||P|2.5\r",
    b"FHS|^~\\&|A\rBHS|^~\\&\r",
    b"MSH|12345|A|B\r",
]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def healthy_feed(port: int, seconds: float, prefix: str) -> tuple[float, float, float]:
    """One sequential connection for ``seconds``: msg/s, p50 ms, p99 ms."""
    latencies: list[float] = []
    with Peer(port, timeout=30) as peer:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            payload = HEALTHY.format(id=f"{prefix}{len(latencies):06d}").encode()
            sent = time.perf_counter()
            peer.exchange(payload)
            latencies.append(time.perf_counter() - sent)
        elapsed = time.perf_counter() - started
    return (
        len(latencies) / elapsed,
        statistics.median(latencies) * 1000,
        percentile(latencies, 0.99) * 1000,
    )


async def _idle(port: int, until: float, trickle: bool) -> int:
    """Hold a connection (trickling a frame a byte a second); reconnect when closed."""
    connections = 0
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        connections += 1
        try:
            if trickle:
                writer.write(b"\x0bMSH|")
            while time.monotonic() < until:
                if trickle:
                    writer.write(b"x")
                    await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(100), 1.0) == b"":
                        break
                except TimeoutError:
                    pass
        except OSError:
            pass
        finally:
            writer.close()
        await asyncio.sleep(0.1)
    return connections


async def _hostile(port: int, until: float, seed: int) -> tuple[int, int]:
    """Send hostile frames (and garbage between them); count frames sent and answers."""
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    decoder = FrameDecoder(1 << 20)
    sent = answered = 0
    while time.monotonic() < until:
        if rng.random() < 0.1:
            payload = b"MSH|^~\\&|A|B|C|D|1||ADT^A01|BIG|P|2.5\rOBX|" + b"x" * (2 << 20)
        elif rng.random() < 0.2:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
            payload = payload.replace(b"\x0b", b"").replace(b"\x1c", b"")
        else:
            payload = rng.choice(HOSTILE).replace(b"{n}", str(sent).encode())
        noise = rng.choice([b"", b"\r\n", b"junk between frames"])
        writer.write(noise + encode_frame(payload))
        sent += 1
        while answered < sent:
            data = await asyncio.wait_for(reader.read(65536), 30)
            if not data:
                raise ConnectionError("the engine closed a hostile connection")
            answered += sum(isinstance(e, Frame) for e in decoder.feed(data))
    writer.close()
    return sent, answered


def attack(
    port: int, kind: str, peers: int, seconds: float, results: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    async def run() -> object:
        until = time.monotonic() + seconds
        if kind == "hostile":
            counts = await asyncio.gather(*(_hostile(port, until, seed) for seed in range(4)))
            return [sum(c[0] for c in counts), sum(c[1] for c in counts)]
        connections = await asyncio.gather(
            *(_idle(port, until, kind == "trickle") for _ in range(peers))
        )
        return [sum(connections)]

    figures = asyncio.run(run())
    results.put({"counts": figures, "attacker cpu s": round(time.process_time(), 1)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--peers", type=int, default=300)
    parser.add_argument(
        "--rejections-per-second",
        type=float,
        default=None,
        help="the listener's rejection budget (default: the engine's; 0: none, as before it)",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="crosswalk-slow-"))
    db = folder / "cw.db"
    port = free_port()
    config = folder / "routes"
    config.mkdir()
    budget = args.rejections_per_second
    (config / "listener.yaml").write_text(
        "listeners:\n  bench:\n    port: 2575\n"
        + (f"    rejections_per_second: {budget}\n" if budget is not None else "")
    )
    engine = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--config",
            str(config),
        ],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "serve.log").open("wb"),
    )
    try:
        wait_for_port(port, engine)
        healthy_feed(port, 1.0, "WARM")
        quiet = healthy_feed(port, args.seconds, "Q")
        print(
            f"{'scenario':<34} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'x msg/s':>8} {'x p99':>7}"
        )
        print(f"{'quiet':<34} {quiet[0]:>8.0f} {quiet[1]:>8.2f} {quiet[2]:>8.2f}")
        quiet_p99s = [quiet[2]]
        attacked_p99s: dict[str, float] = {}
        for kind in ("idle", "trickle", "hostile"):
            results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
            attacker = multiprocessing.Process(
                target=attack, args=(port, kind, args.peers, args.seconds + 3, results)
            )
            attacker.start()
            time.sleep(2.5)  # the attack is under way (slots taken, grace passed)
            rate, p50, p99 = healthy_feed(port, args.seconds, kind[0].upper())
            attacked = results.get(timeout=120)
            attacker.join(30)
            label = f"{kind} ({args.peers} peers)" if kind != "hostile" else "hostile (4 conns)"
            print(
                f"{label:<34} {rate:>8.0f} {p50:>8.2f} {p99:>8.2f}"
                f" {rate / quiet[0]:>8.2f} {p99 / quiet[2]:>7.2f}   {attacked}"
            )
            attacked_p99s[kind] = p99
            again = healthy_feed(port, 2.0, f"R{kind[0]}")
            quiet_p99s.append(again[2])
            print(f"{'  quiet again':<34} {again[0]:>8.0f} {again[1]:>8.2f} {again[2]:>8.2f}")
        # The quiet p99 itself varies from one quiet run to the next (1.4-2.7 ms seen in one
        # run): the median of all of them is a steadier baseline than the first alone.
        baseline = statistics.median(quiet_p99s)
        print(
            f"x p99 against the median quiet p99 ({baseline:.2f} ms of {len(quiet_p99s)} quiet"
            " runs): "
            + ", ".join(f"{kind} {p99 / baseline:.2f}" for kind, p99 in attacked_p99s.items())
        )
        assert engine.poll() is None, "the engine died"
    finally:
        engine.terminate()
        engine.wait(30)
    store = open_store(f"sqlite:///{db}")
    with store.connect() as connection:
        rejected = connection.execute(
            select(func.count()).where(Message.status == "rejected")
        ).scalar_one()
        no_reason = connection.execute(
            select(func.count()).where(Message.status == "rejected", Message.status_reason == "")
        ).scalar_one()
    print(f"rejected rows stored: {rejected} (without a reason: {no_reason})")


if __name__ == "__main__":
    main()
