"""What the CLI commands share: consoles, the database option, failing with a clear message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine

from engine.config.binding import Duration
from engine.config.loader import load_config
from engine.config.model import EngineConfig
from engine.config.source import ConfigError
from engine.hl7v2.message_file import MessageFile, read_message_file
from engine.store.database import StoreError, open_store

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL or SQLite file (default: $CROSSWALK_DB, else ./crosswalk.db).",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    errors.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def parse_when(text: str) -> datetime:
    """A moment from ``2026-11-23``, ``2026-11-23T14:05`` (local time) or ``2h`` / ``30m`` ago."""
    stripped = text.strip()
    if stripped and stripped[-1] in "smhd" and stripped[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(Duration.parse(stripped)))
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date/time (2026-11-23, 2026-11-23T14:05) or an age (2h, 30m, 7d)"
        ) from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.astimezone().astimezone(UTC)


def open_store_or_fail(db: str | None) -> Engine:
    """The store for ``--db``, or exit with the reason it cannot be opened."""
    try:
        return open_store(db)
    except StoreError as error:
        fail(str(error))


def load_config_or_fail(folder: Path, *, code: int = 2, consequence: str = "") -> EngineConfig:
    """The configuration in ``folder``, or print every problem and exit with ``code``."""
    try:
        return load_config(folder)
    except ConfigError as error:
        for problem in error.problems:
            errors.print(str(problem), markup=False, soft_wrap=True)
        fail(f"{len(error.problems)} problem(s) in {folder}{consequence}", code)


def read_message_files_or_fail(paths: list[Path], consequence: str) -> list[MessageFile]:
    """The messages of ``paths``, or print what cannot be read (file:line) and exit 2."""
    batches = [read_message_file(path) for path in paths]
    problems = [problem for batch in batches for problem in batch.problems]
    if problems:
        for problem in problems:
            errors.print(problem, markup=False, soft_wrap=True)
        fail(consequence)
    return batches
