"""The running engine: store, writer, delivery, dispatcher and listeners, in the right order.

Start: open and migrate the store; start the writer; start the delivery workers (they read
their queues); route what was left received before a restart; only then open the listeners.
Stop (SIGTERM/SIGINT): close the listeners after the messages already received are stored and
acknowledged; route what is in hand; stop the workers; commit; close the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import signal
import ssl
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import IO

from sqlalchemy import Engine

from engine.audit.syslog import exporter
from engine.audit.trail import Actor, Trail
from engine.leases.keeper import LEASE_TTL, Lease, LeaseKeeper
from engine.mllp.listener import ListenerLimits, ListenerStats, MLLPListener
from engine.mllp.tls import ServerTLS
from engine.observability.admin import AdminEndpoint
from engine.observability.cluster import summary
from engine.observability.metrics import EngineMetrics
from engine.pipeline.certificates import check_daily, warn_expiring_certificates
from engine.pipeline.delivery import DeliveryService
from engine.pipeline.dispatcher import Dispatcher
from engine.pipeline.intake import Intake
from engine.pipeline.merge_targets import run_merge_targets
from engine.pipeline.mpi_destination import MPI, MpiWorker
from engine.pipeline.reload import ConfigWatcher, Snapshot, snapshot
from engine.pipeline.routing_process import DEFAULT_TIMEOUT, make_routing
from engine.pipeline.settings import ListenerSettings, LoadConfig, PipelineConfig
from engine.retention.runner import Pruner
from engine.routes.router import Router
from engine.settings import ConfigError, Problem
from engine.store.database import (
    StoreError,
    check_writable,
    hold_as_only_engine,
    open_store,
    redact,
    resolve_url,
)
from engine.store.operations import Barrier
from engine.store.writer import COMMIT_TIMEOUT, StoreWriter

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0
ROUTING = "routing"
"""The lease of routing the stored messages (several engines on one PostgreSQL)."""
PRUNING = "retention"
"""The lease of pruning the store by the ``retention:`` section."""


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (less socket overhead per message), else asyncio's.

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
    """A listener's socket settings, its TLS files read now (``ConfigError`` if they cannot be
    used: they changed since the configuration was checked)."""
    tls = None
    if settings.tls is not None:
        try:
            tls = ServerTLS.of(settings.tls)
        except (OSError, ssl.SSLError, ValueError) as error:
            raise ConfigError(
                [Problem(None, f"listener {settings.name}: its TLS files cannot be used: {error}")]
            ) from None
    return ListenerLimits(
        name=settings.name,
        host=settings.host,
        port=settings.port,
        max_message_size=int(settings.max_message_size),
        idle_timeout=float(settings.idle_timeout),
        read_timeout=float(settings.read_timeout),
        tls=tls,
        allow=tuple(ipaddress.ip_network(entry, strict=False) for entry in settings.allow),
        max_connections=settings.max_connections,
        rejections_per_second=float(settings.rejections_per_second),
    )


class Server:
    """One engine process. ``await run()`` serves until SIGTERM/SIGINT, then shuts down cleanly."""

    def __init__(
        self,
        config: PipelineConfig,
        db_url: str | None = None,
        *,
        config_folder: Path | None = None,
        load: LoadConfig | None = None,
        reload_interval: float = 1.0,
        route_in_process: bool = False,
        routing_timeout: float = DEFAULT_TIMEOUT,
        commit_timeout: float = COMMIT_TIMEOUT,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        lease_ttl: float = LEASE_TTL,
    ) -> None:
        self.config = config
        self.db_url = resolve_url(db_url)
        self.config_folder = config_folder
        self.load = load
        """Reads the configuration folder again on a change or SIGHUP (hot reload)."""
        self.config_files: Snapshot | None = (
            snapshot([config_folder, config.mappings]) if config_folder is not None else None
        )
        """The configuration files as ``config`` was read from them (the watcher's baseline)."""
        self.reload_interval = reload_interval
        self.route_in_process = route_in_process
        """Route on the event loop even where a routing process is possible."""
        self.routing_timeout = routing_timeout
        """Seconds the routing process may take over a batch before it is killed."""
        self.commit_timeout = commit_timeout
        """Seconds a server database may take over a commit before senders get AE."""
        self.shutdown_timeout = shutdown_timeout
        """Seconds from SIGTERM to exit, whatever is still to route (it is, at the next start)."""
        self.lease_ttl = lease_ttl
        """PostgreSQL: seconds before another engine takes over the work of one that died."""
        self.keeper: LeaseKeeper | None = None
        """Who owns which work when several engines share a PostgreSQL store (None: SQLite)."""
        self._only_engine: IO[str] | None = None
        """SQLite: the lock that keeps a second engine off the file while this one runs."""
        self.store: Engine | None = None
        self.writer: StoreWriter | None = None
        self.delivery: DeliveryService | None = None
        self.dispatcher: Dispatcher | None = None
        self.watcher: ConfigWatcher | None = None
        self.trail: Trail | None = None
        """The audit trail of the engine's own actions (configuration reloads)."""
        self.listeners: dict[str, MLLPListener] = {}
        self.intakes: dict[str, Intake] = {}
        self._stopping = asyncio.Event()
        self._daily: asyncio.Task[None] | None = None
        admin = config.admin
        self.metrics = EngineMetrics(
            self, float(admin.scrape_interval) if admin is not None else 5.0
        )
        """What the engine counts, served by the admin endpoint when one is configured."""
        self.admin: AdminEndpoint | None = None
        self.pruner: Pruner | None = None
        """Prunes the store by the ``retention:`` section (None: no section)."""

    async def start(self) -> None:
        log.info("opening store %s", redact(self.db_url))
        self.store = await asyncio.to_thread(open_store, self.db_url)
        try:
            self._only_engine = hold_as_only_engine(self.store)
        except StoreError:
            self.store.dispose()
            raise
        await asyncio.to_thread(check_writable, self.store)
        self.writer = StoreWriter(self.store, commit_timeout=self.commit_timeout)
        self.writer.observe_commit = self.metrics.observe_commit
        self.writer.start(asyncio.get_running_loop())
        await self._start_keeper()
        self.delivery = DeliveryService(
            self.config.destinations,
            self.writer,
            self.store,
            self.metrics.observe_delivery,
            keeper=self.keeper,
        )
        await self.delivery.start()
        self.delivery.add(MpiWorker(self.writer, self.store))
        self._run_merge_targets(self.config)
        self.dispatcher = Dispatcher(
            make_routing(
                Router(self.config), in_process=self.route_in_process, timeout=self.routing_timeout
            ),
            self.writer,
            self.store,
            self.delivery.push,
            self.metrics.observe_routed,
        )
        if self.keeper is None:
            await self.dispatcher.catch_up()
            self.dispatcher.start()
        else:
            self.keeper.want(ROUTING, self.dispatcher.take, self.dispatcher.release)
            await self.keeper.settle()
            if self.keeper.holds(ROUTING):  # as alone: what was left is routed first
                await self.dispatcher.caught_up.wait()
        try:
            for name, settings in self.config.listeners.items():
                intake = Intake(
                    self.writer,
                    settings,
                    accepted=self.dispatcher.accept,
                    has_routes=self.dispatcher.has_routes,
                    unsure=self.dispatcher.recheck,
                    observe=self.metrics.observe_message,
                )
                listener = MLLPListener(listener_limits(settings), intake)
                await listener.start()
                self.listeners[name] = listener
                self.intakes[name] = intake
        except OSError as error:
            await self.stop()
            raise RuntimeError(f"cannot listen: {error.strerror or error}") from error
        self._report_unread_listeners()
        await self._start_admin()
        retention = self.config.retention
        if retention is not None and retention.enabled:
            self.pruner = pruner = Pruner(retention, self.store, self.writer)
            if self.keeper is None:
                pruner.start()
            else:  # one engine prunes at a time

                async def prune(lease: Lease) -> None:
                    pruner.start(lease)

                self.keeper.want(PRUNING, prune, pruner.stop)
        warn_expiring_certificates(self.config)
        self._daily = asyncio.get_running_loop().create_task(
            check_daily(lambda: self.config), name="certificate check"
        )
        if self.config_folder is not None and self.load is not None:
            self.trail = Trail(self.store, Actor.engine(), exporter(self.config.audit))
            self.watcher = ConfigWatcher(
                self.config_folder,
                self.config.mappings,
                self.apply,
                self.load,
                self.reload_interval,
                self.trail,
                baseline=self.config_files,
            )
            self.watcher.start()

    async def _start_keeper(self) -> None:
        """On PostgreSQL, engines share the store: each queue partition, the MPI and routing
        run where their lease is held (engine/leases/)."""
        if self.store is None or self.store.dialect.name != "postgresql":
            return
        writer = self.writer
        assert writer is not None

        async def flush() -> None:
            await writer.run(Barrier())

        self.keeper = LeaseKeeper(
            self.store, ttl=self.lease_ttl, flush=flush, describe=partial(summary, self.metrics)
        )
        await self.keeper.start()

    async def _start_admin(self) -> None:
        """The admin endpoint, when configured. A port in use is logged, not fatal: the feeds
        matter more than their metrics."""
        settings = self.config.admin
        if settings is None or not settings.enabled:
            return
        endpoint = AdminEndpoint(settings, self.metrics)
        try:
            await endpoint.start()
        except OSError as error:
            log.error(
                "admin endpoint NOT started: cannot listen on %s:%d: %s; the feeds run without"
                " metrics and health checks",
                settings.host,
                settings.port,
                error.strerror or error,
            )
            return
        self.admin = endpoint
        self.metrics.admin_url = endpoint.url

    # --- what the engine shows of itself (engine.observability.metrics.EngineView) ---------

    def listener_stats(self) -> Mapping[str, ListenerStats]:
        return {name: listener.stats for name, listener in self.listeners.items()}

    def listener_names(self) -> Sequence[str]:
        return list(self.config.listeners)

    def destination_names(self) -> Sequence[str]:
        return [*self.config.destinations, MPI]

    def store_engine(self) -> Engine | None:
        return self.store

    def lease_holder(self) -> str | None:
        return None if self.keeper is None else self.keeper.holder

    def not_ready(self) -> list[str]:
        reasons = [
            f"listener {name}: not bound"
            for name in self.config.listeners
            if name not in self.listeners or not self.listeners[name].serving
        ]
        routes_here = self.keeper is None or self.keeper.holds(ROUTING)
        if self.dispatcher is None or (routes_here and not self.dispatcher.running):
            reasons.append("routing: not running")
        if self._stopping.is_set():
            reasons.append("engine: stopping")
        return reasons

    def _run_merge_targets(self, config: PipelineConfig) -> None:
        """Work the queues of the merge targets (archives changed directly by approvals)."""
        assert self.delivery is not None and self.writer is not None and self.store is not None
        trail = Trail(self.store, Actor.engine(), exporter(config.audit))
        run_merge_targets(
            self.delivery, config.review.merge_targets, self.writer, self.store, trail
        )

    async def apply(self, config: PipelineConfig) -> None:
        """Swap in a checked configuration without touching connections or queues: new
        connections get the new settings (and TLS certificates), established ones keep theirs."""
        assert self.dispatcher is not None and self.delivery is not None
        limits = {  # first, so that unusable TLS files leave the running configuration alone
            name: listener_limits(config.listeners[name])
            for name in self.listeners
            if name in config.listeners
        }
        self.dispatcher.swap(Router(config))
        await self.delivery.update(config.destinations)
        self._run_merge_targets(config)
        for name, listener in self.listeners.items():
            settings = config.listeners.get(name)
            if settings is None:
                log.warning("listener %s was removed; it keeps running until a restart", name)
                continue
            old = self.config.listeners[name]
            if (settings.host, settings.port) != (old.host, old.port):
                log.warning(
                    "listener %s moved to %s:%d; it keeps %s:%d until a restart",
                    name,
                    settings.host,
                    settings.port,
                    old.host,
                    old.port,
                )
                settings = dataclasses.replace(settings, host=old.host, port=old.port)
                limits[name] = dataclasses.replace(limits[name], host=old.host, port=old.port)
            self.intakes[name].listener = settings
            listener.limits = limits[name]
        for name in config.listeners.keys() - self.listeners.keys():
            log.warning("listener %s is new; it opens at the next restart", name)
        if self.trail is not None and config.audit != self.config.audit:
            self.trail.export = exporter(config.audit)
        self.config = config
        self._report_unread_listeners()
        warn_expiring_certificates(config)

    def _report_unread_listeners(self) -> None:
        """Once per configuration, not per message: a listener no route reads."""
        assert self.dispatcher is not None
        for name in self.listeners:
            if not self.dispatcher.has_routes(name):
                log.warning(
                    "listener %s: no route takes its messages; they are stored, acknowledged"
                    " and marked filtered",
                    name,
                )

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, answer what was received, route what is in hand while time remains,
        close the store: all within ``grace`` seconds (``shutdown_timeout`` by default)."""
        grace = self.shutdown_timeout if grace is None else grace
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._daily is not None:
            self._daily.cancel()
        if self.admin is not None:
            await self.admin.stop()
        if self.watcher is not None:
            await self.watcher.stop()
        # Messages already received are answered first: half the time at most (their commits
        # are bounded by the commit timeout); routing gets what remains but a second.
        await asyncio.gather(*(listener.stop(grace / 2) for listener in self.listeners.values()))
        if self.dispatcher is not None:
            await self.dispatcher.stop(until=deadline - min(1.0, grace / 4))
        if self.keeper is not None:  # stops the work it runs, then hands the leases back
            await self.keeper.stop()
        if self.delivery is not None:
            await self.delivery.stop()
        if self.pruner is not None:
            await self.pruner.stop()
        if self.writer is not None:
            await self.writer.close(timeout=max(0.5, deadline - loop.time()))
        if self.store is not None:
            self.store.dispose()
        if self._only_engine is not None:
            self._only_engine.close()
            self._only_engine = None
        log.info("engine stopped")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested)
        await self.start()
        log.info("engine ready")
        try:
            await self._stopping.wait()
        finally:
            log.info("shutting down")
            await self.stop()

    def _reload_requested(self) -> None:
        if self.watcher is None:
            log.warning("SIGHUP: no configuration folder to reload (started without one)")
            return
        log.info("SIGHUP: reloading the configuration")
        self.watcher.request()
