"""Pruning inside the running engine: each batch is one operation of the engine's writer (so it
never contends with the writer for the store), chosen by a read in a thread, at most
``rate`` messages a second; once every rule is caught up, the next pass waits ``interval``.

When several engines share a PostgreSQL store, only the holder of the pruning lease prunes: it
looks at the lease before each batch, and each batch is fenced by it (refused in its own
transaction once another engine took the lease over)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy import Engine

from engine.leases.keeper import Lease
from engine.leases.records import LeaseLost
from engine.retention.prune import Applied, Batch, Pruning, auto_vacuum_mode
from engine.retention.settings import RetentionSettings
from engine.store.database import describe_failure
from engine.store.fastsql import Statements
from engine.store.writer import StoreWriter

log = logging.getLogger(__name__)


class PruneBatch:
    """One batch as a write operation of the engine's writer (not urgent: it shares the next
    commit of received messages rather than taking an fsync of its own)."""

    urgent = False

    def __init__(self, pruning: Pruning, batch: Batch, lease: Lease | None = None) -> None:
        self.pruning = pruning
        self.batch = batch
        self.lease = lease

    def write(self, cursor: Any, statements: Statements) -> Applied:
        if self.lease is not None:
            self.lease.fence.check(cursor)
        return self.pruning.apply(cursor, statements, self.batch)

    def done(self, result: Any) -> None:
        """The writer's ``run`` reports the outcome to the waiting pass."""


class Pruner:
    """The engine's pruning task."""

    def __init__(self, settings: RetentionSettings, store: Engine, writer: StoreWriter) -> None:
        self.settings = settings
        self.store = store
        self.writer = writer
        self.pruning = Pruning(settings)
        self.pruned: dict[str, int] = {}
        """Messages pruned since the start, by rule (``metadata:delivered``…)."""
        self._task: asyncio.Task[None] | None = None
        self.lease: Lease | None = None
        """The pruning lease, when several engines share the store (None: alone)."""

    def start(self, lease: Lease | None = None) -> None:
        """Prune from now on (under ``lease``, when several engines share the store)."""
        self.lease = lease
        self._task = asyncio.get_running_loop().create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        mode = await asyncio.to_thread(auto_vacuum_mode, self.store)
        if mode not in (None, "incremental") and self.settings.vacuum:
            log.warning(
                "retention: this SQLite store was created with auto_vacuum=%s: pruned space is"
                " reused but the file never shrinks; `crosswalk prune --compact` with the engine"
                " stopped converts it (docs/operations.md)",
                mode,
            )
        while True:
            try:
                await asyncio.to_thread(self._load)
                await self.run_pass()
            except asyncio.CancelledError:
                raise
            except LeaseLost as error:  # the keeper stops this task; another engine prunes
                log.warning("retention: pruning stopped: %s", error)
            except Exception as error:  # the store is away: pruning waits, the feeds go on
                log.warning("retention: pruning stopped for now: %s", describe_failure(error))
            await asyncio.sleep(float(self.settings.interval))

    def _load(self) -> None:
        with self.store.connect() as connection:
            self.pruning.load(connection)

    def _next(self, index: int) -> Batch | None:
        with self.store.connect() as connection:
            return self.pruning.next_batch(connection, self.pruning.rules[index])

    async def run_pass(self) -> int:
        """Prune every rule until it is caught up; the number of messages pruned."""
        total = kept = 0
        for index, rule in enumerate(self.pruning.rules):
            while True:
                started = time.monotonic()
                batch = await asyncio.to_thread(self._next, index)
                if batch is None:
                    break
                if self.lease is not None and not self.lease.valid():
                    raise LeaseLost("the pruning lease was not renewed in time")
                op = PruneBatch(self.pruning, batch, self.lease)
                applied: Applied = await self.writer.run(op)
                self.pruning.advance(batch, applied)
                self.pruned[rule.name] = self.pruned.get(rule.name, 0) + applied.pruned
                total += applied.pruned
                kept += applied.kept
                # At most ``rate`` messages a second, however fast the store is.
                await asyncio.sleep(
                    max(0.0, len(batch.ids) / self.settings.rate - (time.monotonic() - started))
                )
                if batch.last:
                    break
        if total or kept:
            log.info(
                "retention: %d message(s) pruned, %d held back by their deliveries", total, kept
            )
        return total
