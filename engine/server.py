"""The running engine: store, writer and listeners, started and stopped in the right order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from sqlalchemy import Engine

from engine.config.model import EngineConfig, ListenerSettings
from engine.intake import Intake
from engine.mllp.listener import ListenerLimits, MLLPListener
from engine.store.database import open_store, redact, resolve_url
from engine.store.writer import MessageWriter

log = logging.getLogger(__name__)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (it halves the socket overhead per message), else asyncio's.

    ``CROSSWALK_EVENT_LOOP=asyncio`` forces the standard loop.
    """
    if os.environ.get("CROSSWALK_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def listener_limits(settings: ListenerSettings) -> ListenerLimits:
    return ListenerLimits(
        name=settings.name,
        host=settings.host,
        port=settings.port,
        max_message_size=int(settings.max_message_size),
        idle_timeout=float(settings.idle_timeout),
        read_timeout=float(settings.read_timeout),
    )


class Server:
    """One engine process. ``await run()`` serves until SIGTERM/SIGINT, then shuts down cleanly."""

    def __init__(self, config: EngineConfig, db_url: str | None = None) -> None:
        self.config = config
        self.db_url = resolve_url(db_url)
        self.store: Engine | None = None
        self.writer: MessageWriter | None = None
        self.listeners: dict[str, MLLPListener] = {}
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        log.info("opening store %s", redact(self.db_url))
        self.store = await asyncio.to_thread(open_store, self.db_url)
        self.writer = MessageWriter(self.store)
        self.writer.start(asyncio.get_running_loop())
        try:
            for name, settings in self.config.listeners.items():
                listener = MLLPListener(listener_limits(settings), Intake(self.writer, settings))
                await listener.start()
                self.listeners[name] = listener
        except OSError as error:
            await self.stop()
            raise RuntimeError(f"cannot listen: {error.strerror or error}") from error

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, finish messages already received, close the store."""
        for listener in self.listeners.values():
            await listener.stop(grace)
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        if self.store is not None:
            self.store.dispose()
        log.info("engine stopped")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        await self.start()
        log.info("engine ready")
        try:
            await self._stopping.wait()
        finally:
            log.info("shutting down")
            await self.stop()
