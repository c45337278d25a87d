"""``crosswalk serve``: run the engine until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Annotated

import typer

from engine import logs
from engine.cli.common import DbOption, fail, load_config_or_fail, open_store_or_fail, use_keys
from engine.config.loader import load_config
from engine.config.model import EngineConfig
from engine.console.server import ConsoleServer
from engine.leases.keeper import LEASE_TTL
from engine.observability.settings import AdminSettings
from engine.pipeline.open_files import check_connection_room, raise_open_file_limit
from engine.pipeline.reload import log_warnings
from engine.pipeline.routing_process import DEFAULT_TIMEOUT
from engine.pipeline.server import SHUTDOWN_TIMEOUT, Server, event_loop_factory
from engine.store.database import StoreError
from engine.store.settings import StoreSettings
from engine.store.writer import COMMIT_TIMEOUT

DEFAULT_CONFIG = Path("routes")

log = logging.getLogger(__name__)


def resolve_config(path: Path | None) -> tuple[EngineConfig, Path | None]:
    """Load ``path``; without one, ./routes when it exists, else the built-in default."""
    if path is None and not DEFAULT_CONFIG.is_dir():
        log.info("no ./routes folder: one listener on 127.0.0.1:2575, no routes")
        use_keys(StoreSettings(encrypt_content=True))  # $CROSSWALK_KEYS, if set
        return EngineConfig.default(), None
    folder = path or DEFAULT_CONFIG
    return load_config_or_fail(folder, consequence="; nothing was started"), folder


def serve(
    config: Annotated[
        Path | None,
        typer.Option(help="Configuration folder or file (default: ./routes if present)."),
    ] = None,
    db: DbOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address of the (single) listener.")] = None,
    port: Annotated[int | None, typer.Option(help="Port of the (single) listener.")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
    log_format: Annotated[
        str | None,
        typer.Option(help="text (default, or $CROSSWALK_LOG_FORMAT) or json: one object a line."),
    ] = None,
    routing_process: Annotated[
        bool,
        typer.Option(
            help="Route in a child process, on another core (Linux with two or more cores);"
            " --no-routing-process routes on the engine's event loop."
        ),
    ] = True,
    routing_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds the routing process may spend on a batch; then it is restarted and"
            " the message that hangs it is recorded as errored.",
        ),
    ] = DEFAULT_TIMEOUT,
    commit_timeout: Annotated[
        float,
        typer.Option(
            min=0.5,
            help="PostgreSQL: seconds a commit may take before the senders waiting on it are"
            " answered AE (not stored; send again) and the connection is replaced.",
        ),
    ] = COMMIT_TIMEOUT,
    shutdown_timeout: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="Seconds from SIGTERM/SIGINT to exit: received messages are answered, and"
            " what is left to route is routed first at the next start.",
        ),
    ] = SHUTDOWN_TIMEOUT,
    lease_ttl: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="PostgreSQL (several engines): seconds an engine's hold on a queue, the MPI or"
            " routing lasts unless renewed; another engine takes over that long after it dies."
            " Every engine on one database should use the same value.",
        ),
    ] = LEASE_TTL,
    admin_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Port of the admin endpoint (metrics, health, status), instead of the admin:"
            " section's; turns it on if there is none. Several engines on one host with one"
            " configuration folder need one each.",
        ),
    ] = None,
    console: Annotated[
        bool,
        typer.Option(
            "--console",
            help="Serve the web console from this process too, on the console: section's"
            " address (as `crosswalk console` would).",
        ),
    ] = False,
) -> None:
    """Run the engine: listeners, store and routes, until SIGTERM or SIGINT."""
    try:
        logs.configure(log_level, log_format)
    except ValueError as error:
        fail(str(error))
    engine_config, folder = resolve_config(config)
    log_warnings(engine_config)
    check_connection_room(
        raise_open_file_limit(),
        (int(settings.max_connections) for settings in engine_config.listeners.values()),
    )
    if host is not None or port is not None:
        if len(engine_config.listeners) != 1:
            fail("--host and --port need exactly one listener; set the others in the configuration")
        ((name, listener),) = engine_config.listeners.items()
        if host is not None:
            listener = dataclasses.replace(listener, host=host)
        if port is not None:
            listener = dataclasses.replace(listener, port=port)
        engine_config = dataclasses.replace(engine_config, listeners={name: listener})
    if admin_port is not None:
        admin = engine_config.admin or AdminSettings()
        admin = dataclasses.replace(admin, port=admin_port, enabled=True)
        engine_config = dataclasses.replace(engine_config, admin=admin)
    web = _start_console(engine_config, db) if console else None
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            server = Server(
                engine_config,
                db,
                config_folder=folder,
                load=load_config,
                reload_interval=float(os.environ.get("CROSSWALK_RELOAD_INTERVAL", "1")),
                route_in_process=not routing_process,
                routing_timeout=routing_timeout,
                commit_timeout=commit_timeout,
                shutdown_timeout=shutdown_timeout,
                lease_ttl=lease_ttl,
            )
            runner.run(server.run())
    except StoreError as error:
        fail(str(error))
    except RuntimeError as error:
        fail(str(error))
    finally:
        if web is not None:
            web.stop()


def _start_console(config: EngineConfig, db: str | None) -> ConsoleServer:
    """The web console, bound and serving from a thread of its own."""
    try:
        server = ConsoleServer(open_store_or_fail(db), config)
    except OSError as error:
        fail(f"cannot listen on {config.console.host}: {error.strerror or error}; nothing started")
    threading.Thread(target=server.run, name="console", daemon=True).start()
    log.info("console on %s", server.address)
    return server
