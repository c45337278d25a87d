"""Serving the console with uvicorn on ``console.host:port`` (TLS by the listeners' rules)."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable

import uvicorn
from sqlalchemy import Engine

from engine.config.model import EngineConfig
from engine.console.app import build_app
from engine.console.sessions import Sessions
from engine.console.visits import Console, environment_secret
from engine.mllp.tls import server_context
from engine.review.upkeep import refresh
from engine.store import text_index
from engine.users.keys import stored_key

log = logging.getLogger(__name__)


def console_for(store: Engine, config: EngineConfig, key: bytes | None = None) -> Console:
    """The console over ``store``; its sessions signed with ``key``, else
    ``$CROSSWALK_CONSOLE_KEY``, else the key kept in the store (made at the first start)."""
    settings = config.console
    sessions = Sessions(
        float(settings.idle_timeout),
        float(settings.session_lifetime),
        secure=settings.tls is not None,
        key=key or environment_secret() or stored_key(store),
    )
    return Console(store, config, sessions)


UPKEEP_INTERVAL = 30.0
"""Seconds between two runs of the review's upkeep while the console runs."""


def keep_proposals_current(
    store: Engine, mrn_authority: str, stop: threading.Event, interval: float = UPKEEP_INTERVAL
) -> None:
    """Until ``stop``: every ``interval``, proposals follow merges of their candidates and
    those of resolved studies close (what every ``crosswalk review`` command does first)."""
    while not stop.is_set():
        try:
            refresh(store, mrn_authority)
        except Exception as error:  # the next round tries again; the pages still work
            log.warning("console: review upkeep failed: %s", type(error).__name__)
        stop.wait(interval)


INDEX_INTERVAL = 10.0
"""Seconds between two catch-ups of the message text index."""
INDEX_PAUSE = 0.1
"""Seconds between two batches of a catch-up: the engine's intake writes in between."""
PURGE_EVERY = 360
"""Catch-ups between two purges of pruned messages from the text index (an hour)."""


def keep_text_index(store: Engine, stop: threading.Event, interval: float = INDEX_INTERVAL) -> None:
    """Until ``stop``: every ``interval``, the text index takes in the messages stored since;
    now and then it lets go of those retention deleted or emptied."""
    rounds = 0
    while not stop.is_set():
        try:
            if rounds % PURGE_EVERY == 0:
                text_index.purge(store)
            text_index.catch_up(store, pause=INDEX_PAUSE)
        except Exception as error:  # searches read the messages the index has not reached
            log.warning("console: text index upkeep failed: %s", type(error).__name__)
        rounds += 1
        stop.wait(interval)


class ConsoleServer:
    """The console bound to its address, with its background upkeep: :meth:`run` serves in the
    calling thread until :meth:`stop` (or, in the main thread, SIGINT/SIGTERM)."""

    def __init__(self, store: Engine, config: EngineConfig, port: int | None = None) -> None:
        """Bind (OSError when the address is taken)."""
        settings = config.console
        self.store, self.config = store, config
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        self.socket = socket.create_server(
            (settings.host, settings.port if port is None else port), family=family, backlog=128
        )
        context: ssl.SSLContext | None = (
            server_context(settings.tls) if settings.tls is not None else None
        )
        uv = uvicorn.Config(
            build_app(console_for(store, config)),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        uv.load()
        uv.ssl = context
        self.server = uvicorn.Server(uv)
        scheme = "https" if context is not None else "http"
        self.address = f"{scheme}://{settings.host}:{self.socket.getsockname()[1]}"
        self._stop = threading.Event()

    def run(self) -> None:
        threading.Thread(
            target=keep_proposals_current,
            args=(self.store, self.config.review.mrn_authority, self._stop),
            name="review upkeep",
            daemon=True,
        ).start()
        threading.Thread(
            target=keep_text_index, args=(self.store, self._stop), name="text index", daemon=True
        ).start()
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self._stop.set()

    def stop(self) -> None:
        """End :meth:`run` (from another thread): requests in progress finish first."""
        self._stop.set()
        self.server.should_exit = True


def serve(
    store: Engine,
    config: EngineConfig,
    port: int | None = None,
    announce: Callable[[str], None] = log.info,
) -> None:
    """Bind (OSError when the address is taken) and serve until interrupted."""
    console = ConsoleServer(store, config, port)
    announce(f"console on {console.address}")
    console.run()
