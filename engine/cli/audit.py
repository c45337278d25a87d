"""``crosswalk audit``: read the audit trail, and verify that no row was changed, removed or
inserted.

Reading the trail is itself recorded (``audit.list``, ``audit.verify``).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer
from rich.text import Text

from engine.audit import actions
from engine.audit.tables import Outcome
from engine.audit.trail import HASHED, AuditRecord, EventFilter, events
from engine.audit.trail import criteria as recorded
from engine.audit.verify import verify
from engine.cli.auditing import audited
from engine.cli.common import (
    DbOption,
    console,
    fail,
    local_time,
    open_store_or_fail,
    parse_when,
    write_records,
)
from engine.cli.tables import TEXT, WORDS, Column, fit

app = typer.Typer(
    help="The audit trail of operator actions and PHI displays: list, verify.",
    no_args_is_help=True,
)

COLUMNS = (*HASHED, "hash")
"""What an export holds of each event: every field the hash covers, and the hash."""
_OUTCOME_STYLE = {Outcome.OK: "green", Outcome.REFUSED: "yellow", Outcome.ERROR: "red"}


@app.command("list")
def list_events(
    user: Annotated[
        str | None, typer.Option("--user", help="Only this person's (actor or OS user).")
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(help="Only this action (review.approve), or a part's (review: review.*)."),
    ] = None,
    object_: Annotated[
        str | None,
        typer.Option(
            "--object", help="Only events about message:12, or any message, or any id 12."
        ),
    ] = None,
    outcome: Annotated[
        str | None, typer.Option(help=f"Only this outcome: {', '.join(Outcome.ALL)}.")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Recorded at or after: 2026-11-23, 2026-11-23T14:05, 7d.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Recorded before (same forms).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the newest N.")] = None,
    output: Annotated[
        Literal["table", "csv", "json"], typer.Option("--format", help="Output format.")
    ] = "table",
    db: DbOption = None,
) -> None:
    """Audit events, oldest first: when, who (and the OS account), from where, what, outcome."""
    if outcome is not None and outcome not in Outcome.ALL:
        fail(f"--outcome {outcome!r} is not one of {', '.join(Outcome.ALL)}")
    wanted = EventFilter(
        user=user,
        action=action,
        object=object_,
        outcome=outcome,
        since=parse_when(since) if since else None,
        until=parse_when(until) if until else None,
        limit=limit,
    )
    store = open_store_or_fail(db)
    criteria = recorded(
        {
            "user": user,
            "action": action,
            "object": object_,
            "outcome": outcome,
            "since": since,
            "until": until,
            "limit": limit,
            "format": output,
        }
    )
    with audited(store, actions.AUDIT_LIST, criteria=criteria) as audit:
        with store.connect() as connection:
            found = events(connection, wanted)
        audit.detail = f"{len(found)} event(s)"
        _print(found, output)


_TABLE_COLUMNS = (
    Column("id"),
    Column("when", WORDS),
    Column("who", WORDS, drop=2),
    Column("from", WORDS, drop=1),
    Column("action"),
    Column("objects", TEXT),
    Column("criteria", TEXT, drop=3),
    Column("outcome", TEXT),
)


def _print(found: list[AuditRecord], output: str) -> None:
    if output == "json":
        write_records([event.as_dict() for event in found], "json", COLUMNS)
        return
    if output == "csv":
        records = []
        for event in found:
            record = event.as_dict()
            record["objects"] = " ".join(event.objects)
            record["criteria"] = json.dumps(event.criteria, ensure_ascii=False, sort_keys=True)
            records.append(record)
        write_records(records, "csv", COLUMNS)
        return
    rows = []
    for event in found:
        who = event.actor if event.actor == event.os_user else f"{event.actor} ({event.os_user})"
        where = " ".join(p for p in (event.host, event.terminal, event.remote_address) if p)
        outcome = Text(event.outcome, style=_OUTCOME_STYLE.get(event.outcome, ""))
        if event.detail:
            outcome.append(f": {event.detail}", style="")
        rows.append(
            (
                str(event.id),
                local_time(event.recorded_at),
                who,
                where,
                event.action,
                " ".join(event.objects),
                " ".join(f"{k}={v}" for k, v in sorted(event.criteria.items())),
                outcome,
            )
        )
    fitted = fit(console, _TABLE_COLUMNS, rows, show_edge=False, header_style="bold")
    console.print(fitted.table)
    if fitted.dropped:
        console.print(fitted.note("widen the terminal or use --format csv"))
    console.print(f"{len(found)} event(s)")


def _anchor(text: str) -> tuple[int, str]:
    number, _, digest = text.partition(":")
    if not number.isdigit() or len(digest) != 64:
        raise typer.BadParameter(f"{text!r} is not ID:HASH (the hash: 64 hex digits)")
    return int(number), digest.lower()


@app.command("verify")
def verify_trail(
    anchor: Annotated[
        str | None,
        typer.Option(
            help="ID:HASH of a row noted earlier (from verify, or the syslog collector): it must"
            " still be there, unchanged (catches rows cut off the end)."
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Check the chain: every row's hash, every link, no id missing.

    Exit status 0 when intact; 1 naming each row changed, removed or inserted.
    """
    anchored = _anchor(anchor) if anchor else None
    store = open_store_or_fail(db)
    with audited(store, actions.AUDIT_VERIFY, criteria=recorded({"anchor": anchor})) as audit:
        with store.connect() as connection:
            result = verify(connection, anchor=anchored)
        if result.intact:
            audit.detail = f"intact: {result.rows} row(s)"
        else:
            rows = sorted({finding.row for finding in result.findings})
            audit.detail = "broken at row(s) " + ", ".join(map(str, rows[:50]))
    if not result.intact:
        for finding in result.findings:
            console.print(Text(str(finding), style="red"), soft_wrap=True)
        console.print(
            f"{len(result.findings)} problem(s) in {result.rows} row(s); the trail is not intact"
        )
        raise typer.Exit(1)
    if result.rows == 0:
        console.print("the audit trail is empty")
        return
    console.print(
        f"intact: {result.rows} row(s), 1 to {result.last_id}; the last row's hash is"
        f" {result.last_hash} (keep it elsewhere: `--anchor {result.last_id}:HASH` checks it"
        " later)",
        soft_wrap=True,
    )
