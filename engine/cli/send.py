"""``crosswalk send``: an MLLP client for message files."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from engine.cli.common import (
    InsecureSkipVerify,
    TlsCa,
    TlsCert,
    TlsKey,
    TlsMinVersion,
    TlsServerName,
    client_tls_or_fail,
    console,
    fail,
    read_message_files_or_fail,
)
from engine.hl7v2.ack import AckReply, ack_conditions, read_ack
from engine.hl7v2.check import examine
from engine.hl7v2.header import Header
from engine.hl7v2.message_file import FileMessage
from engine.mllp.client import MLLPClient, MLLPError
from engine.mllp.tls import client_context


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
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    tls_min_version: TlsMinVersion = "1.2",
    insecure_skip_verify: InsecureSkipVerify = False,
) -> None:
    """Send the messages of FILES over MLLP, one ACK awaited per message.

    Prints one line per message: file:line, control id, MSA-1 and MSA-3. Exits 1 when any answer
    is not AA/CA or does not come in time, 2 when a file cannot be read.
    """
    try:
        host, port = parse_address(address)
    except ValueError as error:
        fail(str(error))
    options = client_tls_or_fail(
        tls_ca,
        tls_cert,
        tls_key,
        tls_server_name,
        tls_min_version,
        insecure_skip_verify,
        wanted=tls,
    )
    context = client_context(options) if options is not None else None
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
    accept, application = ack_conditions(header)
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
