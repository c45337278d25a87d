"""The per-destination delivery queues in the store: reading them, and operators' controls.

Delivery workers read their backlog here; ``crosswalk queue`` and ``crosswalk messages resend``
change the queues here. Changes an engine must notice bump the destination's ``generation``; the
engine polls ``destination_state`` and reloads a queue whose generation moved.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.orm import Session

from engine.store.database import for_writing
from engine.store.limits import READ_BYTES, READ_ROWS, fitting
from engine.store.operations import QueuedDelivery, queued_delivery
from engine.store.schema import (
    Delivery,
    DeliveryState,
    DestinationState,
    Message,
    MessageStatus,
    table_of,
)


def load_queued(
    engine: Engine,
    destination: str,
    partition: int,
    after_id: int,
    limit: int = READ_ROWS,
    max_bytes: int = READ_BYTES,
) -> list[QueuedDelivery]:
    """Queued deliveries of one partition with ids above ``after_id``, oldest first: at most
    ``limit`` of them and ``max_bytes`` of payload (at least one)."""
    queued = (
        Delivery.destination == destination,
        Delivery.state == DeliveryState.QUEUED,
        Delivery.partition == partition,
    )
    sizes = (
        select(Delivery.id, func.length(Delivery.payload))
        .where(*queued, Delivery.id > after_id)
        .order_by(Delivery.id)
        .limit(limit)
    )
    with engine.connect() as connection:
        heads = connection.execute(sizes).all()
        taken = fitting((size or 0 for _, size in heads), limit, max_bytes)
        if not taken:
            return []
        query = (
            select(
                Delivery.id,
                Delivery.payload,
                Delivery.control_id,
                Delivery.attempts,
                Delivery.message_id,
            )
            .where(*queued, Delivery.id > after_id, Delivery.id <= heads[taken - 1][0])
            .order_by(Delivery.id)
        )
        rows = connection.execute(query).all()
    return [
        QueuedDelivery(
            row.id,
            destination,
            partition,
            row.payload,
            row.control_id,
            row.attempts,
            row.message_id,
        )
        for row in rows
    ]


def stored_destinations(engine: Engine) -> set[str]:
    """Destinations the store knows: those with deliveries or operators' controls."""
    with engine.connect() as connection:
        names = set(connection.execute(select(Delivery.destination).distinct()).scalars())
        names |= set(connection.execute(select(DestinationState.destination)).scalars())
    return names


def queued_partitions(engine: Engine, destination: str) -> set[int]:
    """Partitions that hold queued deliveries (they need a worker even if config shrank)."""
    query = (
        select(Delivery.partition)
        .where(Delivery.destination == destination, Delivery.state == DeliveryState.QUEUED)
        .distinct()
    )
    with engine.connect() as connection:
        return {row[0] for row in connection.execute(query)}


@dataclass(frozen=True, slots=True)
class Control:
    """An operator's controls of one destination, as stored."""

    paused: bool = False
    reason: str = ""
    generation: int = 0


def read_controls(engine: Engine) -> dict[str, Control]:
    with engine.connect() as connection:
        result = connection.execute(
            select(
                DestinationState.destination,
                DestinationState.paused,
                DestinationState.reason,
                DestinationState.generation,
            )
        )
        return {row[0]: Control(bool(row[1]), row[2], row[3]) for row in result}


def set_control(
    engine: Engine,
    destination: str,
    *,
    paused: bool | None = None,
    reason: str | None = None,
) -> Control:
    """Change a destination's controls (creating its row).

    Every change raises ``generation``: engines apply a control only when its generation is
    newer than the last they applied, so a read that raced a change cannot undo it, and they
    re-read the queue, which picks up deliveries queued or re-queued behind their back.
    """
    changes = {k: v for k, v in (("paused", paused), ("reason", reason)) if v is not None}
    state = table_of(DestinationState)
    with for_writing(engine).begin() as connection:
        touch_destinations(connection, [destination], datetime.now(UTC), **changes)
        row = connection.execute(
            select(state.c.paused, state.c.reason, state.c.generation).where(
                state.c.destination == destination
            )
        ).one()
    return Control(bool(row.paused), row.reason, row.generation)


def touch_destinations(
    connection: Connection, names: Iterable[str], now: datetime, **changes: Any
) -> None:
    """Raise the generation of these destinations (and apply ``changes`` to their controls)
    inside the caller's transaction, so running engines re-read their queues."""
    state = table_of(DestinationState)
    for name in sorted(set(names)):
        bumped = connection.execute(
            update(state)
            .where(state.c.destination == name)
            .values(generation=state.c.generation + 1, updated_at=now, **changes)
        )
        if not bumped.rowcount:
            connection.execute(
                insert(state).values(
                    {
                        "paused": False,
                        "reason": "",
                        **changes,
                        "destination": name,
                        "generation": 1,
                        "updated_at": now,
                    }
                )
            )


def requeue_errored(engine: Engine, destination: str) -> int:
    """Put the destination's set-aside (errored) deliveries back in its queue."""
    with for_writing(engine).begin() as connection:
        result = connection.execute(
            update(Delivery)
            .where(Delivery.destination == destination, Delivery.state == DeliveryState.ERRORED)
            .values(state=DeliveryState.QUEUED, attempts=0, updated_at=datetime.now(UTC))
        )
        return result.rowcount or 0


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """What ``crosswalk queue status`` shows for one destination."""

    destination: str
    queued: int
    errored: int
    delivered: int
    oldest_queued: datetime | None
    last_error: str
    control: Control
    next_attempt: datetime | None = None
    """When the worker next tries the queue's head, while the destination cannot be reached."""


def summarize(engine: Engine, destinations: Iterable[str]) -> list[QueueSummary]:
    names = set(destinations)
    counts: dict[tuple[str, str], int] = {}
    oldest: dict[str, datetime] = {}
    errors: dict[str, str] = {}
    due: dict[str, datetime] = {}
    with Session(engine) as session:
        for destination, state, count in session.execute(
            select(Delivery.destination, Delivery.state, func.count()).group_by(
                Delivery.destination, Delivery.state
            )
        ):
            counts[(destination, state)] = count
            names.add(destination)
        for name in names:
            first = session.execute(
                select(Delivery.created_at)
                .where(Delivery.destination == name, Delivery.state == DeliveryState.QUEUED)
                .order_by(Delivery.id)
                .limit(1)
            ).scalar()
            if first is not None:
                oldest[name] = first
            head = session.execute(
                select(Delivery.next_attempt_at)
                .where(Delivery.destination == name, Delivery.state == DeliveryState.QUEUED)
                .order_by(Delivery.id)
                .limit(1)
            ).scalar()
            if head is not None:
                due[name] = head
            last = session.execute(
                select(Delivery.last_error)
                .where(Delivery.destination == name, Delivery.last_error != "")
                .order_by(Delivery.id.desc())
                .limit(1)
            ).scalar()
            errors[name] = last or ""
    controls = read_controls(engine)
    return [
        QueueSummary(
            name,
            counts.get((name, DeliveryState.QUEUED), 0),
            counts.get((name, DeliveryState.ERRORED), 0),
            counts.get((name, DeliveryState.DELIVERED), 0),
            oldest.get(name),
            errors.get(name, ""),
            controls.get(name, Control()),
            due.get(name),
        )
        for name in sorted(names)
    ]


def routing_backlog(engine: Engine) -> tuple[int, datetime | None]:
    """Messages stored as received and not routed yet, and when the oldest of them arrived."""
    with engine.connect() as connection:
        count, oldest = connection.execute(
            select(func.count(), func.min(Message.received_at)).where(
                Message.status == MessageStatus.RECEIVED
            )
        ).one()
    return int(count), oldest


def deliveries_of(engine: Engine, message_id: int) -> list[Any]:
    """The deliveries of one message, for ``messages show``."""
    with Session(engine, expire_on_commit=False) as session:
        return list(
            session.scalars(
                select(Delivery).where(Delivery.message_id == message_id).order_by(Delivery.id)
            )
        )


def record_resend(
    engine: Engine, message_id: int, status: str, reason: str, deliveries: list[dict[str, Any]]
) -> list[int]:
    """Store a message's new routing and queue its deliveries (``messages resend``)."""
    now = datetime.now(UTC)
    with Session(for_writing(engine)) as session, session.begin():
        message = session.get(Message, message_id)
        if message is None:
            raise LookupError(f"no message with id {message_id}")
        message.status = status
        message.status_reason = reason
        rows = [Delivery(**queued_delivery(values, message_id, now)) for values in deliveries]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]
