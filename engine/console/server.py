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

log = logging.getLogger(__name__)


def console_for(store: Engine, config: EngineConfig, key: bytes | None = None) -> Console:
    settings = config.console
    sessions = Sessions(
        float(settings.idle_timeout),
        float(settings.session_lifetime),
        secure=settings.tls is not None,
        key=key or environment_secret(),
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
            text_index.catch_up(store)
        except Exception as error:  # searches read the messages the index has not reached
            log.warning("console: text index upkeep failed: %s", type(error).__name__)
        rounds += 1
        stop.wait(interval)


def serve(
    store: Engine,
    config: EngineConfig,
    port: int | None = None,
    announce: Callable[[str], None] = log.info,
) -> None:
    """Bind (OSError when the address is taken) and serve until interrupted."""
    settings = config.console
    host = settings.host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server(
        (host, settings.port if port is None else port), family=family, backlog=128
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
    scheme = "https" if context is not None else "http"
    announce(f"console on {scheme}://{host}:{sock.getsockname()[1]}")
    stop = threading.Event()
    upkeep = threading.Thread(
        target=keep_proposals_current,
        args=(store, config.review.mrn_authority, stop),
        name="review upkeep",
        daemon=True,
    )
    upkeep.start()
    threading.Thread(
        target=keep_text_index, args=(store, stop), name="text index", daemon=True
    ).start()
    try:
        uvicorn.Server(uv).run(sockets=[sock])
    finally:
        stop.set()
