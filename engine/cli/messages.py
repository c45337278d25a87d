"""``crosswalk messages``: list, search and show stored messages.

These commands display message content (PHI) on purpose; the engine's logs never do.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.text import Text
from sqlalchemy import Engine

from engine.audit import actions
from engine.audit.trail import criteria as recorded
from engine.audit.trail import ref
from engine.cli.auditing import audited
from engine.cli.common import (
    DbOption,
    console,
    fail,
    load_config_or_fail,
    local_time,
    open_store_or_fail,
    parse_when,
)
from engine.cli.tables import WORDS, Column, fit
from engine.hl7v2.ack import answer_in_words
from engine.hl7v2.charset import decode_stored
from engine.hl7v2.escaping import unescape
from engine.hl7v2.header import HeaderError
from engine.hl7v2.paths import delimiters_of, flatten
from engine.pipeline.resend import ResendRefused, wake
from engine.pipeline.resend import resend as resend_message
from engine.routes.router import Router
from engine.store.messages import STATUSES, MessageFilter, find_messages, get_message
from engine.store.queue import deliveries_of
from engine.store.schema import DeliveryState, Message, MessageStatus

app = typer.Typer(help="List, search and show stored messages.", no_args_is_help=True)

Since = Annotated[
    str | None, typer.Option(help="Received at or after: 2026-11-23, 2026-11-23T14:00, or 2h ago.")
]
Until = Annotated[str | None, typer.Option(help="Received before (same forms as --since).")]
TypeOption = Annotated[
    str | None, typer.Option("--type", help="Message type: ADT, ADT^A08, or a pattern: ADT^A0*.")
]
ControlId = Annotated[str | None, typer.Option(help="MSH-10 message control id.")]
Status = Annotated[
    str | None,
    typer.Option(
        help=f"One of: {', '.join(STATUSES)} (queued: a delivery waits; errored: routing failed"
        " or a delivery was set aside)."
    ),
]
SendingApp = Annotated[str | None, typer.Option(help="MSH-3 sending application.")]
SendingFacility = Annotated[str | None, typer.Option(help="MSH-4 sending facility.")]
ListenerOption = Annotated[str | None, typer.Option(help="Listener name.")]
Limit = Annotated[int, typer.Option(help="At most this many messages, newest first.")]
Format = Annotated[Literal["table", "json"], typer.Option("--format", help="Output format.")]


def _filter(
    since: str | None,
    until: str | None,
    message_type: str | None,
    control_id: str | None,
    status: str | None,
    sending_app: str | None,
    sending_facility: str | None,
    listener: str | None,
    text: str | None = None,
) -> MessageFilter:
    if status is not None and status not in STATUSES:
        fail(f"--status {status!r} is not one of {', '.join(STATUSES)}")
    return MessageFilter(
        since=parse_when(since) if since else None,
        until=parse_when(until) if until else None,
        message_type=message_type,
        control_id=control_id,
        status=status,
        sending_application=sending_app,
        sending_facility=sending_facility,
        listener=listener,
        text=text,
    )


_STATUS_STYLE = {
    MessageStatus.REJECTED: "red",
    MessageStatus.ERRORED: "red",
    MessageStatus.FILTERED: "yellow",
    MessageStatus.ROUTED: "green",
}


def _print_list(rows: list[Message], output: str) -> None:
    if output == "json":
        console.print_json(
            json.dumps(
                [
                    {
                        "id": m.id,
                        "received_at": m.received_at.isoformat(),
                        "listener": m.listener,
                        "peer": m.peer,
                        "message_type": m.message_type,
                        "control_id": m.control_id,
                        "sending_application": m.sending_application,
                        "sending_facility": m.sending_facility,
                        "status": m.status,
                        "status_reason": m.status_reason,
                        "ack": m.ack_code,
                    }
                    for m in rows
                ]
            )
        )
        return
    if not rows:
        console.print("no messages match")
        return
    fitted = fit(
        console,
        _LIST_COLUMNS,
        (
            (
                str(m.id),
                local_time(m.received_at),
                m.listener,
                m.message_type,
                m.control_id,
                "/".join(part for part in (m.sending_application, m.sending_facility) if part),
                Text(m.status, style=_STATUS_STYLE.get(m.status, "")),
                m.ack_code,
            )
            for m in rows
        ),
        show_edge=False,
        header_style="bold",
    )
    console.print(fitted.table)
    if fitted.dropped:
        console.print(fitted.note("widen the terminal or use --format json"))


_LIST_COLUMNS = (
    Column("id"),
    Column("received", WORDS),  # date and time on two lines at most, each whole
    Column("listener", drop=2),
    Column("type"),
    Column("control id"),
    Column("from", WORDS, drop=1),
    Column("status"),
    Column("ack", drop=3),
)


@app.command("list")
def list_messages(
    since: Since = None,
    until: Until = None,
    message_type: TypeOption = None,
    control_id: ControlId = None,
    status: Status = None,
    sending_app: SendingApp = None,
    sending_facility: SendingFacility = None,
    listener: ListenerOption = None,
    limit: Limit = 50,
    output: Format = "table",
    db: DbOption = None,
) -> None:
    """List stored messages, newest first."""
    criteria = _filter(
        since, until, message_type, control_id, status, sending_app, sending_facility, listener
    )
    _list(db, actions.MESSAGES_LIST, criteria, limit, output)


def _list(db: str | None, action: str, criteria: MessageFilter, limit: int, output: str) -> None:
    """Find, record (the filters by name, the text only as given) and print."""
    engine = open_store_or_fail(db)
    wanted = recorded(dataclasses.asdict(criteria) | {"limit": limit}, private=("text",))
    with audited(engine, action, criteria=wanted) as audit:
        found = list(find_messages(engine, criteria, limit=limit))
        audit.add("message", *(m.id for m in found))
        _print_list(found, output)


@app.command("search")
def search_messages(
    text: Annotated[
        str, typer.Argument(help="Text to find anywhere in the message (e.g. an MRN).")
    ],
    since: Since = None,
    until: Until = None,
    message_type: TypeOption = None,
    control_id: ControlId = None,
    status: Status = None,
    sending_app: SendingApp = None,
    sending_facility: SendingFacility = None,
    listener: ListenerOption = None,
    limit: Limit = 50,
    output: Format = "table",
    db: DbOption = None,
) -> None:
    """Find messages containing TEXT (with the same filters as list)."""
    criteria = _filter(
        since,
        until,
        message_type,
        control_id,
        status,
        sending_app,
        sending_facility,
        listener,
        text,
    )
    _list(db, actions.MESSAGES_SEARCH, criteria, limit, output)


def _print_fields(title: str, text: str, *, unescaped: bool = False) -> None:
    """Each valued field of ``text`` with its position; ``unescaped``: values as a person reads
    them (``\\F\\`` as ``|``), for an acknowledgement's texts."""
    console.rule(title, align="left")
    try:
        leaves = list(flatten(text))
        delimiters = delimiters_of(text)
    except HeaderError as error:
        console.print(f"(not readable as HL7: {error.problem.text})")
        console.print(Text(text.replace("\r", "\n")))
        return
    current = None
    for label, path, value in leaves:
        if label != current:
            console.print(Text(label, style="bold cyan"))
            current = label
        if unescaped and path not in ("MSH-1", "MSH-2"):
            value = unescape(value, delimiters)
        console.print(Text.assemble(("  " + path.ljust(16), "cyan"), value))


@app.command("show")
def show_message(
    message_id: Annotated[int, typer.Argument(help="The message id (from list or search).")],
    raw: Annotated[bool, typer.Option(help="Print the message as received instead.")] = False,
    db: DbOption = None,
) -> None:
    """Print one message segment by segment with field positions, and the ACK sent for it."""
    engine = open_store_or_fail(db)
    with audited(
        engine,
        actions.MESSAGES_SHOW,
        objects=[ref("message", message_id)],
        criteria=recorded({"raw": raw}),
    ) as audit:
        _show(engine, message_id, raw, audit.refuse)


def _show(engine: Engine, message_id: int, raw: bool, refuse: Callable[[str], None]) -> None:
    message = get_message(engine, message_id)
    if message is None:
        refuse("no such message")
        fail(f"no message with id {message_id}")
    text = decode_stored(message.raw, message.charset)
    console.print(
        Text.assemble(
            (f"Message {message.id}", "bold"),
            f"  {message.message_type}  control id {message.control_id or '-'}\n",
            f"received {local_time(message.received_at)} on listener {message.listener}"
            f" from {message.peer}; {message.size} bytes, charset {message.charset}\n",
            "status ",
            (message.status, _STATUS_STYLE.get(message.status, "")),
            f": {message.status_reason}" if message.status_reason else "",
        )
    )
    if message.size > len(message.raw):
        console.print(f"(only the first {len(message.raw)} bytes were kept)")
    if raw:
        console.print(Text(text.replace("\r", "\n")))
    else:
        _print_fields("message", text)
    if message.ack:
        ack_text = decode_stored(message.ack, message.charset)
        _print_fields(f"acknowledgement sent ({message.ack_code})", ack_text, unescaped=True)
    else:
        console.print("no acknowledgement was sent (enhanced mode asked for none)")
    _print_deliveries(engine, message)


_STATE_STYLE = {
    DeliveryState.DELIVERED: "green",
    DeliveryState.QUEUED: "yellow",
    DeliveryState.ERRORED: "red",
}


def _print_deliveries(engine, message: Message) -> None:  # type: ignore[no-untyped-def]
    deliveries = deliveries_of(engine, message.id)
    if not deliveries:
        return
    console.rule("deliveries", align="left")
    for delivery in deliveries:
        when = local_time(delivery.updated_at) if delivery.updated_at else "-"
        line = Text.assemble(
            f"#{delivery.id} {delivery.route} → {delivery.destination}"
            + (f" (partition {delivery.partition})" if delivery.partition else "")
            + ": ",
            (delivery.state, _STATE_STYLE.get(delivery.state, "")),
            f", {delivery.attempts} attempt(s), last change {when}",
        )
        if delivery.last_error:
            line.append(f"\n    last error: {delivery.last_error}", style="red")
        console.print(line, soft_wrap=True)
        if delivery.ack:
            console.print(Text(f"    answer: {answer_in_words(delivery.ack)}"), soft_wrap=True)


@app.command("resend")
def resend(
    message_ids: Annotated[list[int], typer.Argument(help="Message ids (from list or search).")],
    config: Annotated[Path, typer.Option(help="Configuration folder.")] = Path("routes"),
    db: DbOption = None,
) -> None:
    """Route messages again with the current routes and queue what they produce.

    A running engine sends them within a second, after what is already queued.
    """
    engine_config = load_config_or_fail(config)
    engine = open_store_or_fail(db)
    with audited(engine, actions.MESSAGES_RESEND, config=engine_config) as audit:
        audit.add("message", *message_ids)
        _resend(engine, Router(engine_config), message_ids, audit.refuse)


def _resend(
    engine: Engine, router: Router, message_ids: list[int], refuse: Callable[[str], None]
) -> None:
    touched: set[str] = set()
    for message_id in message_ids:
        try:
            done = resend_message(engine, router, message_id)
        except ResendRefused as refused:
            refuse(refused.brief)
            fail(str(refused))
        touched |= set(done.destinations)
        targets = ", ".join(done.destinations) or "nowhere"
        ids = done.delivery_ids
        console.print(
            f"message {message_id}: {done.status}; queued for {targets}"
            + (f" (deliveries {', '.join(map(str, ids))})" if ids else ""),
            soft_wrap=True,
        )
        if not ids:
            console.print(Text(f"    {done.reason}", style="yellow"), soft_wrap=True)
    wake(engine, touched)
