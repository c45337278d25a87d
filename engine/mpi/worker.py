"""The built-in ``mpi`` destination: routes send ADT and orders here to keep the MPI.

It is a queue like any destination's — durable, in order, with operators' controls — but its
work happens in the store: a batch of queued messages is applied to the MPI and their
deliveries are marked in the same transaction, so each message changes the MPI exactly once.
A message the MPI cannot apply is set aside as errored with the reason; the queue goes on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, bindparam, select

from engine.delivery import QueueWorker
from engine.hl7v2.charset import codec_for
from engine.hl7v2.message import Message
from engine.mpi.feed import apply_message
from engine.mpi.records import MpiRecords
from engine.store.fastsql import Statements
from engine.store.operations import DeliveryUpdate, QueuedDelivery
from engine.store.schema import DeliveryState
from engine.store.schema import Message as StoredMessageRow
from engine.store.writer import StoreWriter

log = logging.getLogger(__name__)

MPI = "mpi"
BATCH = 200

_messages = StoredMessageRow.__table__


def _charset() -> tuple[Any, list[str]]:
    return (
        select(_messages.c.charset).where(_messages.c.id == bindparam("message_id")),
        ["message_id"],
    )


@dataclass(slots=True)
class MpiBatch:
    """Apply queued messages to the MPI and settle their deliveries, in one transaction."""

    deliveries: list[QueuedDelivery]
    done: Any
    urgent: bool = False
    outcomes: list[tuple[str, str]] = field(default_factory=list)

    def write(self, cursor: Any, statements: Statements) -> list[tuple[str, str]]:
        records = MpiRecords(cursor, statements)
        outcomes = []
        for delivery in self.deliveries:
            row = (
                statements.get("message_charset", _charset)
                .run(cursor, {"message_id": delivery.message_id})
                .fetchone()
            )
            codec = codec_for((row[0] if row else "") or "") or "utf-8"
            cursor.execute("SAVEPOINT mpi_message")
            try:
                message = Message.parse(delivery.payload.decode(codec, "replace"))
                applied = apply_message(records, message, delivery.message_id)
            except ValueError as error:  # MpiRefusal, an unreadable message
                cursor.execute("ROLLBACK TO SAVEPOINT mpi_message")
                state, note = DeliveryState.ERRORED, str(error)
            else:
                state = DeliveryState.DELIVERED
                note = f"MPI: {applied.action}" + (
                    f" patient {applied.patient_id}" if applied.patient_id else ""
                )
            cursor.execute("RELEASE SAVEPOINT mpi_message")
            DeliveryUpdate(
                delivery.id,
                state,
                delivery.attempts + 1,
                note if state == DeliveryState.ERRORED else "",
                note.encode("utf-8"),
            ).write(cursor, statements)
            outcomes.append((state, note))
        return outcomes


class MpiWorker(QueueWorker):
    """Applies the ``mpi`` queue to the MPI, a batch at a time."""

    def __init__(self, writer: StoreWriter, store: Engine) -> None:
        super().__init__(MPI, 0, writer, store)
        self.errored = 0

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            try:
                head = await self._next()
                if head is None:
                    continue
                await self._resumed.wait()
                batch = list(self.items)[:BATCH]
                try:
                    outcomes = await self.writer.run(MpiBatch(batch, done=lambda result: None))
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
            except Exception:
                log.exception("MPI worker failed; restarting it in 5s")
                self._restart_from_store()
                await asyncio.sleep(5)
