"""Where routing runs: on the event loop, or in a child process on another core.

Routing is pure CPU (parse, filters, transforms, encode) and, with the sample routes, about a
third of what the engine's event loop does per message. :class:`ForkedRouting` moves it into a
child process forked from the engine, so the child holds the very router the engine built
(compiled filters, templates, mapping tables: nothing is pickled or loaded twice) and the event
loop keeps reading, storing and delivering while the child routes. Batches go over a socket pair
as pickles of plain values; the results come back in the same order.

A new configuration forks a new child (the old one finishes its batch, then exits). A child that
takes longer than the routing timeout is killed, or that dies, is replaced, and its batch is
routed one message at a time in fresh children: the message that hangs one, or kills two, is
recorded as errored and the feed goes on. Only when no child can be forked (or spoken to) does
routing move onto the event loop (:class:`InlineRouting`). Either way a message is never lost
or routed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import NamedTuple

from engine.errors import CrosswalkError
from engine.pipeline.mpi_destination import MPI, prepare
from engine.routes.router import Router
from engine.store.operations import RoutedMessage
from engine.store.received import AcceptedMessage
from engine.store.schema import MessageStatus

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")


class RoutedBatch(NamedTuple):
    """A batch's results, in order, and the tracebacks of routing bugs (for the engine's log)."""

    routed: list[RoutedMessage]
    failures: list[tuple[int, str]]


def route_batch(router: Router, batch: Sequence[AcceptedMessage]) -> RoutedBatch:
    """Route every message of ``batch``; a bug in one is recorded as its error, not raised."""
    routed: list[RoutedMessage] = []
    failures: list[tuple[int, str]] = []
    for message in batch:
        try:
            routing = router.route(message.raw, message.charset, message.listener)
        except Exception as error:
            failures.append((message.id, _trace_without_values(error)))
            summary = f"routing failed: {type(error).__name__}"
            routed.append(
                RoutedMessage(
                    message.id, MessageStatus.ERRORED, f"{summary}: {error}", summary=summary
                )
            )
            continue
        deliveries = routing.delivery_rows()
        for row in deliveries:
            payload = row["payload"]
            if row["destination"] == MPI and isinstance(payload, bytes):
                row["prepared"] = prepare(payload, message.charset)  # parsed here, on this core
        routed.append(
            RoutedMessage(message.id, routing.status, routing.reason, deliveries, routing.summary)
        )
    return RoutedBatch(routed, failures)


def _trace_without_values(error: BaseException) -> str:
    """Where a routing bug happened, for the log: the frames and the exception's type, not its
    text (it may quote the message being routed). The text is stored with the message."""
    frames = "".join(traceback.format_tb(error.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{type(error).__name__}"


class InlineRouting:
    """Routes on the event loop itself."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def route(self, batch: Sequence[AcceptedMessage]) -> RoutedBatch:
        return route_batch(self.router, batch)

    def swap(self, router: Router) -> None:
        """Route with ``router`` from the next batch on."""
        self.router = router

    async def close(self) -> None:
        return None


class ChildGone(CrosswalkError, RuntimeError):
    """The routing child exited or broke the protocol."""


class _TimedOut(Exception):
    """The child did not answer within the routing timeout (it has been killed)."""


DEFAULT_TIMEOUT = 30.0


class ForkedRouting(InlineRouting):
    """Routes in a child process forked from the engine; falls back to the event loop.

    A batch the child does not finish within ``timeout`` seconds (a filter's regular expression
    that backtracks for ever, a template that never ends: nothing inside Python can interrupt
    them) costs the child its life, as does a batch it dies on; its messages are then routed
    one by one in fresh children, and the one that hangs a child (or kills two) is recorded as
    errored, so one bad message never stops the feed.
    """

    def __init__(self, router: Router, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(router)
        self.timeout = timeout
        self._child: _Child | None = None
        self._stale: list[_Child] = []
        self._failed = False

    @staticmethod
    def available() -> bool:
        """Whether this machine has a second core to route on and forks safely (Linux; macOS
        forbids some system libraries after a fork, so it routes on the event loop there)."""
        return sys.platform == "linux" and (os.cpu_count() or 1) > 1

    async def route(self, batch: Sequence[AcceptedMessage]) -> RoutedBatch:
        await self._retire_stale()
        if self._failed:
            return route_batch(self.router, batch)
        try:
            try:
                return await self._in_child(batch)
            except (_TimedOut, ChildGone) as trouble:
                log.warning("%s; routing its batch one message at a time", trouble)
                return await self._one_by_one(batch)
        except (OSError, EOFError, pickle.PickleError) as error:  # cannot fork, or talk to it
            self._failed = True
            log.error(
                "the routing process failed (%s); routing on the event loop from now on",
                error,
            )
            self._retire_child()
            return route_batch(self.router, batch)

    async def _in_child(self, batch: Sequence[AcceptedMessage]) -> RoutedBatch:
        if self._child is None:
            self._child = await _Child.fork(self.router)
        child = self._child
        try:
            # Not wait_for: on Python 3.11 it loses a cancellation (the engine stopping) that
            # comes as the child answers, and the dispatcher would never stop.
            async with asyncio.timeout(self.timeout):
                return await child.route(batch)
        except TimeoutError:
            child.kill()
            self._retire_child()
            raise _TimedOut(
                f"routing process {child.pid} took longer than {self.timeout:g}s; killed"
            ) from None
        except ChildGone:
            self._retire_child()
            raise
        except asyncio.CancelledError:
            # Its answer may still come: this child's stream is out of step, fork afresh.
            self._retire_child()
            raise

    async def _one_by_one(self, batch: Sequence[AcceptedMessage]) -> RoutedBatch:
        routed: list[RoutedMessage] = []
        failures: list[tuple[int, str]] = []
        for message in batch:
            result = await self._alone(message)
            routed += result.routed
            failures += result.failures
        return RoutedBatch(routed, failures)

    async def _alone(self, message: AcceptedMessage) -> RoutedBatch:
        """Route one message in the child; the one that hangs it, or kills it twice, is errored
        (and the next message gets a fresh child)."""
        for attempt in (1, 2):
            try:
                return await self._in_child([message])
            except _TimedOut:
                trouble = f"routing took longer than {self.timeout:g}s and was stopped"
                break
            except ChildGone:
                trouble = "the routing process died on this message, twice"
                if attempt == 1:
                    continue
        log.error("message %d: %s; recorded as errored", message.id, trouble)
        reason = f"{trouble} (a filter or step that cannot finish on this message?)"
        return RoutedBatch(
            [RoutedMessage(message.id, MessageStatus.ERRORED, reason, summary=trouble)], []
        )

    def _retire_child(self) -> None:
        if self._child is not None:
            self._stale.append(self._child)
            self._child = None

    def swap(self, router: Router) -> None:
        super().swap(router)
        self._retire_child()  # forked with the old router

    async def close(self) -> None:
        self._retire_child()
        await self._retire_stale()

    async def _retire_stale(self) -> None:
        while self._stale:
            await self._stale.pop().close()


class _Child:
    """One forked routing process and the parent's end of its socket pair."""

    def __init__(
        self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.pid = pid
        self.reader = reader
        self.writer = writer
        self.busy = False
        """A batch was sent and its answer not read (nor will it be, once retired)."""

    @classmethod
    async def fork(cls, router: Router) -> _Child:
        ours, theirs = socket.socketpair()
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process with threads; the child touches
            # nothing the other threads might hold (no store, no event loop, no logging).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            ours.close()
            _child_main(theirs, router)
        theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        log.info("routing in process %d", pid)
        return cls(pid, reader, writer)

    async def route(self, batch: Sequence[AcceptedMessage]) -> RoutedBatch:
        sent = [(m.id, m.raw, m.charset, m.listener) for m in batch]
        data = pickle.dumps(sent, pickle.HIGHEST_PROTOCOL)
        self.busy = True
        try:
            self.writer.write(_LENGTH.pack(len(data)) + data)
            await self.writer.drain()
            (size,) = _LENGTH.unpack(await self.reader.readexactly(_LENGTH.size))
            result = pickle.loads(await self.reader.readexactly(size))
            self.busy = False
        except (asyncio.IncompleteReadError, ConnectionError):
            raise ChildGone(f"routing process {self.pid} exited") from None
        if not isinstance(result, RoutedBatch) or len(result.routed) != len(batch):
            raise ChildGone(f"routing process {self.pid} answered out of protocol")
        return result

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    async def close(self) -> None:
        """End of input: the child exits; reap it (killing it if it hangs, or if it is still
        working on a batch whose answer nobody will read)."""
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        if self.busy:
            self.kill()
        try:
            async with asyncio.timeout(5):
                await asyncio.to_thread(os.waitpid, self.pid, 0)
        except TimeoutError:
            self.kill()
            await asyncio.to_thread(os.waitpid, self.pid, 0)
        except ChildProcessError:
            pass  # already reaped
        except asyncio.CancelledError:
            # The thread waiting for the child cannot be cancelled, and the engine's exit waits
            # for that thread: the child must end now, not when its batch is done.
            self.kill()
            raise


def _child_main(sock: socket.socket, router: Router) -> None:  # pragma: no cover - child
    """Route batches until the engine closes its end; never returns."""
    code = 0
    try:
        # Ctrl-C reaches the whole process group, and a service manager may signal every
        # process of the service: the engine alone decides when routing ends (it closes the
        # socket, or dies, and this process exits; one that hangs is killed).
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        signal.set_wakeup_fd(-1)  # the engine's event loop's, closed below
        keep = sock.fileno()
        # Release the engine's sockets and files (listening ports, the store) in this copy.
        os.closerange(3, keep)
        os.closerange(keep + 1, max(os.sysconf("SC_OPEN_MAX"), keep + 1))
        sock.setblocking(True)
        while True:
            header = _read_exactly(sock, _LENGTH.size)
            if header is None:
                break
            data = _read_exactly(sock, _LENGTH.unpack(header)[0])
            if data is None:
                break
            batch = [AcceptedMessage(*fields) for fields in pickle.loads(data)]
            out = pickle.dumps(route_batch(router, batch), pickle.HIGHEST_PROTOCOL)
            sock.sendall(_LENGTH.pack(len(out)) + out)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:  # pragma: no cover - child
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def make_routing(
    router: Router, in_process: bool = False, timeout: float = DEFAULT_TIMEOUT
) -> InlineRouting:
    """Routing in a child process where the platform allows it, else on the event loop."""
    if in_process or not ForkedRouting.available():
        return InlineRouting(router)
    return ForkedRouting(router, timeout)
