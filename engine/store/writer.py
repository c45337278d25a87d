"""Group commit: received messages are stored many per transaction, one fsync for them all.

Every listener connection hands its message to :meth:`MessageWriter.submit` with a callback.
The writer takes everything submitted, checks each for a duplicate, inserts it and commits them
together, so one durable commit serves every connection that was busy at that moment. Only after
that commit does a callback receive its :class:`StoredMessage`, and only then may it ACK.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, insert, select

from engine.store.schema import Message, MessageStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settled:
    """The fate of a message decided at intake, with the ACK frames to send back."""

    status: str
    reason: str
    ack_code: str
    acks: tuple[bytes, ...]


@dataclass(slots=True)
class NewMessage:
    """A message to store: its column values and how to settle it once duplicates are known."""

    row: dict[str, Any]
    settle: Callable[[int | None], Settled]
    """Called in the writer thread with the id of an earlier copy (or None)."""
    done: Callable[[StoredMessage | BaseException], None]
    """Called on the event loop once the message is committed, or with why it was not."""
    duplicate_since: datetime | None = None
    """Look for an accepted copy (same MSH-3, MSH-4, MSH-10) received at or after this."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    settled: Settled
    duplicate_of: int | None


class WriterClosed(RuntimeError):
    """The writer is shut down; nothing more can be stored."""


_STOP = object()
_table = Message.__table__


class _Statement:
    """A statement compiled once for the dialect, run on the bare DBAPI cursor.

    The writer runs two statements per message; SQLAlchemy's per-execute bookkeeping costs
    several times what SQLite needs for them, so the hot path compiles them once and binds
    parameters with SQLAlchemy's own type processors (the stored values are identical).
    """

    def __init__(self, statement: Any, engine: Engine, keys: list[str]) -> None:
        compiled = statement.compile(dialect=engine.dialect, column_keys=keys)
        self.sql = compiled.string
        self.positions = list(compiled.positiontup or [])
        self.processors: dict[str, Callable[[Any], Any]] = {}
        self.constants: dict[str, Any] = {}
        for name, parameter in compiled.binds.items():
            processor = parameter.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
            if processor is not None:
                self.processors[name] = processor
            if name not in keys and parameter.value is not None:
                self.constants[name] = parameter.effective_value

    def params(self, values: dict[str, Any]) -> Any:
        processed = dict(self.constants)
        processed.update(values)
        for key, processor in self.processors.items():
            if key in values:
                processed[key] = processor(values[key])
        if self.positions:
            return tuple([processed[name] for name in self.positions])
        return processed


_COLUMNS = [c.name for c in _table.columns if c.name != "id"]


def _statements(engine: Engine) -> tuple[_Statement, _Statement]:
    find_copy = (
        select(_table.c.id)
        .where(
            _table.c.control_id == bindparam("control_id"),
            _table.c.sending_application == bindparam("sending_application"),
            _table.c.sending_facility == bindparam("sending_facility"),
            _table.c.received_at >= bindparam("since", type_=_table.c.received_at.type),
            _table.c.status != MessageStatus.REJECTED,
            _table.c.status != MessageStatus.DUPLICATE,
        )
        .order_by(_table.c.id)
        .limit(1)
    )
    add = insert(_table).returning(_table.c.id)
    return (
        _Statement(
            find_copy,
            engine,
            ["control_id", "sending_application", "sending_facility", "since"],
        ),
        _Statement(add, engine, _COLUMNS),
    )


class MessageWriter:
    """Stores messages durably in groups.

    On SQLite the commit runs on the event loop itself: a local fsync costs less than handing
    the work to a thread and back (~85 µs here), and every message submitted while the loop was
    busy joins the next commit. On a server database (PostgreSQL) a dedicated thread commits, so
    the loop keeps reading while a commit waits on the network.
    """

    def __init__(
        self, engine: Engine, *, max_batch: int = 256, threaded: bool | None = None
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._sqlite = engine.dialect.name == "sqlite"
        self.threaded = not self._sqlite if threaded is None else threaded
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: list[NewMessage] = []
        self._flush_scheduled = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._find_copy, self._add = _statements(engine)
        self._connection: Any = None  # the writer's own DBAPI connection
        self.batches = 0
        self.stored = 0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Attach to the running event loop (callbacks run there) and start the thread."""
        self._loop = loop or asyncio.get_running_loop()
        if self.threaded:
            self._thread = threading.Thread(target=self._run, name="crosswalk-writer", daemon=True)
            self._thread.start()

    def submit(self, message: NewMessage) -> None:
        """Queue ``message`` for the next commit; ``message.done`` reports the outcome."""
        if self._closed or self._loop is None:
            message.done(WriterClosed("the store is closed"))
            return
        if self.threaded:
            self._queue.put(message)
            return
        self._pending.append(message)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    async def store(self, message: NewMessage) -> StoredMessage:
        """Submit and wait: for callers that are not on the hot path."""
        future: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        outer = message.done

        def done(result: StoredMessage | BaseException) -> None:
            outer(result)
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        message.done = done
        self.submit(message)
        return await future

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then release the connection (and stop the thread)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
        else:
            self._flush()
            self._release_connection()

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            _deliver(batch, self._write_batch(batch))

    def _run(self) -> None:
        assert self._loop is not None
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch: list[NewMessage] = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            results = self._write_batch(batch)
            try:
                self._loop.call_soon_threadsafe(_deliver, batch, results)
            except RuntimeError:
                log.warning("event loop closed before %d stored messages were answered", len(batch))
        self._release_connection()

    def _release_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _write_batch(self, batch: list[NewMessage]) -> list[StoredMessage | BaseException]:
        try:
            results: list[StoredMessage | BaseException] = list(self._commit(batch))
        except Exception as error:
            if len(batch) == 1:
                results = [error]
            else:
                # One bad row must not fail its neighbours: retry each on its own.
                results = []
                for message in batch:
                    try:
                        results.extend(self._commit([message]))
                    except Exception as single_error:
                        results.append(single_error)
        for result in results:
            if isinstance(result, BaseException):
                log.error("store write failed: %s", type(result).__name__)
        self.batches += 1
        self.stored += sum(1 for r in results if not isinstance(r, BaseException))
        return results

    def _commit(self, batch: list[NewMessage]) -> list[StoredMessage]:
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        connection = self._connection
        cursor = connection.cursor()
        try:
            if self._sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            stored = [self._insert(cursor, message) for message in batch]
            if self._sqlite:
                cursor.execute("COMMIT")
            else:
                connection.commit()
            return stored
        except Exception:
            self._discard_connection(cursor)
            raise
        finally:
            cursor.close()

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

    def _insert(self, cursor: Any, message: NewMessage) -> StoredMessage:
        copy_id: int | None = None
        row = message.row
        if message.duplicate_since is not None:
            cursor.execute(
                self._find_copy.sql,
                self._find_copy.params(
                    {
                        "control_id": row["control_id"],
                        "sending_application": row["sending_application"],
                        "sending_facility": row["sending_facility"],
                        "since": message.duplicate_since,
                    }
                ),
            )
            found = cursor.fetchone()
            copy_id = found[0] if found else None
        settled = message.settle(copy_id)
        row["status"] = settled.status
        row["status_reason"] = settled.reason
        row["ack_code"] = settled.ack_code
        row["ack"] = b"".join(settled.acks)
        row["duplicate_of"] = copy_id
        cursor.execute(self._add.sql, self._add.params(row))
        new_id = cursor.fetchone()[0]
        return StoredMessage(new_id, settled, copy_id)


def _deliver(batch: list[NewMessage], results: list[StoredMessage | BaseException]) -> None:
    for message, result in zip(batch, results, strict=True):
        try:
            message.done(result)
        except Exception:
            log.exception("a stored-message callback failed")
