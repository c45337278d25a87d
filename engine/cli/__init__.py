"""The ``crosswalk`` command line; each command is a thin layer over the engine's modules.

Only the command being run is imported: the commands between them pull in numpy, pydicom,
rapidfuzz and more, which would cost every invocation (``crosswalk messages list`` included)
a few hundred milliseconds of start-up. ``crosswalk --help`` imports them all.
"""

from __future__ import annotations

import importlib
import sqlite3
import sys

import typer
from sqlalchemy.exc import SQLAlchemyError

from engine.errors import CrosswalkError

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("engine.cli.serve", "serve"),
    "send": ("engine.cli.send", "send"),
    "messages": ("engine.cli.messages", "app"),
    "routes": ("engine.cli.routes", "app"),
    "queue": ("engine.cli.queue", "app"),
    "mpi": ("engine.cli.mpi", "app"),
    "studies": ("engine.cli.studies", "app"),
    "reconcile": ("engine.cli.reconcile", "app"),
    "review": ("engine.cli.review", "app"),
    "audit": ("engine.cli.audit", "app"),
    "keys": ("engine.cli.keys", "app"),
    "status": ("engine.cli.status", "status"),
    "prune": ("engine.cli.prune", "prune"),
    "users": ("engine.cli.users", "app"),
    "console": ("engine.cli.console", "console_command"),
    "backup": ("engine.cli.backup", "backup"),
    "restore": ("engine.cli.backup", "restore"),
}
"""Command name → (module, attribute): a command function or a Typer group."""


def build_app(only: str | None = None) -> typer.Typer:
    """The command line with every command, or with the command ``only`` alone."""
    app = typer.Typer(
        name="crosswalk",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )

    @app.callback()
    def crosswalk() -> None:
        """Crosswalk: HL7 v2 integration engine and demographics reconciler for PACS."""

    for name, (module, attribute) in COMMANDS.items():
        if only is not None and name != only:
            continue
        target = getattr(importlib.import_module(module), attribute)
        if isinstance(target, typer.Typer):
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)
    return app


def main() -> None:
    named = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    app = build_app(named if named in COMMANDS else None)
    try:
        app()
    except CrosswalkError as error:
        # An explained failure (encrypted content without its keys, a store that cannot be
        # opened …) is one line, never a traceback: tracebacks can quote values.
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:
        if not _database_error(error):
            raise
        # The store failed under the command: one line, no SQL, no parameters (patient data).
        from engine.store.database import describe_failure

        print(f"error: the store failed: {describe_failure(error)}", file=sys.stderr)
        sys.exit(2)


def _database_error(error: BaseException) -> bool:
    """An error of the database or its driver (SQLAlchemy's, sqlite3's, psycopg's)."""
    if isinstance(error, SQLAlchemyError | sqlite3.Error):
        return True
    return type(error).__module__.split(".")[0] == "psycopg"
