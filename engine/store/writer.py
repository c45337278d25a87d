"""Group commit: everything the engine writes goes through one writer, many per transaction.

Listener connections hand their messages over as write operations; the router its routing
records; delivery workers their results. The writer takes everything submitted and commits it
together, so one durable commit (one fsync) serves every connection and worker that was busy at
that moment. Only after the commit does an operation's ``done`` run: only then may an ACK go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Engine

from engine.errors import CrosswalkError
from engine.logs import Throttled
from engine.store.checkpoints import Checkpointer
from engine.store.database import describe_failure
from engine.store.fastsql import Statements

log = logging.getLogger(__name__)
FAILURE_LOG_INTERVAL = 10.0
"""Seconds between two log lines of the same kind of failed write (a store that is down fails
every write: one line, then one every ten seconds with the count of the others)."""


class WriteOp(Protocol):
    """One unit of work for the writer: runs inside a group commit, reports once committed.

    ``urgent`` operations (a received message, whose sender waits for its ACK) are committed at
    once; the others (routing records, delivery results) may wait up to ``LINGER`` seconds to
    share the commit of the next urgent one, which saves an fsync each (on SQLite; a server
    database commits the urgent ones first, on their own, then the others). An operation whose
    ``one_statement`` is true writes a single statement on a server database, and is then
    committed by it when it is alone (autocommit: one round trip).
    """

    urgent: bool

    def write(self, cursor: Any, statements: Statements) -> Any:
        """Run the statements (in the writer's transaction); the return value goes to done."""
        ...

    def done(self, result: Any) -> None:
        """Called on the event loop after the commit (or with the exception)."""
        ...


class WriterClosed(CrosswalkError, RuntimeError):
    """The writer is shut down; nothing more can be stored."""


class Chain:
    """Operations that must be committed in the order submitted, none after one that failed.

    A destination worker's results form one: if "delivered" cannot be committed for a message,
    the results of the messages sent after it must not be committed either, or a restart would
    send the old message again after newer ones (an old A08 over newer demographics). An
    operation joins a chain through its ``chain`` attribute.
    """

    __slots__ = ("broken",)

    def __init__(self) -> None:
        self.broken: BaseException | None = None
        """The failure that broke the chain; later operations of it are refused."""


class ChainBroken(CrosswalkError, RuntimeError):
    """Not written: an earlier operation of the same chain could not be committed."""


def _chain_of(op: WriteOp) -> Chain | None:
    return getattr(op, "chain", None)


_STOP = object()
LINGER = 0.005
"""Seconds a non-urgent operation may wait for company before it is committed on its own."""
COMMIT_TIMEOUT = 5.0
"""Seconds a server database may take over a commit before its operations are answered with
:class:`CommitTimeout` (a sender gets AE) and the connection is cut (a frozen server)."""
WATCH_INTERVAL = 0.25
_NO_ANSWER = "the database did not answer in time"


class CommitTimeout(CrosswalkError, TimeoutError):
    """The database did not answer in time; the operation may or may not have been committed."""


class StoreWriter:
    """Commits write operations durably in groups.

    On SQLite the commit runs on the event loop itself: a local fsync costs less than handing
    the work to a thread and back (~85 µs here), and every message submitted while the loop was
    busy joins the next commit. On a server database (PostgreSQL) a dedicated thread commits, so
    the loop keeps reading while a commit waits on the network; there received messages are
    committed apart from other work (an extra commit costs a round trip, not an fsync of the
    loop's), so an ACK waits for one round trip.

    On SQLite, work that lingers is not written ahead into an open transaction: that shortens a
    received message's commit, but holds the database's one write lock across the loop's idle
    time, and other writers (CLI commands, the console, pruning) then waited seconds under load.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch: int = 256,
        threaded: bool | None = None,
        commit_timeout: float = COMMIT_TIMEOUT,
    ) -> None:
        self._engine = engine
        self.commit_timeout = commit_timeout
        self.observe_commit: Callable[[float, bool], None] | None = None
        """Told how long each commit took and whether it failed (from the committing thread)."""
        self._max_batch = max_batch
        self._sqlite = engine.dialect.name == "sqlite"
        self.threaded = not self._sqlite if threaded is None else threaded
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: list[WriteOp] = []
        self._flush_scheduled = False
        self._linger: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.statements = Statements(engine)
        self._connection: Any = None  # the writer's own DBAPI connection
        self._in_flight: tuple[float, list[WriteOp]] | None = None
        """Threaded: since when the thread has been committing which batch."""
        self._abandoned: list[WriteOp] | None = None
        """Threaded: the batch answered with CommitTimeout while the thread still held it."""
        self._failures = Throttled(log, FAILURE_LOG_INTERVAL, logging.ERROR)
        self._watch: asyncio.Task[None] | None = None
        self.batches = 0
        self.stored = 0
        self._checkpointer: Checkpointer | None = None

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Attach to the running event loop (callbacks run there) and start the thread."""
        self._loop = loop or asyncio.get_running_loop()
        if not self.threaded and Checkpointer.wanted(self._engine):
            self._checkpointer = Checkpointer(self._engine)
            self._checkpointer.start()
        if self.threaded:
            self._thread = threading.Thread(target=self._run, name="crosswalk-writer", daemon=True)
            self._thread.start()
            self._watch = self._loop.create_task(self._watch_commits(), name="commit watch")

    def submit(self, op: WriteOp) -> None:
        """Queue ``op`` for the next commit; ``op.done`` reports the outcome."""
        if self._closed or self._loop is None:
            op.done(WriterClosed("the store is closed"))
            return
        if self.threaded:
            self._queue.put((time.monotonic(), op))
            return
        self._pending.append(op)
        if op.urgent:
            if not self._flush_scheduled:
                self._flush_scheduled = True
                if self._linger is not None:
                    self._linger.cancel()
                    self._linger = None
                if len(self._pending) > 1:
                    # The engine is busy (other writes wait): the commit will block the loop
                    # for an fsync, so first let what this pass of the loop queued run — other
                    # connections' messages join this commit, a destination's ACK sends the
                    # next message before it. A lone message is committed without the detour.
                    self._loop.call_soon(self._loop.call_soon, self._flush)
                else:
                    self._loop.call_soon(self._flush)
        elif not self._flush_scheduled and self._linger is None:
            self._linger = self._loop.call_later(LINGER, self._flush)

    async def run(self, op: WriteOp) -> Any:
        """Submit and wait for the commit: for callers that are not on the hot path."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        outer = op.done

        def done(result: Any) -> None:
            outer(result)
            if future.done():  # the caller stopped waiting (shutdown cancelled it)
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        op.done = done  # type: ignore[method-assign]
        self.submit(op)
        return await future

    async def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then release the connection (and stop the thread)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put((0.0, _STOP))
            await asyncio.to_thread(self._thread.join, timeout)
            if self._watch is not None:
                self._watch.cancel()
        else:
            self._flush()
            if self._checkpointer is not None:
                await asyncio.to_thread(self._checkpointer.stop)
            self._release_connection()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            _deliver(batch, self._write_batch(batch))

    def _run(self) -> None:
        assert self._loop is not None
        stopping = False
        while not stopping:
            batch: list[WriteOp] = []
            late: list[WriteOp] = []
            item = self._queue.get()
            while True:
                submitted, op = item
                if op is _STOP:
                    stopping = True
                    break
                if time.monotonic() - submitted > self.commit_timeout:
                    late.append(op)  # waited behind a stuck commit: answer, do not write
                else:
                    batch.append(op)
                if len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if late:
                self._answer(late, [_failed(op, CommitTimeout(_NO_ANSWER)) for op in late])
            for group in _urgent_first(batch):
                self._in_flight = (time.monotonic(), group)
                results = self._write_batch(group)
                self._in_flight = None
                if group is self._abandoned:
                    self._abandoned = None  # answered already, by the watch
                    continue
                self._answer(group, results)
        self._release_connection()

    def _answer(self, batch: list[WriteOp], results: list[Any]) -> None:
        """Hand results to the event loop (from the writer thread)."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(_deliver, batch, results)
        except RuntimeError:
            log.warning("event loop closed before %d stored operations were answered", len(batch))

    async def _watch_commits(self) -> None:
        """Threaded: a commit that outlasts ``commit_timeout`` (a frozen or unreachable server)
        is answered with :class:`CommitTimeout` at once, and its connection is cut so that the
        thread moves on; operations that waited behind it are answered the same way."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            flight = self._in_flight
            if flight is None or flight[1] is self._abandoned:
                continue
            started, batch = flight
            if time.monotonic() - started <= self.commit_timeout:
                continue
            self._abandoned = batch
            log.error(
                "the database did not answer a commit of %d operation(s) within %.0fs;"
                " answering them as not stored and reconnecting",
                len(batch),
                self.commit_timeout,
            )
            _deliver(batch, [CommitTimeout(_NO_ANSWER)] * len(batch))
            _cut(self._connection)

    def _release_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _write_batch(self, batch: list[WriteOp]) -> list[Any]:
        results: list[Any]
        if any(_broken(op) for op in batch):  # after a failed commit only
            results = self._write_one_by_one(batch)
        else:
            try:
                results = list(self._commit(batch))
            except Exception as error:
                if len(batch) == 1:
                    results = [_failed(batch[0], error)]
                elif batch is self._abandoned:
                    # Answered already (CommitTimeout): written again one by one, with no watch
                    # on them, each could wait as long (a commit held for a synchronous
                    # standby) while every later operation waits unanswered.
                    results = [_failed(op, error) for op in batch]
                else:
                    # One bad row must not fail its neighbours: retry each on its own.
                    log.warning(
                        "a commit of %d operations failed (%s); committing them one by one",
                        len(batch),
                        type(error).__name__,
                    )
                    results = self._write_one_by_one(batch)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ChainBroken):
                self._failures.log(
                    type(result).__name__, "store write failed: %s", describe_failure(result)
                )
        self.batches += 1
        self.stored += sum(1 for r in results if not isinstance(r, BaseException))
        return results

    def _write_one_by_one(self, batch: list[WriteOp]) -> list[Any]:
        results: list[Any] = []
        for op in batch:
            if batch is self._abandoned:  # the watch gave up meanwhile: the rest too
                results.append(_failed(op, CommitTimeout(_NO_ANSWER)))
                continue
            if _broken(op):
                results.append(ChainBroken("an earlier result of its queue was not stored"))
                continue
            try:
                results.extend(self._commit([op]))
            except Exception as error:
                results.append(_failed(op, error))
        return results

    def _commit(self, batch: list[WriteOp]) -> list[Any]:
        started = time.monotonic()
        failed = True
        try:
            results = self._commit_once(batch)
            failed = False
            return results
        finally:
            if self.observe_commit is not None:
                self.observe_commit(time.monotonic() - started, failed)

    def _commit_once(self, batch: list[WriteOp]) -> list[Any]:
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        connection = self._connection
        cursor = connection.cursor()
        try:
            if not self._sqlite and len(batch) == 1 and getattr(batch[0], "one_statement", False):
                return self._write_alone(batch[0], connection, cursor)
            if self._sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            stored = (
                [op.write(cursor, self.statements) for op in batch]
                if self._sqlite
                else self._write_grouped(batch, cursor)
            )
            if self._sqlite:
                cursor.execute("COMMIT")
                if self._checkpointer is not None:
                    self._checkpointer.committed()
            else:
                connection.commit()
            return stored
        except Exception:
            self._discard_connection(cursor)
            raise
        finally:
            with contextlib.suppress(Exception):  # already closed after a failure
                cursor.close()

    def _write_alone(self, op: WriteOp, connection: Any, cursor: Any) -> list[Any]:
        """A server database: an operation that writes one statement runs it in autocommit, so
        that the statement and its commit are one round trip (a transaction costs a BEGIN and
        a COMMIT of its own); its ``done`` still runs only once it is durable."""
        driver = connection.driver_connection
        driver.autocommit = True
        try:
            return self._write_grouped([op], cursor)
        finally:
            with contextlib.suppress(Exception):  # a broken connection is discarded anyway
                driver.autocommit = False

    def _write_grouped(self, batch: list[WriteOp], cursor: Any) -> list[Any]:
        """On a server database, runs of operations of a kind that can write together (received
        messages: ``write_group``) do so, saving a network round trip per operation."""
        results: list[Any] = []
        start = 0
        while start < len(batch):
            kind = type(batch[start])
            end = start + 1
            while end < len(batch) and type(batch[end]) is kind:
                end += 1
            group = getattr(kind, "write_group", None)
            if group is None:
                results.extend(op.write(cursor, self.statements) for op in batch[start:end])
            else:
                results.extend(group(batch[start:end], cursor, self.statements))
            start = end
        return results

    def _discard_connection(self, cursor: Any) -> None:
        # After a failure the connection may be mid-transaction or dead: roll back, never reuse.
        # SQLite keeps a closed connection's locks while a statement of it is unfinalised, so
        # the cursor is closed first.
        connection, self._connection = self._connection, None
        for step in (cursor.close, connection.rollback, connection.invalidate):
            try:
                step()
            except Exception:
                log.debug("while discarding the writer connection", exc_info=True)


def _cut(connection: Any) -> None:
    """Shut a DBAPI connection's socket down under the thread blocked on it, which then fails
    and discards it (closing it from this thread would race the thread's use of it)."""
    try:
        fd = connection.driver_connection.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except Exception:
        log.debug("could not cut the database connection", exc_info=True)


def _urgent_first(batch: list[WriteOp]) -> list[list[WriteOp]]:
    """Threaded: the received messages of ``batch``, then the rest, each in the order submitted.
    Two commits: a sender's ACK waits for its own statements only (one round trip for a lone
    message), never for routing, MPI or delivery results that came at the same time."""
    urgent = [op for op in batch if op.urgent]
    if not urgent or len(urgent) == len(batch):
        return [batch] if batch else []
    return [urgent, [op for op in batch if not op.urgent]]


def _broken(op: WriteOp) -> bool:
    chain = _chain_of(op)
    return chain is not None and chain.broken is not None


def _failed(op: WriteOp, error: Exception) -> Exception:
    """Record that ``op`` was not committed: its chain, if any, refuses what follows."""
    chain = _chain_of(op)
    if chain is not None and chain.broken is None:
        chain.broken = error
    return error


def _deliver(batch: list[WriteOp], results: list[Any]) -> None:
    for op, result in zip(batch, results, strict=True):
        try:
            op.done(result)
        except Exception:
            log.exception("a stored-message callback failed")
