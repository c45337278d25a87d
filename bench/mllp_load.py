"""Load generation shared by the benches: realistic ADT messages and an MLLP client that times ACKs."""

from __future__ import annotations

import socket
import ssl
import statistics
import threading
import time
from dataclasses import dataclass

from engine.mllp.framing import Frame, FrameDecoder, encode_frame

ADT_TEMPLATE = (
    "MSH|^~\\&|EPIC|GENHOSP|PACS|RADIOLOGY|20261123101500||ADT^A01^ADT_A01|{cid}|P|2.5.1||||||UNICODE UTF-8\r"
    "EVN|A01|20261123101500|||JSMITH^SMITH^JOHN^^^^^^GENHOSP\r"
    "PID|1||{mrn}^^^GENHOSP^MR~{ssn}^^^SSA^SS~E{mrn}^^^EPI^PI||MÜLLER^HANS^PETER^^DR^^L~MUELLER^HANS^^^^^A||19800304|M||2106-3^White^HL70005|"
    "1200 N ELM ST^APT 4B^SPRINGFIELD^IL^62701^USA^H||(217)555-0100^PRN^PH^^1^217^5550100|(217)555-0199^WPN^PH|EN^English^HL70296|M^Married^HL70002|"
    "CHR^Christian^HL70006|{mrn}001^^^GENHOSP^AN|987-65-4321|||N^Not Hispanic^HL70189\r"
    "PD1|||GENERAL HOSPITAL^^1234|1122334455^JONES^ALICE^^^DR^MD^^NPI\r"
    "NK1|1|MÜLLER^GRETA|SPO^Spouse^HL70063|1200 N ELM ST^APT 4B^SPRINGFIELD^IL^62701^USA|(217)555-0101\r"
    "PV1|1|O|RAD^XR1^01^GENHOSP^^^^^RADIOLOGY||||1122334455^JONES^ALICE^^^DR^MD^^NPI|"
    "5566778899^BROWN^ROBERT^^^DR^MD^^NPI||RAD|||||||1122334455^JONES^ALICE^^^DR^MD^^NPI|OP|V{mrn}^^^GENHOSP^VN|"
    "||||||||||||||||||||||||20261123101000\r"
    "PV2|||^Chest pain, rule out pneumonia\r"
    "OBX|1|NM|29463-7^Body weight^LN||82|kg^kilogram^UCUM|||||F\r"
    "OBX|2|NM|8302-2^Body height^LN||180|cm^centimeter^UCUM|||||F\r"
    "AL1|1|DA|70618^Penicillin^RXNORM|MO|Hives|20100101\r"
    "DG1|1||R07.9^Chest pain, unspecified^I10||20261123|A\r"
    "IN1|1|BCBS123^Blue Cross PPO|60054|BLUE CROSS BLUE SHIELD|PO BOX 1000^^CHICAGO^IL^60601\r"
)


def adt_message(sequence: int, prefix: str = "B") -> bytes:
    """A ~1.5 KB ADT^A01 with 13 segments and a unique control id."""
    cid = f"{prefix}{sequence:012d}"
    mrn = 100000 + sequence % 900000
    # Each MRN its own patient (a shared SSN would make every message update one patient that
    # gathers thousands of identifiers: an MPI no feed produces).
    ssn = f"9{mrn:08d}"
    ssn = f"{ssn[:3]}-{ssn[3:5]}-{ssn[5:]}"
    return ADT_TEMPLATE.format(cid=cid, mrn=mrn, ssn=ssn).encode("utf-8")


@dataclass
class RunResult:
    messages: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000

    def line(self, label: str) -> str:
        return (
            f"{label:<44} {self.rate:9.0f} msg/s   p50 {self.percentile(0.5):6.2f} ms"
            f"   p99 {self.percentile(0.99):6.2f} ms   errors {self.errors}"
        )


def _connection(
    host: str,
    port: int,
    messages: list[bytes],
    latencies: list[float],
    interval: float | None,
    errors: list[int],
    start_at: float,
    tls: ssl.SSLContext | None = None,
) -> None:
    # A blocking socket per sender thread: the least client overhead per message, so the
    # numbers measure the server, and the way most HL7 senders are written.
    with socket.create_connection((host, port)) as plain:
        plain.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = tls.wrap_socket(plain, server_hostname="localhost") if tls else plain
        decoder = FrameDecoder(1 << 24)
        pending: list[bytes] = []
        for index, message in enumerate(messages):
            if interval is not None:
                delay = start_at + index * interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sent = time.perf_counter()
            sock.sendall(encode_frame(message))
            while not pending:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                pending.extend(e.payload for e in decoder.feed(data) if isinstance(e, Frame))
            ack = pending.pop(0)
            latencies.append(time.perf_counter() - sent)
            if b"MSA|AA" not in ack and b"MSA|CA" not in ack:
                errors.append(1)


def run_load_blocking(
    host: str,
    port: int,
    connections: int,
    per_connection: int,
    rate: float | None = None,
    prefix: str = "B",
    tls: ssl.SSLContext | None = None,
) -> RunResult:
    """Send ``per_connection`` messages on each of ``connections`` connections, ACK by ACK.

    With ``rate`` (msg/s over all connections) messages are paced; otherwise each connection
    sends its next message as soon as the previous one is acknowledged.
    """
    batches = [
        [adt_message(c * per_connection + i, f"{prefix}{c}") for i in range(per_connection)]
        for c in range(connections)
    ]
    return send_blocking(host, port, batches, rate, tls)


def send_blocking(
    host: str,
    port: int,
    batches: list[list[bytes]],
    rate: float | None = None,
    tls: ssl.SSLContext | None = None,
) -> RunResult:
    """Send each batch of messages on a connection of its own, ACK by ACK, all at once."""
    latencies: list[float] = []
    errors: list[int] = []
    interval = len(batches) / rate if rate else None
    failures: list[BaseException] = []

    def worker(batch: list[bytes]) -> None:
        try:
            _connection(host, port, batch, latencies, interval, errors, start, tls)
        except BaseException as error:  # reported after the run
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(b,)) for b in batches]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise failures[0]
    return RunResult(sum(len(b) for b in batches), elapsed, latencies, len(errors))


def summary(results: list[RunResult]) -> str:
    rates = [r.rate for r in results]
    return f"{statistics.median(rates):.0f} msg/s (median of {len(rates)})"
