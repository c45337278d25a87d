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

from sqlalchemy import Engine

from engine.delivery import QueueWorker
from engine.hl7v2.charset import codec_for
from engine.hl7v2.message import Message
from engine.mpi.feed import apply_message
from engine.mpi.records import MpiRecords
from engine.store.fastsql import Statements
from engine.store.operations import DeliveryUpdate, QueuedDelivery
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

    def write(self, cursor: Any, statements: Statements) -> list[tuple[str, str]]:
        records = MpiRecords(cursor, statements)
        codecs = _codecs(cursor, statements, [d.message_id for d in self.deliveries])
        # Optimistic: the whole batch under one savepoint. A refusal (rare) rolls it back and
        # the batch is applied again with a savepoint per message, to set that one aside.
        cursor.execute("SAVEPOINT mpi_batch")
        try:
            outcomes = [self._apply(records, d, codecs, isolated=False) for d in self.deliveries]
        except ValueError:
            cursor.execute("ROLLBACK TO SAVEPOINT mpi_batch")
            outcomes = [self._apply(records, d, codecs, isolated=True) for d in self.deliveries]
        cursor.execute("RELEASE SAVEPOINT mpi_batch")
        for delivery, (state, note) in zip(self.deliveries, outcomes, strict=True):
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
        records: MpiRecords, delivery: QueuedDelivery, codecs: dict[int, str], *, isolated: bool
    ) -> tuple[str, str]:
        """Apply one message: (delivery state, what happened). Without ``isolated`` a refusal
        propagates (the caller retries the batch isolated)."""
        cursor = records.cursor
        if isolated:
            cursor.execute("SAVEPOINT mpi_message")
        try:
            codec = codecs.get(delivery.message_id, "utf-8")
            message = Message.parse(delivery.payload.decode(codec, "replace"))
            applied = apply_message(records, message, delivery.message_id)
        except ValueError as error:  # MpiRefusal, an unreadable message
            if not isolated:
                raise
            cursor.execute("ROLLBACK TO SAVEPOINT mpi_message")
            cursor.execute("RELEASE SAVEPOINT mpi_message")
            return DeliveryState.ERRORED, str(error)
        if isolated:
            cursor.execute("RELEASE SAVEPOINT mpi_message")
        note = f"MPI: {applied.action}" + (
            f" patient {applied.patient_id}" if applied.patient_id else ""
        )
        return DeliveryState.DELIVERED, note


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
