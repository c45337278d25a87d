"""TLS bench: what MLLP over TLS costs, beside plain TCP, on one engine in the same run.

`crosswalk serve` runs with two listeners and no routes (SQLite, the durable default): `plain`
and `tls` (mutual TLS, certificates from a test CA made for the run). The same client measures
both: one sequential connection (send, wait for the ACK), 8 connections, and the handshake
(connect, TLS handshake with client certificate, close), so the ratio TLS/plain is the cost.

    python bench/tls.py [--messages 4000] [--rounds 3] [--handshakes 200]
"""

from __future__ import annotations

import argparse
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from mllp_load import run_load_blocking  # noqa: E402

from engine.testing import free_port, wait_for_port  # noqa: E402
from tests.certificates import Authority  # noqa: E402


def handshakes(port: int, context: ssl.SSLContext | None, count: int) -> float:
    """Median milliseconds to connect (and complete the TLS handshake) and close."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as plain:
            if context is not None:
                with context.wrap_socket(plain, server_hostname="localhost"):
                    pass
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--handshakes", type=int, default=200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="crosswalk-tls-"))
    ca = Authority(folder / "tls")
    server = ca.issue("crosswalk.hospital.org", file="server")
    client = ca.issue("ris.hospital.org", server=False, file="client")
    plain_port, tls_port = free_port(), free_port()
    config = folder / "routes"
    config.mkdir()
    (config / "listeners.yaml").write_text(
        f"listeners:\n  plain:\n    port: {plain_port}\n  tls:\n    port: {tls_port}\n"
        f"    tls: {{cert: {server.cert}, key: {server.key}, client_ca: {ca.cert}}}\n"
    )
    engine = subprocess.Popen(
        [
            *(sys.executable, "-m", "engine", "serve", "--config", str(config)),
            *("--db", f"sqlite:///{folder}/crosswalk.db", "--log-level", "WARNING"),
        ],
        cwd=folder,
    )
    context = ssl.create_default_context(cafile=ca.cert)
    context.load_cert_chain(client.cert, client.key)
    try:
        wait_for_port(plain_port, engine, timeout=60)
        wait_for_port(tls_port, engine, timeout=60)
        print(f"{'':<28}{'plain':>22}{'TLS':>22}{'TLS/plain':>11}")
        for label, connections in (("1 connection", 1), ("8 connections", 8)):
            rates: dict[str, list[float]] = {"plain": [], "tls": []}
            p99: dict[str, list[float]] = {"plain": [], "tls": []}
            for round_ in range(args.rounds):
                for name, port, tls in (
                    ("plain", plain_port, None),
                    ("tls", tls_port, context),
                ):
                    result = run_load_blocking(
                        "127.0.0.1",
                        port,
                        connections,
                        args.messages // connections,
                        prefix=f"{name}{connections}r{round_}",
                        tls=tls,
                    )
                    rates[name].append(result.rate)
                    p99[name].append(result.percentile(0.99))
            plain, secure = (statistics.median(rates[n]) for n in ("plain", "tls"))
            print(
                f"{label:<28}{plain:>12.0f} msg/s{'':>4}{secure:>12.0f} msg/s{'':>4}"
                f"{secure / plain:>9.2f}x"
            )
            p_plain, p_tls = (statistics.median(p99[n]) for n in ("plain", "tls"))
            print(f"{'  ACK p99':<28}{p_plain:>14.2f} ms{'':>5}{p_tls:>14.2f} ms")
        tcp = handshakes(plain_port, None, args.handshakes)
        tls_ms = handshakes(tls_port, context, args.handshakes)
        print(f"{'connect (+ TLS handshake)':<28}{tcp:>14.2f} ms{'':>5}{tls_ms:>14.2f} ms")
    finally:
        engine.terminate()
        engine.wait(30)


if __name__ == "__main__":
    main()
