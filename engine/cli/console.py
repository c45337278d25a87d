"""``crosswalk console``: serve the web console (see engine/console)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.cli.common import DbOption, console, fail, load_config_or_fail, open_store_or_fail
from engine.console.server import serve


def console_command(
    config: Annotated[
        Path, typer.Option(help="Configuration folder (its console: section, routes, review).")
    ] = Path("routes"),
    port: Annotated[
        int | None, typer.Option(help="Port to listen on instead of console.port (0: any).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Serve the web console on console.host:console.port until interrupted."""
    engine_config = load_config_or_fail(config)
    store = open_store_or_fail(db)
    try:
        serve(store, engine_config, port, announce=lambda line: console.print(line, soft_wrap=True))
    except OSError as error:
        fail(f"cannot listen on {engine_config.console.host}: {error.strerror or error}")
