"""``crosswalk routes``: check a configuration, print its JSON Schema, test a route on messages."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from engine.cli.common import (
    console,
    errors,
    fail,
    load_config_or_fail,
    read_message_files_or_fail,
)
from engine.config.loader import load_config, mappings_places
from engine.config.model import EngineConfig
from engine.config.schema import config_schema
from engine.hl7v2.charset import codec_for
from engine.hl7v2.check import examine
from engine.hl7v2.diff import field_changes
from engine.hl7v2.message import Message
from engine.routes.router import Router
from engine.settings import ConfigError, Problem

app = typer.Typer(help="Check, describe and test route configurations.", no_args_is_help=True)

ConfigArgument = Annotated[
    Path, typer.Option("--config", help="Configuration folder (default ./routes).")
]


@app.command("check")
def check(
    folder: Annotated[
        Path | None, typer.Argument(help="Configuration folder (or give it as --config).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Configuration folder (default ./routes).")
    ] = None,
) -> None:
    """Report every problem in a configuration folder with file:line:column; exit 1 if any.

    Warnings (a filter on a message type HL7 does not define) are printed too; alone they do
    not fail the check.
    """
    if folder is not None and config is not None and folder != config:
        fail(f"two configuration folders given: {folder} and --config {config}; give one")
    chosen = folder or config or Path("routes")
    try:
        loaded = load_config(chosen)
    except ConfigError as error:
        for problem in error.problems:
            errors.print(str(problem), markup=False, soft_wrap=True)
        _print_warnings(error.warnings)
        fail(f"{len(error.problems)} problem(s) in {chosen}", 1)
    _print_warnings(loaded.warnings)
    warned = f"; {len(loaded.warnings)} warning(s)" if loaded.warnings else ""
    console.print(
        f"{chosen}: OK — {len(loaded.files)} file(s), {len(loaded.listeners)} listener(s),"
        f" {len(loaded.destinations)} destination(s), {len(loaded.routes)} route(s);"
        f" mapping tables from {_mappings_origin(chosen, loaded)}{warned}",
        soft_wrap=True,
    )


def _print_warnings(warnings: list[Problem] | tuple[Problem, ...]) -> None:
    for warning in warnings:
        errors.print(f"warning: {warning}", markup=False, soft_wrap=True, style="yellow")


def _mappings_origin(folder: Path, config: EngineConfig) -> str:
    """The mapping tables' folder and how it was found (or that none was)."""
    places = mappings_places(folder, os.environ)
    why = next((why for place, why in places if place == config.mappings), "")
    if not config.mappings.is_dir():
        looked = " and ".join(f"{place} ({reason})" for place, reason in places)
        return f"nowhere: no mappings folder (looked in {looked})"
    return f"{config.mappings} ({why})" if why else str(config.mappings)


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
    _print_warnings(engine_config.warnings)
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
