"""The admin HTTP endpoint, served on the engine's event loop by uvicorn (a Starlette app).

- ``GET /metrics``: Prometheus text format (:mod:`engine.observability.metrics`).
- ``GET /healthz``: 200 while the process and its event loop run.
- ``GET /readyz``: 200 when the engine can take messages (store reachable, every listener
  bound, the routing process alive), else 503 with the reasons, one per line.
- ``GET /status``: JSON for ``crosswalk status`` (listeners, routing, queues, and the engines
  sharing a PostgreSQL store with the leases each holds; no PHI).

The socket is bound here, before uvicorn is given it, so a port in use is the engine's own
clear error rather than uvicorn's exit; uvicorn's signal handling is left out (SIGTERM and
SIGHUP belong to the engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from engine.mllp.tls import server_context
from engine.observability.cluster import engines_document, iso, listeners_of
from engine.observability.metrics import EngineMetrics, StoreCounts
from engine.observability.settings import AdminSettings

log = logging.getLogger(__name__)

STORE_PING_TIMEOUT = 2.0
"""Seconds the store may take to answer ``SELECT 1`` before the engine is reported not ready."""


def app_for(metrics: EngineMetrics) -> Starlette:
    """The endpoint's routes over ``metrics`` (and the engine view it holds)."""

    async def scrape(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        reasons = await not_ready(metrics)
        if reasons:
            return PlainTextResponse("\n".join(reasons) + "\n", status_code=503)
        return PlainTextResponse("ready\n")

    async def status(request: Request) -> Response:
        counts = await run_in_threadpool(metrics.store_counts)
        reasons = await not_ready(metrics)
        return JSONResponse(status_document(metrics, counts, reasons))

    return Starlette(
        routes=[
            Route("/metrics", scrape),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/status", status),
        ]
    )


async def not_ready(metrics: EngineMetrics) -> list[str]:
    """Why the engine cannot take messages: the engine's own reasons, and a store that does
    not answer ``SELECT 1`` within :data:`STORE_PING_TIMEOUT`."""
    reasons = list(metrics.view.not_ready())
    store = metrics.view.store_engine()
    if store is None:
        return [*reasons, "store: not open"]

    def ping() -> None:
        with store.connect() as connection:
            connection.execute(text("SELECT 1"))

    try:
        async with asyncio.timeout(STORE_PING_TIMEOUT):
            await asyncio.to_thread(ping)
    except TimeoutError:
        reasons.append(f"store: no answer within {STORE_PING_TIMEOUT:.0f}s")
    except Exception as error:
        reasons.append(f"store: unreachable ({type(error).__name__})")
    return reasons


def status_document(
    metrics: EngineMetrics, counts: StoreCounts, reasons: list[str]
) -> dict[str, Any]:
    """What ``/status`` answers: counters since the start, queues as stored, readiness."""
    listeners = listeners_of(metrics)
    queues = [
        {
            "destination": q.destination,
            "partition": q.partition,
            "queued": q.queued,
            "set_aside": q.set_aside,
            "oldest_seconds": q.oldest,
            "paused": q.paused,
            "last_error": q.last_error,
            "outcomes": metrics.outcomes.get(q.destination, {}) if q.partition == 0 else {},
            "owner": q.owner,
        }
        for q in counts.queues
    ]
    return {
        "time": datetime.now(UTC).isoformat(),
        "started": iso(metrics.started),
        "ready": not reasons,
        "not_ready": reasons,
        "listeners": listeners,
        "routing": {
            "routed": dict(metrics.routing),
            "backlog": counts.backlog,
            "backlog_oldest_seconds": counts.backlog_oldest,
        },
        "queues": queues,
        "engines": engines_document(counts.engines, metrics.view.lease_holder(), listeners),
        "store_error": counts.error,
    }


class _EngineUvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the engine's own handle SIGTERM and SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AdminEndpoint:
    """The endpoint of one engine: ``await start()`` binds and serves, ``await stop()`` ends."""

    def __init__(self, settings: AdminSettings, metrics: EngineMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._server: _EngineUvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None
        self.url: str | None = None
        """Where it answers, once started (``https://host:port``)."""

    async def start(self) -> None:
        """Bind (OSError when the address is taken) and serve in the background."""
        settings = self.settings
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.create_server((settings.host, settings.port), family=family, backlog=64)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        context: ssl.SSLContext | None = (
            server_context(settings.tls) if settings.tls is not None else None
        )
        config = uvicorn.Config(
            app_for(self.metrics),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        config.load()
        config.ssl = context  # ours: the listeners' TLS rules (minimum version, client CA)
        self._server = _EngineUvicorn(config)
        self._task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="admin endpoint"
        )
        scheme = "https" if context is not None else "http"
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self.url = f"{scheme}://{host}:{self.port}"
        log.info("admin endpoint on %s", self.url)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._task
        self._server = self._task = None
