"""The built-in ``mpi`` destination: routes send ADT and orders here to keep the MPI.

It is a queue like any destination's — durable, in order, with operators' controls — but its
work happens in the store: a batch of queued messages is applied to the MPI and their
deliveries are marked in the same transaction, so each message changes the MPI exactly once.
A message the MPI cannot apply is set aside as errored with the reason; the queue goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError, StatementError

from engine.hl7v2.charset import codec_for, decode_stored
from engine.hl7v2.fieldpath import PathError
from engine.hl7v2.header import HeaderError
from engine.hl7v2.message import Message, MessageError
from engine.mpi.feed import (
    MpiRefusal,
    Registration,
    apply_message,
    apply_registration,
    read_registration,
)
from engine.mpi.records import MpiRecords
from engine.pipeline.delivery import QueueWorker
from engine.store.fastsql import Statements
from engine.store.limits import BATCH_BYTES, fitting
from engine.store.operations import DeliveryUpdate, Fence, QueuedDelivery
from engine.store.schema import DeliveryState
from engine.store.writer import StoreWriter

log = logging.getLogger(__name__)

MPI = "mpi"
BATCH = 200


@dataclass(slots=True)
class MpiBatch:
    """Apply queued messages to the MPI and settle their deliveries, in one transaction."""

    deliveries: list[QueuedDelivery]
    done: Any
    urgent: bool = False
    outcomes: list[tuple[str, str]] = field(default_factory=list)
    fence: Fence | None = None
    """The MPI's lease, when several engines share the store."""

    def write(self, cursor: Any, statements: Statements) -> list[tuple[str, str]]:
        if self.fence is not None:
            self.fence.check(cursor)
        # A delivery settled already was committed by an earlier attempt whose answer was lost
        # (a server that stopped answering): applying its message again would apply it twice.
        settled = _settled(cursor, statements, [d.id for d in self.deliveries])
        todo = [d for d in self.deliveries if d.id not in settled]
        applied = iter(self._apply_all(todo, cursor, statements) if todo else [])
        return [settled.get(d.id) or next(applied) for d in self.deliveries]

    def _apply_all(
        self, deliveries: list[QueuedDelivery], cursor: Any, statements: Statements
    ) -> list[tuple[str, str]]:
        records = MpiRecords(cursor, statements)
        dbapi = statements.engine.dialect.loaded_dbapi
        codecs = _codecs(
            cursor, statements, [d.message_id for d in deliveries if d.prepared is None]
        )
        # Optimistic: the whole batch under one savepoint. A message's own error (rare) rolls it
        # back and the batch is applied again with a savepoint per message, to set that one
        # aside. An error of the store itself fails the batch: the worker retries it.
        cursor.execute("SAVEPOINT mpi_batch")
        try:
            outcomes = [self._apply(records, d, codecs, dbapi, isolated=False) for d in deliveries]
        except Exception as error:
            if set_aside_reason(error, dbapi) is None:
                raise
            cursor.execute("ROLLBACK TO SAVEPOINT mpi_batch")
            outcomes = [self._apply(records, d, codecs, dbapi, isolated=True) for d in deliveries]
        cursor.execute("RELEASE SAVEPOINT mpi_batch")
        for delivery, (state, note) in zip(deliveries, outcomes, strict=True):
            DeliveryUpdate(
                delivery.id,
                state,
                delivery.attempts + 1,
                note if state == DeliveryState.ERRORED else "",
                note.encode("utf-8"),
            ).write(cursor, statements)
        return outcomes

    @staticmethod
    def _apply(
        records: MpiRecords,
        delivery: QueuedDelivery,
        codecs: dict[int, str],
        dbapi: Any,
        *,
        isolated: bool,
    ) -> tuple[str, str]:
        """Apply one message: (delivery state, what happened). Without ``isolated`` any error
        propagates (the caller retries the batch isolated, or fails it)."""
        if not isolated:
            return _applied(records, delivery, codecs)
        error = _in_savepoint(records, delivery, codecs, dbapi)
        if isinstance(error, tuple):
            return error
        if _driver_error(error, dbapi, "IntegrityError"):
            # Another writer (an `mpi import` on PostgreSQL) may have committed the identifier
            # this message adds a moment ago; applied again, the message finds it.
            error = _in_savepoint(records, delivery, codecs, dbapi)
            if isinstance(error, tuple):
                return error
        reason = set_aside_reason(error, dbapi) or type(error).__name__
        if not isinstance(error, _REASONED):
            # No values (PHI) in the log: the message, the kind of error, and where.
            log.error(
                "MPI: message %d (control_id=%s) set aside: %s; at (values omitted):\n%s",
                delivery.message_id,
                delivery.control_id,
                reason,
                "".join(traceback.format_tb(error.__traceback__)).rstrip(),
            )
        return DeliveryState.ERRORED, reason.replace("\x00", "\\x00")


def _applied(
    records: MpiRecords, delivery: QueuedDelivery, codecs: dict[int, str]
) -> tuple[str, str]:
    """Apply one message to the MPI: (delivered, what happened); errors propagate."""
    if isinstance(delivery.prepared, Registration):
        applied = apply_registration(records, delivery.prepared, delivery.message_id)
    else:
        codec = codecs.get(delivery.message_id, "utf-8")
        message = Message.parse(delivery.payload.decode(codec, "replace"))
        applied = apply_message(records, message, delivery.message_id)
    note = f"MPI: {applied.action}" + (
        f" patient {applied.patient_id}" if applied.patient_id else ""
    )
    return DeliveryState.DELIVERED, note


def prepare(payload: bytes, charset: str | None) -> Registration | None:
    """What the MPI worker needs of a payload it is sent, read beforehand (by the routing
    process, on another core): a registration, or None for any other message and for one the
    MPI refuses (the worker then reads the payload itself, and records why)."""
    try:
        return read_registration(Message.parse(decode_stored(payload, charset)))
    except Exception:  # the worker meets the same error and sets the message aside
        return None


def _in_savepoint(
    records: MpiRecords, delivery: QueuedDelivery, codecs: dict[int, str], dbapi: Any
) -> tuple[str, str] | Exception:
    """Apply one message under its own savepoint: its outcome, or the error of the message
    (its changes rolled back). An error of the store propagates."""
    cursor = records.cursor
    cursor.execute("SAVEPOINT mpi_message")
    try:
        outcome = _applied(records, delivery, codecs)
    except Exception as error:
        if set_aside_reason(error, dbapi) is None:  # the store is failing, not this message
            raise
        # On PostgreSQL a failed statement aborts the transaction back to the savepoint.
        cursor.execute("ROLLBACK TO SAVEPOINT mpi_message")
        cursor.execute("RELEASE SAVEPOINT mpi_message")
        return error
    cursor.execute("RELEASE SAVEPOINT mpi_message")
    return outcome


_REASONED = (MpiRefusal, MessageError, HeaderError, PathError)
"""Errors whose text is a reason written for people (it may quote identifiers, never more)."""


def set_aside_reason(error: Exception, dbapi: Any) -> str | None:
    """Why one message is set aside for ``error``, or None when the error is the store's own.

    A refusal of the MPI, a DBAPI ``DataError`` or ``IntegrityError`` (a value the store will
    not take), or an unexpected error of the code (a bug) belong to the message being applied.
    Any other error of the driver (``OperationalError``, ``InterfaceError``: the connection is
    lost, the disk is full …) means the store is failing, and setting messages aside for it
    would lose them from the queue; the batch is retried instead. Reasons never quote values.
    """
    if isinstance(error, _REASONED):
        return str(error)
    cause = _cause(error)
    for kind in ("DataError", "IntegrityError"):
        if _driver_error(error, dbapi, kind):
            name = type(cause).__name__
            detail = f" ({name})" if name != kind else ""
            return f"the MPI could not store this message: {kind}{detail}"
    driver_error = getattr(dbapi, "Error", None)
    if driver_error is not None and isinstance(cause, driver_error):
        return None
    if isinstance(cause, SQLAlchemyError | OSError | MemoryError):
        return None
    return f"the MPI could not apply this message: an unexpected {type(cause).__name__}"


def _cause(error: BaseException) -> BaseException:
    """The driver's error behind ``error`` (SQLAlchemy wraps it), else ``error``."""
    if isinstance(error, StatementError) and error.orig is not None:
        return error.orig
    return error


def _driver_error(error: BaseException, dbapi: Any, kind: str) -> bool:
    """Whether ``error`` is the driver's (PEP 249) exception ``kind``, e.g. ``DataError``."""
    category = getattr(dbapi, kind, None)
    return category is not None and isinstance(_cause(error), category)


def _settled(
    cursor: Any, statements: Statements, delivery_ids: list[int]
) -> dict[int, tuple[str, str]]:
    """Of these deliveries, those no longer queued: their state, and a note saying so."""
    where, params = statements.where_in("id", delivery_ids)
    cursor.execute(
        f"SELECT id, state FROM deliveries WHERE {where} AND state <> '{DeliveryState.QUEUED}'",
        params,
    )
    return {row[0]: (row[1], "settled already") for row in cursor.fetchall()}


def _codecs(cursor: Any, statements: Statements, message_ids: list[int]) -> dict[int, str]:
    """The Python codec of each message's character set (one query for the batch)."""
    if not message_ids:
        return {}
    where, params = statements.where_in("id", message_ids)
    cursor.execute(f"SELECT id, charset FROM messages WHERE {where}", params)
    return {row[0]: codec_for(row[1] or "") or "utf-8" for row in cursor.fetchall()}


class MpiWorker(QueueWorker):
    """Applies the ``mpi`` queue to the MPI, a batch at a time."""

    def __init__(self, writer: StoreWriter, store: Engine) -> None:
        super().__init__(MPI, 0, writer, store)
        self.errored = 0

    def fresh(self) -> MpiWorker:
        return MpiWorker(self.writer, self.store)

    @property
    def who(self) -> str:
        return "MPI"

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            try:
                head = await self._next()
                if head is None:
                    continue
                await self._resumed.wait()
                count = fitting((len(d.payload) for d in self.items), BATCH, BATCH_BYTES)
                batch = list(itertools.islice(self.items, count))
                try:
                    outcomes = await self.writer.run(
                        MpiBatch(batch, done=lambda result: None, fence=self.fence)
                    )
                except Exception as error:
                    backoff = min(60.0, backoff * 2 or 1.0)
                    log.error(
                        "MPI: a batch could not be applied (%s); retrying in %.0fs",
                        type(error).__name__,
                        backoff,
                    )
                    await self._sleep(backoff)
                    continue
                backoff = 0.0
                for delivery, (state, _) in zip(batch, outcomes, strict=True):
                    self.items.popleft()
                    if state == DeliveryState.DELIVERED:
                        self.delivered += 1
                    else:
                        self.errored += 1
                        # The reason may quote identifiers (PHI): it is in the delivery.
                        log.warning(
                            "MPI: message %d (control_id=%s) not applied; see"
                            " `crosswalk messages show %d`",
                            delivery.message_id,
                            delivery.control_id,
                            delivery.message_id,
                        )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                await self._start_again(error)
