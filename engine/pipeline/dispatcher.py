"""The dispatcher: routes each accepted message, records its fate, queues its deliveries.

Messages arrive from intake right after their commit, in commit order. The dispatcher routes
them in batches (in the routing process, or on the event loop:
:mod:`engine.pipeline.routing_process`), commits each batch's status changes and queued
deliveries in one write, and hands the deliveries to their workers once committed.

It waits for each batch's commit before routing the next: if a commit fails, nothing later has
been recorded, the messages stay ``received`` in the store, and the dispatcher reads them back
from the store in order. The same reading happens at start-up, before listeners open, so a
message accepted before a crash is routed before anything newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from sqlalchemy import Engine, select

from engine.leases.keeper import Lease
from engine.pipeline.routing_process import InlineRouting
from engine.routes.router import Router
from engine.store.limits import (
    BATCH_BYTES,
    PENDING_BYTES,
    PENDING_MESSAGES,
    READ_BYTES,
    READ_ROWS,
    fitting,
)
from engine.store.operations import Fence, QueuedDelivery, RoutingRecord
from engine.store.received import AcceptedMessage
from engine.store.schema import Message, MessageStatus
from engine.store.writer import StoreWriter

log = logging.getLogger(__name__)

BATCH = 64
"""Messages routed per slice of the event loop (and at most ``BATCH_BYTES`` of them)."""
PENDING_LIMIT = PENDING_MESSAGES
RETRY_AFTER = 5.0
SHARED_POLL = 0.25
"""Seconds between reads of the store for messages other engines received (several engines)."""


def load_received(
    engine: Engine, after_id: int, limit: int = READ_ROWS, max_bytes: int = READ_BYTES
) -> list[AcceptedMessage]:
    """Stored messages still waiting to be routed, oldest first: at most ``limit`` of them and
    ``max_bytes`` of message (at least one)."""
    waiting = (Message.status == MessageStatus.RECEIVED, Message.id > after_id)
    sizes = select(Message.id, Message.size).where(*waiting).order_by(Message.id).limit(limit)
    with engine.connect() as connection:
        heads = connection.execute(sizes).all()
        taken = fitting((size for _, size in heads), limit, max_bytes)
        if not taken:
            return []
        query = (
            select(Message.id, Message.raw, Message.charset, Message.listener)
            .where(*waiting, Message.id <= heads[taken - 1][0])
            .order_by(Message.id)
        )
        return [AcceptedMessage(*row) for row in connection.execute(query)]


class Dispatcher:
    """Routes accepted messages and queues their deliveries."""

    def __init__(
        self,
        routing: InlineRouting,
        writer: StoreWriter,
        store: Engine,
        deliver: Callable[[list[QueuedDelivery]], None],
        observe_routed: Callable[[str], None] = lambda status: None,
    ) -> None:
        self.routing = routing
        self.observe_routed = observe_routed
        """Told the status routing gave each message (the engine's metrics)."""
        """Where routing runs (on the event loop, or in a child process)."""
        self.writer = writer
        self.store = store
        self.deliver = deliver
        self.pending: deque[AcceptedMessage] = deque()
        self.pending_bytes = 0
        self.from_store = True
        self.missed = False  # accepted while the store was being read: read it again
        self.routed = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_id = 0
        self._rescan = False
        self.fence: Fence | None = None
        """The routing lease, when several engines share the store: every record is fenced."""
        self.lease: Lease | None = None
        """The routing lease, when several engines share the store."""
        self.caught_up = asyncio.Event()
        """Set once what the store held as received when routing began is routed."""
        self._in_flight = False
        """A batch is being routed and recorded (its record may or may not commit if cut)."""

    def accept(self, message: AcceptedMessage) -> None:
        """Intake committed ``message``; route it soon."""
        if self.from_store:
            self.missed = True
        elif self._crowded():
            # Another engine may have stored a message of the same feed just before this one:
            # only the store has them in order.
            self._read_from_store()
        elif (
            len(self.pending) >= PENDING_LIMIT
            or self.pending_bytes + len(message.raw) > PENDING_BYTES
        ):
            # Routing fell this far behind: keep memory bounded, read the rest from the store.
            log.warning(
                "routing is %d messages (%d KiB) behind; reading them from the store as it"
                " catches up",
                len(self.pending),
                self.pending_bytes // 1024,
            )
            self._read_from_store()
        else:
            self.pending.append(message)
            self.pending_bytes += len(message.raw)
        self._wakeup.set()

    def recheck(self) -> None:
        """A received message's commit failed or went unanswered: the database may have
        committed it all the same (a server that stopped answering), so the next read of the
        store starts from the oldest message still waiting, not after the last one routed."""
        self._rescan = True
        self._read_from_store()
        self._wakeup.set()

    def _read_from_store(self) -> None:
        """Forget what is held in memory: the store has it, and the next read takes it."""
        self.pending.clear()
        self.pending_bytes = 0
        self.from_store = self.missed = True

    def _take_batch(self) -> list[AcceptedMessage]:
        """The next routing batch from what is held: BATCH messages, BATCH_BYTES at most."""
        count = fitting((len(m.raw) for m in self.pending), BATCH, BATCH_BYTES)
        batch = [self.pending.popleft() for _ in range(count)]
        self.pending_bytes -= sum(len(m.raw) for m in batch)
        return batch

    def _crowded(self) -> bool:
        """Whether other engines store messages too (this engine routes for all of them)."""
        return self.lease is not None and self.lease.others_alive()

    def has_routes(self, listener: str) -> bool:
        return bool(self.routing.router.routes_for(listener))

    def swap(self, router: Router) -> None:
        """Route with a new configuration from the next message on."""
        self.routing.swap(router)

    async def catch_up(self) -> None:
        """Route everything the store holds as received: at start-up (before the listeners
        open), and after routing fell behind or its results could not be stored."""
        starting = self.routed == 0
        caught = 0
        if self._rescan:
            self._rescan = False
            self._last_id = 0
        while True:
            self.missed = False
            # With other engines, every read starts from the oldest message waiting: one they
            # stored can commit after a message with a later id was routed, and reading past
            # the last id routed would leave it behind the newer messages of its own feed.
            after = 0 if self._crowded() else self._last_id
            batch = await asyncio.to_thread(load_received, self.store, after)
            if not batch:
                if self.missed:  # committed after the read began: read again
                    continue
                break
            caught += len(batch)
            while batch:
                count = fitting((len(m.raw) for m in batch), BATCH, BATCH_BYTES)
                await self._route(batch[:count])
                del batch[:count]
        if caught:
            log.info(
                "routed %d message(s) %s",
                caught,
                "left from before the restart" if starting else "from the store",
            )
        self.from_store = False
        self.caught_up.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dispatcher")

    async def take(self, lease: Lease) -> None:
        """This engine took the routing lease: route from the store (every engine's messages
        waiting), then as they come, reading the store for other engines' messages every
        ``SHARED_POLL`` seconds while other engines are alive."""
        self.fence = lease.fence
        self.lease = lease
        self.recheck()
        self.start()

    async def release(self) -> None:
        """The routing lease was lost or handed back: stop routing at once (the messages stay
        received in the store, for the next holder)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._read_from_store()

    @property
    def running(self) -> bool:
        """Whether routing runs (its task started and has not ended)."""
        return self._task is not None and not self._task.done()

    async def stop(self, until: float | None = None) -> None:
        """Route what is in hand until the loop's clock reads ``until``, then stop: what is
        left stays received in the store and is routed first at the next start."""
        loop = asyncio.get_running_loop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._in_flight:
            # The batch cut short may stay unrecorded: routing the messages after it now would
            # queue them ahead of it. The store has them all, in order, for the next start.
            log.info(
                "routing stopped mid-batch: it and %d message(s) after it left unrouted at"
                " shutdown; they are routed first at the next start",
                len(self.pending),
            )
            self._read_from_store()
        while self.pending and not self.from_store:
            left = None if until is None else until - loop.time()
            if left is not None and left <= 0:
                break
            batch = self._take_batch()
            try:
                async with asyncio.timeout(left):  # wait_for may swallow a cancellation
                    await self._route(batch)
            except (Exception, TimeoutError):
                self.pending.extendleft(reversed(batch))  # for the count below
                break
        if self.pending:
            log.info(
                "%d message(s) left unrouted at shutdown; they are routed first at the next start",
                len(self.pending),
            )
        await self.routing.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        polled = loop.time()
        while True:
            if self._crowded() and loop.time() - polled >= SHARED_POLL:
                polled = loop.time()
                self.recheck()  # other engines' messages are only in the store
            if self.from_store:
                try:
                    await self.catch_up()
                except Exception as error:
                    log.error(
                        "routing from the store failed (%s); retrying in %.0fs",
                        type(error).__name__,
                        RETRY_AFTER,
                    )
                    await asyncio.sleep(RETRY_AFTER)
                continue
            if not self.pending:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):  # leased: look again at the others
                    async with asyncio.timeout(None if self.lease is None else SHARED_POLL):
                        await self._wakeup.wait()
                continue
            batch = self._take_batch()
            self._in_flight = True
            try:
                await self._route(batch)
            except Exception as error:
                log.error(
                    "routing results could not be stored (%s); the messages stay received"
                    " and are routed again from the store in %.0fs",
                    type(error).__name__,
                    RETRY_AFTER,
                )
                self._read_from_store()
                self._last_id = batch[0].id - 1
                self._in_flight = False
                await asyncio.sleep(RETRY_AFTER)
            self._in_flight = False
            await asyncio.sleep(0)  # let the listeners in between batches

    async def _route(self, batch: list[AcceptedMessage]) -> None:
        routed, failures = await self.routing.route(batch)
        for message_id, trace in failures:  # a bug must not stop the feed: recorded, go on
            log.error("routing message %d failed\n%s", message_id, trace)
        for message in routed:
            self.observe_routed(message.status)
            if message.status == MessageStatus.ERRORED:
                log.warning(
                    "message %d errored in routing: %s; `crosswalk messages show %d` says why",
                    message.message_id,
                    message.summary or "see the message",
                    message.message_id,
                )
        queued = await self.writer.run(
            RoutingRecord(routed, done=lambda result: None, fence=self.fence)
        )
        self._last_id = batch[-1].id
        self.routed += len(batch)
        self.deliver(queued)
