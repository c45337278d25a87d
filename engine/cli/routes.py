"""``crosswalk routes``: check a configuration, print its JSON Schema, test a route on messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from engine.cli.common import (
    console,
    fail,
    load_config_or_fail,
    read_message_files_or_fail,
)
from engine.config.schema import config_schema
from engine.hl7v2.charset import codec_for
from engine.hl7v2.check import examine
from engine.hl7v2.diff import field_changes
from engine.hl7v2.message import Message
from engine.routes.router import Router

app = typer.Typer(help="Check, describe and test route configurations.", no_args_is_help=True)

ConfigArgument = Annotated[
    Path, typer.Option("--config", help="Configuration folder (default ./routes).")
]


@app.command("check")
def check(
    folder: Annotated[Path, typer.Argument(help="Configuration folder.")] = Path("routes"),
) -> None:
    """Report every problem in a configuration folder with file:line:column; exit 1 if any."""
    config = load_config_or_fail(folder, code=1)
    console.print(
        f"{folder}: OK — {len(config.files)} file(s), {len(config.listeners)} listener(s),"
        f" {len(config.destinations)} destination(s), {len(config.routes)} route(s);"
        f" mapping tables from {config.mappings}"
    )


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of configuration files (for editors' YAML support)."""
    print(json.dumps(config_schema(), indent=2))


@app.command("test")
def test(
    route: Annotated[str, typer.Argument(help="The route's name.")],
    files: Annotated[list[Path], typer.Argument(help="Message files.")],
    config: ConfigArgument = Path("routes"),
    show: Annotated[bool, typer.Option(help="Also print each output message in full.")] = False,
) -> None:
    """Run ROUTE on the messages of FILES without an engine: matched or filtered (and why),
    the output per destination, and what changed field by field. Exits 1 when a transform
    fails."""
    engine_config = load_config_or_fail(config, code=1)
    settings = engine_config.routes.get(route)
    if settings is None:
        fail(f"no route {route!r}; routes are: {', '.join(engine_config.routes) or 'none'}")
    router = Router(engine_config)
    batches = read_message_files_or_fail(files, "no message was tested")
    failed = 0
    for batch in batches:
        for item in batch.messages:
            examination = examine(item.payload)
            header = examination.header
            where = f"{batch.path}:{item.line}"
            label = f"{where}  {header.control_id if header else '?'}  "
            label += header.message_type if header else ""
            if examination.problem is not None:
                console.print(
                    Text(f"{label}  refused at intake: {examination.problem}", style="red"),
                    soft_wrap=True,
                )
                failed += 1
                continue
            codec = codec_for(examination.charset) or "utf-8"
            text = item.payload.decode(codec)
            routing = router.run_route(settings, Message.parse(text), codec)
            failed += _report(label, text, routing, show)
    if failed:
        raise typer.Exit(1)


def _report(label: str, text: str, routing, show: bool) -> int:  # type: ignore[no-untyped-def]
    filtered = [o for o in routing.outcomes if o.outcome == "filtered"]
    if filtered:
        console.print(
            Text.assemble(label, "  ", ("filtered", "yellow"), f": {filtered[0].detail}"),
            soft_wrap=True,
        )
        return 0
    console.print(Text.assemble(label, "  ", ("matched", "green")), soft_wrap=True)
    failures = 0
    for outcome in routing.outcomes:
        if outcome.outcome == "errored":
            failures += 1
            target = outcome.destination or "(all destinations)"
            console.print(
                Text.assemble("  → ", target, ": ", ("ERROR", "bold red"), f" {outcome.detail}"),
                soft_wrap=True,
            )
        elif outcome.outcome == "dropped":
            console.print("  → drop: kept as filtered, nothing sent")
    for out in routing.outbound:
        after = out.message.to_text()
        changes = field_changes(text, after)
        console.print(
            f"  → {out.destination}: {len(changes)} change(s)"
            + (f", partition {out.partition}" if out.partition else "")
        )
        for change in changes:
            console.print(Text(f"      {change}"), soft_wrap=True)
        if show:
            for segment in after.rstrip("\r").split("\r"):
                console.print(Text(f"      | {segment}", style="dim"), soft_wrap=True)
    return failures
