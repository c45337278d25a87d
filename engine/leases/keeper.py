"""The leases of one engine process, and the work each one guards.

The pipeline says what it would run (``want``: a name, how to start its work, how to stop it);
the keeper runs it when it holds that lease. On PostgreSQL it renews every held lease in one
statement each ``ttl / 4`` seconds, takes free leases up to its fair share (the wanted leases
divided by the engines alive) and hands back what is over it, so that engines started later get
work too. A lease not renewed in time stops its work before the database would let another
engine take it (``valid_until``, on this process's monotonic clock, which runs on while the
process is paused), so a holder that was paused or cut off from the database never acts after a
takeover; its writes are refused by their fence all the same. SQLite stores have no keeper:
one engine serves a file, and owns all of its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine

from engine.leases.records import (
    MEMBER,
    Fence,
    acquire,
    end_stalled_transactions,
    lease_engine,
    release,
    renew,
    survey,
)
from engine.store.database import describe_failure

log = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_TTL = 6.0
"""Seconds a lease lasts unless renewed: a dead engine's work is taken over after at most this
plus one renewal period (``ttl / 4``)."""


@dataclass(slots=True)
class Lease:
    """A lease this process holds: its fence for writes, and until when it may act on it."""

    name: str
    fence: Fence
    """Given to every write of the work: refused once another engine took the lease."""
    valid_until: float
    """``time.monotonic()`` past which the work must not act (renewal moves it on)."""
    keeper: LeaseKeeper | None = None

    def others_alive(self) -> bool:
        """Whether other engines share the store now: what they receive is only in the store,
        so the work reads it there instead of waiting to be told."""
        return self.keeper is not None and self.keeper.engines > 1

    def valid(self) -> bool:
        """Whether the work may still act: check right before anything outside the store
        (a send), since the fence protects only the writes."""
        return time.monotonic() < self.valid_until


Start = Callable[[Lease], Awaitable[None]]
"""Starts the work of a lease just taken (returns at once; the work runs in its own task)."""
Stop = Callable[[], Awaitable[None]]
"""Stops the work of a lease lost or given up (returns once it no longer acts)."""


@dataclass(slots=True)
class _Work:
    start: Start
    stop: Stop


@dataclass(slots=True)
class _Member:
    name: str
    epoch: int = 0


def new_holder() -> str:
    """A name for this process unique among engines: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(slots=True)
class LeaseKeeper:
    """Holds leases for one engine process and runs the work they guard."""

    store: Engine
    ttl: float = LEASE_TTL
    holder: str = field(default_factory=new_holder)
    flush: Callable[[], Awaitable[None]] | None = None
    """Waits until writes submitted so far are committed: before a lease is handed back, so
    that its next holder reads them."""
    describe: Callable[[], Mapping[str, Any]] | None = None
    """What this engine says of itself (listeners, admin endpoint): written into its row at
    every renewal, for ``crosswalk status`` on any engine."""
    held: dict[str, Lease] = field(default_factory=dict)
    _wanted: dict[str, _Work] = field(default_factory=dict)
    _member: _Member | None = None
    _task: asyncio.Task[None] | None = None
    _watch: asyncio.Task[None] | None = None
    _poke: asyncio.Event = field(default_factory=asyncio.Event)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stopped: bool = False
    _db: Engine | None = None
    """The keeper's own connections (statements bounded by a renewal period)."""
    _thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="leases")
    )
    """The keeper's own thread: a renewal never waits behind the engine's other blocking
    calls (the default executor has a few threads, all of them busy under load)."""
    engines: int = 1
    """Engines alive at the last look (this one included)."""

    def __post_init__(self) -> None:
        if self.store.dialect.name != "postgresql":
            raise ValueError("leases need PostgreSQL: an SQLite store serves one engine")

    @property
    def renew_every(self) -> float:
        return self.ttl / 4

    @property
    def margin(self) -> float:
        """Seconds before the database's expiry at which the work stops."""
        return min(1.0, self.ttl / 4)

    async def start(self) -> None:
        """Say this engine is alive and start renewing and taking leases."""
        end_stalled_transactions(self.store, self.ttl, self.holder)
        self._db = lease_engine(self.store, self.renew_every)
        self._member = _Member(MEMBER + self.holder)
        await self._join()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="leases")
        self._watch = loop.create_task(self._watch_expiry(), name="lease expiry")
        log.info("leases: this engine is %s (leases last %.0fs)", self.holder, self.ttl)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a lease statement on the keeper's own thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(function, *args))

    async def _join(self) -> None:
        assert self._member is not None
        epoch = await self._call(acquire, self._leases(), self._member.name, self.holder, self.ttl)
        self._member.epoch = epoch or 0

    def _leases(self) -> Engine:
        assert self._db is not None, "start() first"
        return self._db

    def holds(self, name: str) -> bool:
        return name in self.held

    def want(self, name: str, start: Start, stop: Stop) -> None:
        """Run this work whenever this process holds the lease ``name`` (taken at the next
        renewal if free). Wanting a name again replaces how its work starts and stops."""
        self._wanted[name] = _Work(start, stop)
        self._poke.set()

    async def settle(self) -> None:
        """Renew and take leases now (at start-up: before the listeners open, the work this
        engine can take is running)."""
        try:
            async with self._lock:
                await self._tick()
        except Exception as error:
            log.warning("leases: cannot reach the store (%s)", describe_failure(error))

    async def unwant(self, name: str) -> None:
        """Stop this work for good (its configuration was removed) and hand its lease back."""
        if name in self.held:
            async with self._lock:
                await self._give_back([name])
        self._wanted.pop(name, None)

    async def stop(self) -> None:
        """Stop every work, hand every lease back and say this engine is gone."""
        self._stopped = True
        for task in (self._task, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        async with self._lock:
            await self._give_back(list(self.held), member=True)
        if self._db is not None:
            self._db.dispose()
        self._thread.shutdown(wait=False)

    async def _run(self) -> None:
        while True:
            self._poke.clear()  # a want() from here on is seen at the next tick
            try:
                async with self._lock:
                    await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning(
                    "leases: cannot reach the store (%s); the work whose lease is not renewed"
                    " in time stops",
                    describe_failure(error),
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.renew_every):
                    await self._poke.wait()

    async def _tick(self) -> None:
        """Renew what is held, then take or hand back leases to reach the fair share."""
        assert self._member is not None
        began = time.monotonic()
        held = {name: lease.fence.epoch for name, lease in self.held.items()}
        held[self._member.name] = self._member.epoch
        info = None if self.describe is None else dict(self.describe())
        kept, locked = await self._call(renew, self._leases(), self.holder, held, self.ttl, info)
        if self._member.name not in kept | locked:
            await self._join()  # deleted as dead while this engine was paused: join again
        until = began + self.ttl - self.margin
        for name, lease in list(self.held.items()):
            if name in kept:
                lease.valid_until = until
            elif name in locked:
                log.warning("leases: %s could not be renewed (its row is locked)", name)
            else:
                log.warning("leases: %s was taken over by another engine; its work stops", name)
                await self._stop_work(name)
        if self._stopped:
            return
        seen = await self._call(survey, self._leases(), list(self._wanted), self.holder)
        self.engines = seen.engines
        share = math.ceil(len(self._wanted) / seen.engines)
        if len(self.held) > share:
            await self._give_back(sorted(self.held)[share:])
            return
        free = [n for n in self._wanted if n not in self.held and n not in seen.taken]
        for name in free[: share - len(self.held)]:
            await self._take(name)

    async def _take(self, name: str) -> None:
        began = time.monotonic()
        epoch = await self._call(acquire, self._leases(), name, self.holder, self.ttl)
        if epoch is None:
            return  # another engine was quicker
        fence = Fence(name, self.holder, epoch)
        lease = Lease(name, fence, began + self.ttl - self.margin, keeper=self)
        self.held[name] = lease
        log.info("leases: took %s (epoch %d)", name, epoch)
        try:
            await self._wanted[name].start(lease)
        except Exception:
            log.exception("leases: the work of %s failed to start; handing it back", name)
            await self._give_back([name])

    async def _give_back(self, names: list[str], *, member: bool = False) -> None:
        """Stop the work, let its last writes commit, then release the leases at once."""
        epochs = {}
        for name in names:
            lease = self.held.get(name)
            if lease is not None:
                epochs[name] = lease.fence.epoch
            await self._stop_work(name, handing_back=True)
        if self.flush is not None:
            with contextlib.suppress(Exception):
                await self.flush()
        if member and self._member is not None:
            epochs[self._member.name] = self._member.epoch
        try:
            await self._call(release, self._leases(), self.holder, epochs)
        except Exception as error:  # they expire by themselves
            log.warning("leases: could not hand back %s: %s", names, describe_failure(error))
        for name in names:
            log.info("leases: handed %s back", name)

    async def _stop_work(self, name: str, *, handing_back: bool = False) -> None:
        """Stop the work of a lease. Handing it back, the lease stays valid while the work
        stops, so that it may finish what is in flight (a delivery worker's exchange); lost,
        it is invalid at once."""
        lease = self.held.pop(name, None)
        if lease is None:
            return
        if not handing_back:
            lease.valid_until = -math.inf
        work = self._wanted.get(name)
        if work is not None:
            try:
                await work.stop()
            except Exception:
                log.exception("leases: the work of %s failed to stop", name)
        lease.valid_until = -math.inf

    async def _watch_expiry(self) -> None:
        """Stop the work of every lease not renewed in time, the moment its time is up."""
        while True:
            now = time.monotonic()
            due = min((lease.valid_until for lease in self.held.values()), default=math.inf)
            if due <= now:
                expired = [n for n, lease in self.held.items() if lease.valid_until <= now]
                log.error(
                    "leases: not renewed in time (the store is unreachable, or this process was"
                    " paused); stopping the work of %d lease(s) until they are taken again",
                    len(expired),
                )
                for name in expired:
                    await self._stop_work(name)
                self._poke.set()
                continue
            await asyncio.sleep(min(due - now, self.renew_every))
