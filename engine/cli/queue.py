"""``crosswalk queue``: the per-destination delivery queues — status, pause, resume, retry.

These work on the store, so they act on a running engine (it notices within a second) and on
a stopped one alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text
from sqlalchemy import Engine

from engine.audit import actions
from engine.audit.trail import ref
from engine.cli.auditing import audited
from engine.cli.common import DbOption, console, fail, open_store_or_fail
from engine.cli.tables import TEXT, WORDS, Column, fit
from engine.config.loader import load_config
from engine.pipeline.mpi_destination import MPI
from engine.settings import ConfigError
from engine.store.database import space_problem
from engine.store.queue import (
    requeue_errored,
    routing_backlog,
    set_control,
    stored_destinations,
    summarize,
)

app = typer.Typer(help="Delivery queues: status, pause, resume, retry.", no_args_is_help=True)

Destination = Annotated[str, typer.Argument(help="The destination's name.")]


def _configured(folder: Path) -> list[str]:
    """The destinations and merge targets a configuration names (none when it is broken)."""
    try:
        config = load_config(folder)
    except ConfigError:
        return []
    return [*config.destinations, *config.review.merge_targets]


Config = Annotated[Path, typer.Option(help="Configuration folder, for the names.")]


def _known_or_fail(engine: Engine, destination: str, config: Path) -> None:
    """Refuse a name that is neither configured nor in the store (a typo must not be
    answered "paused"), listing the names there are."""
    known = set(_configured(config)) | stored_destinations(engine) | {MPI}
    if destination not in known:
        fail(
            f"no destination {destination!r}; the destinations are: {', '.join(sorted(known))}",
            1,
        )


def _age(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    seconds = int((datetime.now(UTC) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _due(moment: datetime | None) -> str:
    """When the next try is due: ``in 4m``, ``now``, or ``-`` (no failure pending)."""
    if moment is None:
        return "-"
    seconds = int((moment - datetime.now(UTC)).total_seconds())
    if seconds <= 0:
        return "now"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"in {seconds // size}{unit}"
    return f"in {seconds}s"


@app.command("status")
def status(
    destination: Annotated[
        str | None, typer.Argument(help="One destination (default all).")
    ] = None,
    config: Annotated[Path, typer.Option(help="Configuration folder, for the names.")] = Path(
        "routes"
    ),
    db: DbOption = None,
) -> None:
    """Queued, set-aside and delivered counts, the oldest waiting message, pause state."""
    engine = open_store_or_fail(db)
    names = [destination] if destination else _configured(config)
    if (problem := space_problem(engine)) is not None:
        console.print(f"store: {problem}", style="bold red", markup=False)
    if destination is None:
        waiting, oldest = routing_backlog(engine)
        if waiting:
            console.print(
                f"routing: {waiting} message(s) received and not routed yet, the oldest"
                f" {_age(oldest)} ago (the engine routes them in order; if it is stopped, at"
                " its next start)"
            )
    summaries = summarize(engine, names)
    if destination:
        summaries = [s for s in summaries if s.destination == destination]
    if not summaries:
        console.print("no destinations configured and nothing queued")
        return
    rows = []
    for summary in summaries:
        control = summary.control
        state = (
            Text("PAUSED", style="bold red") if control.paused else Text("active", style="green")
        )
        if control.paused and control.reason:
            state.append(f"\n{control.reason}", style="red")
        rows.append(
            (
                summary.destination,
                state,
                str(summary.queued),
                _age(summary.oldest_queued),
                str(summary.errored),
                str(summary.delivered),
                _due(summary.next_attempt) if summary.queued else "-",
                summary.last_error or "",
            )
        )
    fitted = fit(console, _STATUS_COLUMNS, rows, show_edge=False, header_style="bold")
    console.print(fitted.table)
    if fitted.dropped:
        console.print(fitted.note())


_STATUS_COLUMNS = (
    Column("destination"),
    Column("state", WORDS),
    Column("queued", justify="right"),
    Column("oldest"),
    Column("set aside", justify="right", drop=2),
    Column("delivered", justify="right", drop=1),
    Column("next try", drop=3),
    Column("last error", TEXT),
)


@app.command("pause")
def pause(
    destination: Destination,
    reason: Annotated[str, typer.Option(help="Why (shown by status).")] = "paused by operator",
    config: Config = Path("routes"),
    db: DbOption = None,
) -> None:
    """Stop sending to DESTINATION; messages keep queueing."""
    engine = open_store_or_fail(db)
    _known_or_fail(engine, destination, config)
    with audited(engine, actions.QUEUE_PAUSE, objects=[ref("destination", destination)]):
        set_control(engine, destination, paused=True, reason=reason)
    console.print(f"{destination}: paused")


@app.command("resume")
def resume(destination: Destination, config: Config = Path("routes"), db: DbOption = None) -> None:
    """Send again now, starting with the message at the head of the queue (a queue waiting out
    its back-off after an outage tries at once)."""
    engine = open_store_or_fail(db)
    _known_or_fail(engine, destination, config)
    with audited(engine, actions.QUEUE_RESUME, objects=[ref("destination", destination)]):
        set_control(engine, destination, paused=False, reason="")
    console.print(f"{destination}: resumed")


@app.command("retry")
def retry(destination: Destination, config: Config = Path("routes"), db: DbOption = None) -> None:
    """Put DESTINATION's set-aside (errored) messages back in its queue and send at once."""
    engine = open_store_or_fail(db)
    _known_or_fail(engine, destination, config)
    with audited(engine, actions.QUEUE_RETRY, objects=[ref("destination", destination)]) as audit:
        count = requeue_errored(engine, destination)
        set_control(engine, destination, paused=False, reason="")
        audit.done(f"{count} message(s) back in the queue")
    if count == 0:
        console.print(f"{destination}: nothing was set aside; queue resumed")
        return
    console.print(f"{destination}: {count} message(s) back in the queue, sent first; resumed")
