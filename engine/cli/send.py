"""``crosswalk send``: an MLLP client for message files."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from engine.cli.common import console, errors, fail, read_message_files_or_fail
from engine.hl7v2.ack import AckReply, read_ack
from engine.hl7v2.check import examine
from engine.hl7v2.header import Header
from engine.hl7v2.message_file import FileMessage
from engine.mllp.client import MLLPClient, MLLPError
from engine.mllp.tls import MIN_VERSIONS, certificate_problems, client_context


@dataclass(frozen=True)
class SendTLS:
    """``crosswalk send``'s TLS options, as a destination's ``tls:`` names them."""

    ca: Path | None
    cert: Path | None
    key: Path | None
    server_name: str | None
    min_version: str
    insecure_skip_verify: bool


def _context_or_fail(options: SendTLS) -> ssl.SSLContext:
    if options.min_version not in MIN_VERSIONS:
        fail(f"--tls-min-version {options.min_version!r} is not one of 1.2, 1.3")
    if (options.cert is None) != (options.key is None):
        fail("--tls-cert and --tls-key go together")
    problems = certificate_problems(options.cert, options.key, options.ca, server=False)
    if problems:
        fail("; ".join(problems) + "; nothing was sent")
    if options.insecure_skip_verify:
        errors.print("[bold red]warning:[/] the receiver's certificate is not verified")
    return client_context(options)


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) to a pair; raises ValueError with the reason."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def send(
    address: Annotated[str, typer.Argument(help="The receiver, HOST:PORT.")],
    files: Annotated[list[Path], typer.Argument(help="Message files (several messages each).")],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each ACK.")] = 30.0,
    tls: Annotated[
        bool, typer.Option("--tls", help="Speak TLS (the receiver's certificate is verified).")
    ] = False,
    tls_ca: Annotated[
        Path | None,
        typer.Option(help="CA certificate(s) the receiver's must chain to (implies --tls)."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Client certificate, for mutual TLS (implies --tls).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Its private key.")] = None,
    tls_server_name: Annotated[
        str | None, typer.Option(help="The name the receiver's certificate must carry.")
    ] = None,
    tls_min_version: Annotated[
        str, typer.Option(help="The lowest TLS version accepted: 1.2 or 1.3.")
    ] = "1.2",
    insecure_skip_verify: Annotated[
        bool, typer.Option(help="Do not verify the receiver's certificate (tests only).")
    ] = False,
) -> None:
    """Send the messages of FILES over MLLP, one ACK awaited per message.

    Prints one line per message: file:line, control id, MSA-1 and MSA-3. Exits 1 when any answer
    is not AA/CA or does not come in time, 2 when a file cannot be read.
    """
    try:
        host, port = parse_address(address)
    except ValueError as error:
        fail(str(error))
    context = None
    if tls or tls_ca or tls_cert or insecure_skip_verify:
        options = SendTLS(
            tls_ca, tls_cert, tls_key, tls_server_name, tls_min_version, insecure_skip_verify
        )
        context = _context_or_fail(options)
    batches = read_message_files_or_fail(files, "nothing was sent")
    queue = [(batch.path, m) for batch in batches for m in batch.messages]
    failures = asyncio.run(_send_all(host, port, queue, timeout, context, tls_server_name))
    total = len(queue)
    console.print(f"{total - failures} of {total} message(s) acknowledged positively")
    if failures:
        raise typer.Exit(1)


async def _answers(
    client: MLLPClient, header: Header | None, timeout: float
) -> list[AckReply] | None:
    """The acknowledgements a message asked for; None when it asked for none and got none."""
    if header is None or not header.enhanced_mode:
        return [read_ack(await client.read())]
    accept = header.accept_ack_type or "AL"
    application = header.application_ack_type or "NE"
    if accept == "NE" and application == "NE":
        return None
    # With ER (answer only on error) silence is success, so do not wait long for it.
    silence_ok = accept in ("NE", "ER") and application in ("NE", "ER")
    try:
        first = read_ack(await client.read(min(timeout, 2.0) if silence_ok else timeout))
    except MLLPError:
        if silence_ok:
            return None
        raise
    replies = [first]
    if first.code == "CA" and application in ("AL", "SU"):
        replies.append(read_ack(await client.read()))
    return replies


async def _send_all(
    host: str,
    port: int,
    queue: list[tuple[str, FileMessage]],
    timeout: float,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> int:
    failures = 0
    client = MLLPClient(
        host,
        port,
        connect_timeout=timeout,
        ack_timeout=timeout,
        tls=tls,
        server_name=server_name,
    )
    try:
        async with client:
            for index, (path, message) in enumerate(queue):
                header = examine(message.payload).header
                control_id = header.control_id if header else "?"
                line = Text(f"{path}:{message.line}  {control_id}  ")  # codes follow
                try:
                    await client.write(message.payload)
                    replies = await _answers(client, header, timeout)
                except MLLPError as error:
                    line.append("FAILED ", style="bold red").append(str(error))
                    console.print(line, soft_wrap=True)
                    return failures + len(queue) - index
                if replies is None:
                    console.print(line.append("no ACK requested (MSH-15/16)"), soft_wrap=True)
                    continue
                positive = all(reply.positive for reply in replies)
                for number, reply in enumerate(replies):
                    if number:
                        line.append("  ")
                    line.append(reply.code or "??", style="green" if reply.positive else "red")
                    if reply.text:
                        line.append(f" {reply.text}")
                    if reply.error and not reply.positive:
                        line.append(f"  ERR {reply.error}")
                console.print(line, soft_wrap=True)
                failures += not positive
    except MLLPError as error:
        fail(str(error), 1)
    return failures
