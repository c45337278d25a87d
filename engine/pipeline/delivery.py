"""Delivery: one worker per destination (and partition) sends its queue in order over MLLP.

A worker sends the message at the head of its queue and does not move on until the destination
has acknowledged it:

- AA/CA: delivered; the answer is stored.
- no connection, no answer in time, connection lost: wait (``retry_initial``, doubling up to
  ``retry_max``), reconnect, send the same message again. Order is kept: nothing overtakes it.
- AE/AR (CE/CR): send it again up to ``nak_retries`` times; then, per ``on_nak``, stop the queue
  until an operator resumes it (the default, safe for ADT) or set it aside as errored and go on.

The queue lives in the store; the worker keeps a window of it in memory, fed by the dispatcher as
deliveries are committed, and reads the store when it starts, after an outage that overflowed the
window, and when an operator changed the queue (``crosswalk queue retry``, ``messages resend``).
Delivery is at least once: a message the destination accepted just before a crash is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from engine.hl7v2.ack import AckReply, read_ack, sent_control_id
from engine.leases.keeper import Lease, LeaseKeeper
from engine.leases.records import LeaseLost, queue_lease
from engine.mllp.client import MLLPClient, MLLPError
from engine.mllp.tls import client_context
from engine.pipeline.settings import DestinationSettings
from engine.store.database import describe_failure
from engine.store.limits import WINDOW_BYTES, WINDOW_DELIVERIES
from engine.store.operations import DeliveryUpdate, Fence, QueuedDelivery
from engine.store.queue import Control, load_queued, queued_partitions, read_controls, set_control
from engine.store.schema import DeliveryState
from engine.store.writer import Chain, StoreWriter

log = logging.getLogger(__name__)

WINDOW = WINDOW_DELIVERIES
"""Deliveries a worker keeps in memory (and at most ``WINDOW_BYTES`` of them); beyond that it
reads them from the store as it goes."""
CONTROL_POLL = 1.0
"""Seconds between reads of the operators' controls (pause, resume, retry)."""
STORE_RETRY_MAX = 30.0
"""Longest wait before sending again after a delivery's outcome could not be stored."""
ANSWERED_KEPT = 8
"""Control ids of a connection's last settled messages: a late answer to one is passed over."""
SHARED_POLL = 0.25
"""Seconds between reads of an idle queue while other engines share the store (one of them
may be the one routing messages into it)."""
HAND_BACK_GRACE = 0.5
"""Seconds a worker handing its queue to another engine waits at most for the exchange in
flight (a PACS answers in milliseconds; the lease keeper waits meanwhile)."""


class Window:
    """The head of a queue held in memory, with the bytes of its payloads counted."""

    def __init__(self) -> None:
        self._items: deque[QueuedDelivery] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[QueuedDelivery]:
        return iter(self._items)

    def __getitem__(self, index: int) -> QueuedDelivery:
        return self._items[index]

    @property
    def full(self) -> bool:
        return len(self._items) >= WINDOW or self.bytes >= WINDOW_BYTES

    def append(self, delivery: QueuedDelivery) -> None:
        self._items.append(delivery)
        self.bytes += len(delivery.payload)

    def extend(self, deliveries: Iterable[QueuedDelivery]) -> None:
        for delivery in deliveries:
            self.append(delivery)

    def popleft(self) -> QueuedDelivery:
        delivery = self._items.popleft()
        self.bytes -= len(delivery.payload)
        return delivery

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


class QueueWorker:
    """Works through one partition of one destination's queue, in order.

    Keeps a window of the queue in memory, fed by the dispatcher as deliveries are committed,
    and reads the store when it starts, when the window overflowed, and when an operator
    changed the queue. Subclasses say what working on a delivery means.
    """

    def __init__(
        self,
        destination: str,
        partition: int,
        writer: StoreWriter,
        store: Engine,
        *,
        parallel: bool = False,
        stopped: Callable[[str, Control], None] = lambda name, control: None,
    ) -> None:
        self.destination = destination
        self.parallel = parallel
        self.stopped = stopped
        """Told when this worker stopped its destination's queue (after a NAK)."""
        self.partition = partition
        self.writer = writer
        self.store = store
        self.items = Window()
        self.last_id = 0
        self.from_store = True  # read the queue from the store before trusting pushes
        self.missed = False  # a push arrived while reading the store: read again
        self.paused = False
        self.pause_reason = ""
        self.delivered = 0
        self._wakeup = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._reload = False
        self._stopping = False
        self._interrupt = asyncio.Event()
        """Ends a wait before a retry: the engine stops, or an operator resumed the queue."""
        self._task: asyncio.Task[None] | None = None
        self.observe: Callable[[str, str], None] = _unobserved
        """Told of each outcome (a delivery settled, or ``retry``: an attempt failed)."""
        self._uncommitted: dict[int, asyncio.Future[None]] = {}
        """Settled deliveries whose new state is not committed yet."""
        self.lease: Lease | None = None
        """The lease of this queue when several engines share the store (None: alone): its
        fence goes with every result, and nothing is sent once it is no longer valid."""

    def fresh(self) -> QueueWorker:
        """A new worker for the same queue and settings (a lease taken again)."""
        raise NotImplementedError

    @property
    def fence(self) -> Fence | None:
        return None if self.lease is None else self.lease.fence

    def check_lease(self) -> None:
        """Raise :class:`LeaseLost` once this worker may no longer act (right before a send)."""
        if self.lease is not None and not self.lease.valid():
            raise LeaseLost(f"the lease of {self.name} was not renewed in time")

    async def parked(self) -> None:
        """The lease ran out: wait to be stopped (the keeper stops the work)."""
        log.warning("destination %s: lease not renewed in time; nothing more is sent", self.name)
        await asyncio.Event().wait()

    @property
    def name(self) -> str:
        suffix = f"#{self.partition}" if self.parallel or self.partition else ""
        return f"{self.destination}{suffix}"

    @property
    def who(self) -> str:
        """How the log names this worker."""
        return f"destination {self.name}"

    async def _start_again(self, error: Exception) -> None:
        """The worker's loop failed: read the queue from the store again in 5 s. A store that is
        away is one line without its statement (whose parameters may be PHI)."""
        if isinstance(error, DBAPIError):
            log.warning(
                "%s: the store cannot be read (%s); trying again in 5s",
                self.who,
                describe_failure(error),
            )
        else:
            log.exception("%s: worker failed; restarting it in 5s", self.who)
        self._restart_from_store()
        await asyncio.sleep(5)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"deliver {self.name}"
        )

    async def stop(self) -> None:
        """Stop working the queue. A worker whose lease is still valid (its engine hands the
        queue to another one) first lets the exchange in flight end and its outcome be
        submitted, for up to ``HAND_BACK_GRACE`` seconds: cut short, the next holder would send
        that message again. Without a lease, or with one lost, it stops at once."""
        self._stopping = True
        self._interrupt.set()
        self._wakeup.set()
        self._resumed.set()
        if self._task is None:
            return
        if self.lease is not None and self.lease.valid():
            # The keeper renews its other leases after this: an eighth of what is left of the
            # lease at most, so that handing several queues back never lets the rest lapse.
            left = self.lease.valid_until - time.monotonic()
            with contextlib.suppress(TimeoutError, Exception):
                async with asyncio.timeout(min(HAND_BACK_GRACE, left / 8)):
                    await asyncio.shield(self._task)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    async def _run(self) -> None:
        raise NotImplementedError

    def push(self, delivery: QueuedDelivery) -> None:
        """A delivery was committed to this worker's queue."""
        if self.from_store or self.items.full:
            if not self.from_store:
                log.info(
                    "destination %s: over %d queued (%d KiB); reading the queue from the store",
                    self.name,
                    len(self.items),
                    self.items.bytes // 1024,
                )
            self.from_store = True
            self.missed = True
        elif delivery.id > self.last_id:
            self.items.append(delivery)
            self.last_id = delivery.id
        self._wakeup.set()

    def apply(self, control: Control, reload: bool) -> None:
        """An operator (or a worker) paused, resumed, or changed the queue."""
        if control.paused != self.paused:
            self.paused = control.paused
            self.pause_reason = control.reason
            if control.paused:
                self._resumed.clear()
                log.warning("destination %s paused; `crosswalk queue status` says why", self.name)
            else:
                self._resumed.set()
                log.info("destination %s resumed", self.name)
        if reload:  # an operator's change (resume, retry): a waiting retry goes at once
            self._reload = True
            self._wakeup.set()
            self._interrupt.set()

    async def _next(self) -> QueuedDelivery | None:
        """The head of the queue, or None after loading or waiting (call again)."""
        if self._reload:
            self._reload = False
            self.items.clear()
            self.from_store, self.last_id = True, 0
        if self.items:
            return self.items[0]
        if self.from_store:
            self.missed = False
            if self._uncommitted:
                # Read the queue only once what was settled is committed, or it comes back.
                await asyncio.wait(list(self._uncommitted.values()))
            rows = await asyncio.to_thread(
                load_queued, self.store, self.destination, self.partition, self.last_id
            )
            rows = [r for r in rows if r.id not in self._uncommitted]
            if rows:
                self.items.extend(rows)
                self.last_id = rows[-1].id
                return None
            if self.missed:
                return None
            self.from_store = False
        self._wakeup.clear()
        if not self.items and not self.from_store and not self._reload:
            try:
                async with asyncio.timeout(None if self.lease is None else SHARED_POLL):
                    await self._wakeup.wait()
            except TimeoutError:
                if self.lease is not None and self.lease.others_alive():
                    self.from_store = True  # another engine may have queued deliveries
        return None

    async def _sleep(self, seconds: float) -> bool:
        """Wait before a retry, unless the engine stops or an operator resumes the queue first
        (then True: try at once)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._interrupt.wait()
        interrupted = self._interrupt.is_set()
        if not self._stopping:
            self._interrupt.clear()
        return interrupted

    def _restart_from_store(self) -> None:
        self.items.clear()
        self.from_store, self.last_id = True, 0


class DestinationWorker(QueueWorker):
    """Sends one partition of an MLLP destination's queue, in order."""

    def __init__(
        self,
        settings: DestinationSettings,
        partition: int,
        writer: StoreWriter,
        store: Engine,
        stopped: Callable[[str, Control], None] = lambda name, control: None,
    ) -> None:
        super().__init__(
            settings.name,
            partition,
            writer,
            store,
            parallel=settings.worker_count > 1,
            stopped=stopped,
        )
        self.settings = settings
        _warn_insecure(settings)
        self._client: MLLPClient | None = None
        self._answered: deque[str] = deque(maxlen=ANSWERED_KEPT)
        """MSH-10s this connection's last settled messages were sent with."""
        self._chain = Chain()
        """This worker's results, committed in order: one that fails refuses the later ones."""
        self._careful = False
        """Since a failed commit: wait for each outcome to be stored before the next send."""

    def update_settings(self, settings: DestinationSettings) -> None:
        self.settings = settings
        _warn_insecure(settings)

    def fresh(self) -> DestinationWorker:
        return DestinationWorker(
            self.settings, self.partition, self.writer, self.store, self.stopped
        )

    async def stop(self) -> None:
        await super().stop()
        if self._client is not None:
            await self._client.close()

    async def _run(self) -> None:
        backoff = store_backoff = 0.0
        while not self._stopping:
            try:
                if self._chain.broken is not None:
                    store_backoff = min(STORE_RETRY_MAX, store_backoff * 2 or 1.0)
                    await self._rewind(store_backoff)
                    continue
                delivery = await self._next()
                if delivery is None:
                    continue
                await self._resumed.wait()
                if self._stopping:
                    break
                backoff = await self._deliver(delivery, backoff)
                if self._chain.broken is None:
                    store_backoff = 0.0
            except asyncio.CancelledError:
                raise
            except LeaseLost:
                await self.parked()
            except Exception as error:
                await self._start_again(error)

    async def _rewind(self, wait: float) -> None:
        """A delivery's outcome could not be stored: send again from the first message whose
        outcome is not stored, in order (the destination may get some messages twice)."""
        error = self._chain.broken
        log.error(
            "destination %s: the outcome of a delivery could not be stored (%s); nothing later"
            " is recorded, and the queue is sent again from there in %.0fs",
            self.name,
            type(error).__name__,
            wait,
        )
        self._chain = Chain()
        self._careful = True
        await self._sleep(wait)
        self._restart_from_store()  # reads the store once the refused results are settled

    async def _deliver(self, delivery: QueuedDelivery, backoff: float) -> float:
        """Send the head of the queue until it is settled; returns the backoff to carry on with."""
        settings = self.settings
        naks = 0
        attempts = delivery.attempts
        while not self._stopping:
            await self._resumed.wait()
            attempts += 1
            try:
                reply, raw, expected = await self._send(delivery)
            except MLLPError as error:
                backoff = min(settings.retry_max, backoff * 2 or settings.retry_initial)
                log.warning(
                    "destination %s: %s; delivery %d (control_id=%s) retried in %.0fs",
                    self.name,
                    error,
                    delivery.id,
                    delivery.control_id,
                    backoff,
                )
                self._record(
                    delivery, DeliveryState.QUEUED, attempts, str(error), None, retry_in=backoff
                )
                if await self._sleep(backoff):
                    backoff = 0.0  # resumed by an operator: the back-off starts again
                continue
            backoff = 0.0
            # An AA naming no message (MSA-2 empty) acknowledges nothing: never a success.
            mismatched = reply.control_id != expected
            if reply.positive and not mismatched:
                self._answered.append(expected)
                await self._settle(delivery, DeliveryState.DELIVERED, attempts, "", raw)
                return backoff
            naks += 1
            # MSA-3 and the ERR text are the receiver's words and may quote patient data: they
            # are stored with the delivery, while logs name only the codes.
            said = f"answered {reply.code or 'no MSA'}"
            if mismatched and reply.control_id:
                said += (
                    f" for another message (MSA-2 {_shown(reply.control_id)}, sent MSH-10"
                    f" {_shown(expected)})"
                )
            elif mismatched and reply.code:
                said += f" naming no message (MSA-2 empty, sent MSH-10 {_shown(expected)})"
            reason = said + (f" ({reply.error})" if reply.error else "")
            reason += f": {reply.text}" if reply.text else ""
            if reply.error_code:
                said += f" (ERR {reply.error_code})"
            if naks <= settings.nak_retries:
                log.warning(
                    "destination %s: delivery %d (control_id=%s) %s; resending",
                    self.name,
                    delivery.id,
                    delivery.control_id,
                    said,
                )
                self._record(delivery, DeliveryState.QUEUED, attempts, reason, raw)
                await self._sleep(settings.retry_initial)
                continue
            if settings.on_nak == "set_aside":
                log.error(
                    "destination %s: delivery %d (control_id=%s) %s; set aside as errored",
                    self.name,
                    delivery.id,
                    delivery.control_id,
                    said,
                )
                self._answered.append(expected)
                await self._settle(delivery, DeliveryState.ERRORED, attempts, reason, raw)
                return backoff
            message = f"delivery {delivery.id} (control_id={delivery.control_id}) {reason}"
            log.error(
                "destination %s STOPPED: delivery %d (control_id=%s) %s; resume with"
                " `crosswalk queue resume %s`",
                self.name,
                delivery.id,
                delivery.control_id,
                said,
                settings.name,
            )
            self._record(delivery, DeliveryState.QUEUED, attempts, reason, raw)
            control = await asyncio.to_thread(
                set_control, self.store, settings.name, paused=True, reason=message
            )
            self.stopped(settings.name, control)
            naks = 0
        return backoff

    async def _send(self, delivery: QueuedDelivery) -> tuple[AckReply, bytes, str]:
        """Send the delivery; its answer, as read and raw, and the MSA-2 it should carry."""
        settings = self.settings
        if self._client is None:
            client = MLLPClient(
                settings.host,
                settings.port,
                connect_timeout=float(settings.connect_timeout),
                ack_timeout=float(settings.ack_timeout),
                tls=_tls_context(settings),
                server_name=settings.tls.server_name if settings.tls else None,
            )
            await client.connect()
            self._client = client
            self._answered.clear()
            log.info("destination %s: connected to %s:%d", self.name, settings.host, settings.port)
        expected = sent_control_id(delivery.payload)
        self.check_lease()  # nothing between this and the write: no send after a takeover
        try:
            await self._client.write(delivery.payload)
            while True:
                raw = await self._client.read()
                reply = read_ack(raw)
                # A late answer to a message already settled (a receiver's application ACK
                # after its commit ACK): not the answer to this one. Any other MSA-2 is a
                # wrong answer, judged by the caller.
                if reply.control_id != expected and reply.control_id in self._answered:
                    continue
                return reply, raw, expected
        except MLLPError:
            self._client.abort()  # a message it may still read would come after its resend
            self._client = None
            raise

    def _record(
        self,
        delivery: QueuedDelivery,
        state: str,
        attempts: int,
        error: str,
        ack: bytes | None,
        *,
        retry_in: float | None = None,
    ) -> None:
        due = None if retry_in is None else datetime.now(UTC) + timedelta(seconds=retry_in)
        if state == DeliveryState.QUEUED:
            self.observe(self.destination, "retry")
        self.writer.submit(
            DeliveryUpdate(
                delivery.id,
                state,
                attempts,
                error,
                ack,
                done=_log_failure,
                next_attempt_at=due,
                fence=self.fence,
            )
        )

    async def _settle(
        self, delivery: QueuedDelivery, state: str, attempts: int, error: str, ack: bytes | None
    ) -> None:
        """Record the delivery's outcome and move on. The next message is sent while the outcome
        commits (the chain keeps the results in order), except after a failed commit: then each
        outcome is waited for, so a failing store costs one repeated message, not a window. A
        leased queue (several engines) always waits: an engine that dies leaves the next holder
        at most the one message in flight to send again."""
        self.items.popleft()
        if state == DeliveryState.DELIVERED:
            self.delivered += 1
        self.observe(self.destination, state)
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._uncommitted[delivery.id] = committed

        def done(result: object) -> None:
            self._uncommitted.pop(delivery.id, None)
            if not committed.done():
                committed.set_result(None)
            _log_failure(result)
            if isinstance(result, BaseException):
                # The worker may be idle by now (the queue sent before the outcome commits):
                # wake it, to go back to the first message whose outcome is not stored.
                self._wakeup.set()

        chain = self._chain
        self.writer.submit(
            DeliveryUpdate(
                delivery.id, state, attempts, error, ack, done=done, chain=chain, fence=self.fence
            )
        )
        if self._careful or self.lease is not None:
            await committed
            self._careful = chain.broken is not None


def _tls_context(settings: DestinationSettings) -> ssl.SSLContext | None:
    """A new connection's TLS context, its files read now (renewed files are picked up)."""
    if settings.tls is None:
        return None
    try:
        return client_context(settings.tls)
    except (OSError, ssl.SSLError, ValueError) as error:
        raise MLLPError(f"its TLS files cannot be used: {error}") from None


def _warn_insecure(settings: DestinationSettings) -> None:
    if settings.tls is not None and settings.tls.insecure_skip_verify:
        log.error(
            "destination %s: TLS certificate verification is OFF (insecure_skip_verify): anyone"
            " between Crosswalk and %s:%d can read and change the messages",
            settings.name,
            settings.host,
            settings.port,
        )


def _shown(control_id: str, limit: int = 40) -> str:
    """A control id for a reason or log line, cut to a readable length."""
    return repr(control_id if len(control_id) <= limit else control_id[:limit] + "…")


def _log_failure(result: object) -> None:
    if isinstance(result, BaseException):
        log.error(
            "a delivery result could not be stored: %s (it will be sent again)",
            type(result).__name__,
        )


def _unobserved(destination: str, outcome: str) -> None:
    pass


class DeliveryService:
    """Every destination's workers, and the operators' controls applied to them.

    With a lease keeper (several engines share the store), a worker runs only while this engine
    holds the lease of its queue partition; ``workers`` holds those running here.
    """

    def __init__(
        self,
        destinations: Mapping[str, DestinationSettings],
        writer: StoreWriter,
        store: Engine,
        observe: Callable[[str, str], None] | None = None,
        keeper: LeaseKeeper | None = None,
    ) -> None:
        self.destinations = destinations
        self.writer = writer
        self.store = store
        self.observe = observe or _unobserved
        """Told of each worker's outcomes (the engine's metrics)."""
        self.keeper = keeper
        self.workers: dict[tuple[str, int], QueueWorker] = {}
        self._leased: dict[tuple[str, int], QueueWorker] = {}
        """With a keeper: each queue's worker as configured, copied when its lease is taken."""
        self._applied: dict[str, int] = {}
        """Per destination, the generation of the last control applied."""
        self._control_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        controls = await asyncio.to_thread(read_controls, self.store)
        self._applied = {name: control.generation for name, control in controls.items()}
        for settings in self.destinations.values():
            await self._start_destination(settings, controls.get(settings.name, Control()))
        self._control_task = asyncio.get_running_loop().create_task(self._poll_controls())

    async def _start_destination(self, settings: DestinationSettings, control: Control) -> None:
        partitions = set(range(settings.worker_count))
        partitions |= await asyncio.to_thread(queued_partitions, self.store, settings.name)
        for partition in sorted(partitions):
            if (settings.name, partition) in self.workers | self._leased:
                continue
            worker = DestinationWorker(
                settings, partition, self.writer, self.store, stopped=self._stopped
            )
            worker.apply(control, reload=False)
            self._launch(worker)

    def add(self, worker: QueueWorker) -> None:
        """Run a built-in destination's worker (the MPI) alongside the configured ones."""
        self._launch(worker)

    def _launch(self, worker: QueueWorker) -> None:
        """Run the worker: at once when this engine is alone, else whenever it holds the lease
        of the worker's queue partition (a fresh copy each time it takes it)."""
        key = (worker.destination, worker.partition)
        if self.keeper is None:
            worker.observe = self.observe
            self.workers[key] = worker
            worker.start()
            return
        self._leased[key] = worker

        async def take(lease: Lease) -> None:
            running = self._leased[key].fresh()
            controls = await asyncio.to_thread(read_controls, self.store)
            running.apply(controls.get(key[0], Control()), reload=False)
            running.lease = lease
            running.observe = self.observe
            self.workers[key] = running
            running.start()

        async def give_up() -> None:
            running = self.workers.pop(key, None)
            if running is not None:
                await running.stop()

        self.keeper.want(queue_lease(*key), take, give_up)

    def configured(self, key: tuple[str, int]) -> list[QueueWorker]:
        """The worker of a queue running here, and (several engines) the one it is copied
        from when this engine takes the queue's lease: what a new configuration updates."""
        return [w for w in (self.workers.get(key), self._leased.get(key)) if w is not None]

    def push(self, deliveries: Iterable[QueuedDelivery]) -> None:
        for delivery in deliveries:
            key = (delivery.destination, delivery.partition)
            worker = self.workers.get(key)
            if worker is None:
                if key in self._leased:
                    continue  # another engine holds this queue's lease and reads the store
                log.warning(
                    "no worker for destination %s partition %d; delivery %d waits in the store",
                    delivery.destination,
                    delivery.partition,
                    delivery.id,
                )
                continue
            worker.push(delivery)

    async def update(self, destinations: Mapping[str, DestinationSettings]) -> None:
        """Apply a reloaded configuration: new destinations start, changed ones take the new
        settings at their next connection, removed ones stop (their queues stay stored)."""
        self.destinations = destinations
        for key in sorted(self._leased.keys() | self.workers.keys()):
            if not any(isinstance(w, DestinationWorker) for w in self.configured(key)):
                continue  # built in: not configured, never removed
            settings = destinations.get(key[0])
            if settings is None:
                log.warning(
                    "destination %s removed from the configuration; its queue stays stored", key[0]
                )
                if self.keeper is not None and self._leased.pop(key, None) is not None:
                    await self.keeper.unwant(queue_lease(*key))
                running = self.workers.pop(key, None)
                if running is not None:
                    await running.stop()
                continue
            for worker in self.configured(key):
                if isinstance(worker, DestinationWorker):
                    worker.update_settings(settings)
        controls = await asyncio.to_thread(read_controls, self.store)
        for settings in destinations.values():
            await self._start_destination(settings, controls.get(settings.name, Control()))

    async def _poll_controls(self) -> None:
        while True:
            await asyncio.sleep(CONTROL_POLL)
            try:
                controls = await asyncio.to_thread(read_controls, self.store)
            except Exception as error:
                log.warning("cannot read queue controls: %s", type(error).__name__)
                continue
            for name, control in controls.items():
                self._apply(name, control)

    def _apply(self, name: str, control: Control) -> None:
        # Only newer generations count: a read that raced a change cannot undo it.
        if control.generation <= self._applied.get(name, -1):
            return
        self._applied[name] = control.generation
        for (destination, _), worker in self.workers.items():
            if destination == name:
                worker.apply(control, reload=True)

    def _stopped(self, name: str, control: Control) -> None:
        """A worker stopped the queue after a NAK: every partition of it stops."""
        self._apply(name, control)

    async def stop(self) -> None:
        if self._control_task is not None:
            self._control_task.cancel()
        for worker in self.workers.values():
            await worker.stop()
