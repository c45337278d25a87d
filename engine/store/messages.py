"""Finding stored messages: the queries behind ``crosswalk messages``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from engine.store import crypto, text_index
from engine.store.schema import Delivery, DeliveryState, Message, MessageStatus

QUEUE_STATUSES = ("queued", "delivered")
"""Statuses that describe a message's deliveries rather than its own status column."""
STATUSES = (*MessageStatus.ALL, *QUEUE_STATUSES)
SELECTIVE = 20_000
"""A text the index finds in at most this many messages (in the search's window) is searched
through the index; one found more often is found soon enough by reading messages newest first
(or by the other criteria's indexes): gathering every message the index names would be slower."""


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Criteria for listing messages; every one given must hold."""

    since: datetime | None = None
    until: datetime | None = None
    message_type: str | None = None
    """``ADT``, ``ADT^A08`` or a pattern with ``*`` such as ``ADT^A0*``."""
    control_id: str | None = None
    status: str | None = None
    sending_application: str | None = None
    sending_facility: str | None = None
    listener: str | None = None
    text: str | None = None
    """Text anywhere in the message (searches message content: PHI)."""


def _like(pattern: str) -> str:
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _contains(column: Any, data: bytes, dialect: str) -> Any:
    """``column`` (binary) contains ``data``; LIKE does not work on SQLite blobs."""
    if dialect == "sqlite":
        return func.instr(column, data) > 0
    escaped = data.replace(b"\\", b"\\\\").replace(b"%", b"\\%").replace(b"_", b"\\_")
    # PostgreSQL's bytea LIKE (backslash escapes), which SQLAlchemy's binary types do not offer.
    return column.op("LIKE")(b"%" + escaped + b"%")


def _has_delivery(state: str) -> Any:
    return (
        select(Delivery.id)
        .where(Delivery.message_id == Message.id, Delivery.state == state)
        .exists()
    )


def _status_condition(status: str) -> Any:
    """``queued``: a delivery still waits; ``delivered``: every delivery went through;
    ``errored``: routing failed or a delivery was set aside; others: the message's status."""
    if status == "queued":
        return _has_delivery(DeliveryState.QUEUED)
    if status == "delivered":
        return and_(
            _has_delivery(DeliveryState.DELIVERED),
            ~_has_delivery(DeliveryState.QUEUED),
            ~_has_delivery(DeliveryState.ERRORED),
        )
    if status == MessageStatus.ERRORED:
        return or_(Message.status == MessageStatus.ERRORED, _has_delivery(DeliveryState.ERRORED))
    return Message.status == status


def build_query(
    criteria: MessageFilter, dialect: str = "sqlite", *, id_floor: bool = True
) -> Select[Message]:
    """The query of ``criteria``; ``id_floor``: bound the ids from below when a time is (for a
    scan by id; it reads the time index from Since on, needless when the text index leads)."""
    query = select(Message)
    c = criteria
    if c.since:
        query = query.where(Message.received_at >= c.since)
    if c.since and id_floor:
        # Also bound the id from below (exact: the least id received since): the newest-first
        # scan by id then stops there instead of reading every older message to the first one.
        # ``id + 0``: min(id) would walk the ids from the oldest; this reads the time index.
        first = select(func.min(Message.id + 0)).where(Message.received_at >= c.since)
        query = query.where(Message.id >= first.scalar_subquery())
    if c.until:
        query = query.where(Message.received_at < c.until)
    if c.message_type:
        code, _, trigger = c.message_type.partition("^")
        query = query.where(Message.message_code.like(_like(code), escape="\\"))
        if trigger:
            query = query.where(Message.trigger_event.like(_like(trigger), escape="\\"))
    if c.control_id:
        query = query.where(Message.control_id == c.control_id)
    if c.status:
        query = query.where(_status_condition(c.status))
    if c.sending_application:
        query = query.where(Message.sending_application == c.sending_application)
    if c.sending_facility:
        query = query.where(Message.sending_facility == c.sending_facility)
    if c.listener:
        query = query.where(Message.listener == c.listener)
    if c.text and crypto.current_keyring() is None:
        query = query.where(
            or_(*(_contains(Message.raw, form, dialect) for form in _forms(c.text)))
        )
    return query


def _forms(text: str) -> set[bytes]:
    """Messages are stored as received: the text in the encodings they come in."""
    return {form for form in (text.encode("utf-8"), text.encode("latin-1", "ignore")) if form}


def find_messages(
    engine: Engine, criteria: MessageFilter, *, limit: int = 50, newest_first: bool = True
) -> Sequence[Message]:
    """Messages matching ``criteria``, newest first by default."""
    order = Message.id.desc() if newest_first else Message.id.asc()
    with Session(engine, expire_on_commit=False) as session:
        query = build_query(criteria, engine.dialect.name).order_by(order)
        if criteria.text and text_index.usable(engine):
            led = build_query(criteria, engine.dialect.name, id_floor=False).order_by(order)
            through_index = _through_index(session, led, criteria, limit, newest_first)
            if through_index is not None:
                return through_index
        if not criteria.text or crypto.current_keyring() is None:
            return session.scalars(query.limit(limit)).all()
        # Encrypted content cannot be searched by the database: decrypt and look, a page of
        # the other criteria's matches at a time, until enough are found.
        forms, offset = _forms(criteria.text), 0
        found: list[Message] = []
        while len(found) < limit:
            page = session.scalars(query.offset(offset).limit(500)).all()
            found += [m for m in page if any(form in m.raw for form in forms)]
            if len(page) < 500:
                break
            offset += 500
        return found[:limit]


def _through_index(
    session: Session,
    query: Select[Message],
    criteria: MessageFilter,
    limit: int,
    newest_first: bool,
) -> list[Message] | None:
    """The text search's answer read through the text index; None where it cannot be or the
    text is found too often for the index to help. ``query``: the criteria's, without the id
    floor (the index, or the few messages newer than it, are read rather than a range of ids)."""
    ids = None
    if criteria.since and criteria.until:
        # A window closed on both sides: the least and greatest ids in it (exact) read the time
        # index over the window alone, and keep a text found in most messages from being
        # gathered from all of them.
        window = (Message.received_at >= criteria.since, Message.received_at < criteria.until)
        ids = (
            select(func.min(Message.id + 0)).where(*window).scalar_subquery(),
            select(func.max(Message.id + 0)).where(*window).scalar_subquery(),
        )
    found_by_index = text_index.matches(_forms(criteria.text or ""), ids)
    reach = text_index.reach(session.connection())
    if found_by_index is None or not reach:
        return None
    if text_index.more_than(session.connection(), found_by_index, SELECTIVE):
        return None
    # The index finds the text among the messages it holds; the newer ones are read.
    older = query.where(Message.id <= reach, Message.id.in_(found_by_index))
    newer = query.where(Message.id > reach)
    found: list[Message] = []
    for part in (newer, older) if newest_first else (older, newer):
        found += session.scalars(part.limit(limit - len(found))).all()
        if len(found) >= limit:
            break
    return found


def selective_text(engine: Engine, text: str) -> bool:
    """Whether a search for ``text`` (over every day) would go through the text index: it is
    kept, and names the text in at most SELECTIVE messages."""
    found_by_index = text_index.matches(_forms(text))
    if not text_index.usable(engine) or found_by_index is None:
        return False
    with engine.connect() as connection:
        if not text_index.reach(connection):
            return False
        return not text_index.more_than(connection, found_by_index, SELECTIVE)


def get_message(engine: Engine, message_id: int) -> Message | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Message, message_id)
