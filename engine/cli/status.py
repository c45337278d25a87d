"""``crosswalk status``: a live view of a running engine, read from its admin endpoint."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from engine.cli.common import console, fail
from engine.cli.tables import TEXT, WORDS, Column, fit
from engine.config.loader import load_section
from engine.observability.settings import AdminSettings
from engine.settings import ConfigError

Config = Annotated[
    Path,
    typer.Option(help="Configuration folder: its admin: section says where the engine listens."),
]


@dataclass
class Sample:
    """One answer of ``/status``, and when it was read."""

    at: float
    document: dict[str, Any]


def status(
    config: Config = Path("routes"),
    url: Annotated[
        str | None,
        typer.Option(help="The admin endpoint, e.g. http://127.0.0.1:9575 (default: --config's)."),
    ] = None,
    ca: Annotated[
        Path | None, typer.Option(help="CA certificate to trust for an https endpoint.")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Print the status once and exit.")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 1.0,
) -> None:
    """Listeners, routing and destinations of the running engine, refreshed every second (over
    SSH too); --once prints it once. No patient data is shown."""
    endpoint = url or _endpoint_of(config)
    context = _tls_context(endpoint, ca)
    first = _read(endpoint, context)
    if once:
        console.print(render(console, first, None))
        return
    previous = first
    with Live(render(console, first, None), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                current = _read(endpoint, context)
                live.update(render(console, current, previous), refresh=True)
                previous = current
        except KeyboardInterrupt:
            pass


def _endpoint_of(config: Path) -> str:
    try:
        settings: AdminSettings = load_section(config, "admin")
    except ConfigError as error:
        fail(str(error))
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls is not None else "http"
    return f"{scheme}://{host}:{settings.port}"


def _tls_context(endpoint: str, ca: Path | None) -> ssl.SSLContext | None:
    if not endpoint.startswith("https:"):
        return None
    return ssl.create_default_context(cafile=str(ca) if ca else None)


def _read(endpoint: str, context: ssl.SSLContext | None) -> Sample:
    address = endpoint.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(address, timeout=5, context=context) as answer:
            return Sample(time.monotonic(), json.load(answer))
    except urllib.error.HTTPError as error:
        fail(f"{address}: the engine answered HTTP {error.code}")
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        fail(
            f"no engine answers at {address} ({reason}); is it running with an admin: section"
            " in its configuration (docs/monitoring.md)?"
        )
    except ValueError:
        fail(f"{address}: the answer is not the engine's status (not JSON)")


def render(console: Console, sample: Sample, previous: Sample | None) -> Group:
    """The tables: listeners, routing, destinations, and the engines when several share a
    PostgreSQL store. Rates are since ``previous`` (else since the engine started)."""
    document = sample.document
    now = datetime.fromisoformat(document["time"])
    started = datetime.fromisoformat(document["started"])
    since = (
        sample.at - previous.at
        if previous is not None
        else max(1.0, (now - started).total_seconds())
    )
    before: dict[str, int] = (
        {item["name"]: item["messages"] for item in previous.document["listeners"]}
        if previous
        else {}
    )
    ready = document["ready"]
    heading = Text.assemble(
        ("Crosswalk ", "bold"),
        ("ready" if ready else "NOT READY", "bold green" if ready else "bold red"),
        f"  up {_duration((now - started).total_seconds())}  at {now:%H:%M:%S} UTC",
    )
    parts: list[Any] = [heading]
    for reason in document["not_ready"]:
        parts.append(Text(f"  {reason}", style="red"))
    listeners = fit(
        console,
        _LISTENER_COLUMNS,
        (
            (
                item["name"],
                Text("listening", "green") if item["bound"] else Text("NOT BOUND", "bold red"),
                str(item["open_connections"]),
                str(item["messages"]),
                f"{(item['messages'] - before.get(item['name'], 0)) / since:.1f}",
                _ago(now, item["last_message"]),
                str(item["refused"]),
            )
            for item in document["listeners"]
        ),
        title="listeners",
        title_justify="left",
        show_edge=False,
    )
    routing = document["routing"]
    routed = routing["routed"]
    backlog = routing["backlog"]
    engines = document.get("engines") or []
    names = {e["holder"]: _engine_name(e) for e in engines}
    router = next((names[e["holder"]] for e in engines if "routing" in e["leases"]), "no engine")
    parts += [
        listeners.table,
        Text.assemble(
            ("routing: ", "bold"),
            f"{routed.get('routed', 0)} routed, {routed.get('filtered', 0)} filtered, ",
            (f"{routed.get('errored', 0)} errored", "red" if routed.get("errored") else ""),
            f"; {backlog} waiting"
            + (f" (oldest {_duration(routing['backlog_oldest_seconds'])})" if backlog else ""),
            f"; routed by {router}" if engines else "",
        ),
    ]

    def queue_row(q: dict[str, Any]) -> list[Any]:
        cells: list[Any] = [
            q["destination"] + (f"/{q['partition']}" if q["partition"] else ""),
            Text("PAUSED", "bold red") if q["paused"] else Text("active", "green"),
            str(q["queued"]),
            _duration(q["oldest_seconds"]) if q["oldest_seconds"] is not None else "-",
            str(q["set_aside"]),
            str(q["outcomes"].get("delivered", 0)),
            q["last_error"],
        ]
        if engines:  # which engine sends this partition (its lease)
            cells.append(names.get(q.get("owner") or "", Text("none", "bold red")))
        return cells

    queues = fit(
        console,
        _QUEUE_COLUMNS if engines else _QUEUE_COLUMNS[:-1],
        (queue_row(q) for q in document["queues"]),
        title="destinations",
        title_justify="left",
        show_edge=False,
    )
    parts.append(queues.table)
    fitted = [listeners, queues]
    if engines:
        table = _engines_table(console, engines, previous, now, since)
        parts.append(table.table)
        fitted.append(table)
    if document.get("store_error"):
        parts.append(Text(f"store: {document['store_error']}", style="red"))
    dropped = next((note for note in (f.note() for f in fitted) if note), "")
    if dropped:
        parts.append(Text(dropped, style="dim"))
    return Group(*parts)


def _engine_name(engine: dict[str, Any]) -> str:
    return f"{engine['host']}:{engine['pid']}"


def _engines_table(
    console: Console,
    engines: list[dict[str, Any]],
    previous: Sample | None,
    now: datetime,
    since: float,
) -> Any:
    """Each engine sharing the store: alive or gone, the leases it holds, its listeners'
    connections, rate and last message (another engine's as of its last renewal)."""
    before: dict[str, int] = {}
    if previous is not None:
        for engine in previous.document.get("engines") or []:
            before[engine["holder"]] = sum(item["messages"] for item in engine["listeners"])

    def row(engine: dict[str, Any]) -> tuple[Any, ...]:
        listeners = engine["listeners"]
        messages = sum(item["messages"] for item in listeners)
        if engine["holder"] in before:
            rate = (messages - before[engine["holder"]]) / since
        elif engine.get("started"):
            up = (now - datetime.fromisoformat(engine["started"])).total_seconds()
            rate = messages / max(1.0, up)
        else:
            rate = 0.0
        last = max((item["last_message"] or "" for item in listeners), default="")
        state = (
            Text("alive", "green") if engine["alive"] else Text("GONE", "bold red"),
            Text(" (this one)", "dim") if engine["this"] else "",
        )
        alive = engine["alive"]  # a gone engine's last figures are not its connections now
        return (
            _engine_name(engine),
            Text.assemble(*state),
            ", ".join(engine["leases"]) or "-",
            str(sum(item["open_connections"] for item in listeners)) if alive else "-",
            f"{rate:.1f}" if alive else "-",
            _ago(now, last or None),
            engine.get("admin") or "-",
        )

    return fit(
        console,
        _ENGINE_COLUMNS,
        (row(engine) for engine in engines),
        title="engines (on one PostgreSQL)",
        title_justify="left",
        show_edge=False,
    )


_ENGINE_COLUMNS = (
    Column("engine"),
    Column("state"),
    Column("leases", WORDS),
    Column("connections", justify="right"),
    Column("per second", justify="right"),
    Column("last message", WORDS, drop=1),
    Column("admin", drop=2),
)
_LISTENER_COLUMNS = (
    Column("listener"),
    Column("state"),
    Column("connections", justify="right"),
    Column("messages", justify="right", drop=2),
    Column("per second", justify="right"),
    Column("last message", WORDS, drop=1),
    Column("refused", justify="right", drop=3),
)
_QUEUE_COLUMNS = (
    Column("destination"),
    Column("state"),
    Column("queued", justify="right"),
    Column("oldest"),
    Column("set aside", justify="right", drop=2),
    Column("delivered", justify="right", drop=1),
    Column("last error", TEXT),
    Column("engine"),
)


def _ago(now: datetime, when: str | None) -> str:
    if when is None:
        return "never"
    return _duration((now - datetime.fromisoformat(when)).total_seconds()) + " ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{seconds % 86400 // 3600:02.0f}h"
