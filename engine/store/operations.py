"""The write operations the engine commits through the :class:`~engine.store.writer.StoreWriter`.

- :class:`NewMessage` — a received message, with its duplicate check and its ACK (intake).
- :class:`RoutingRecord` — the fate of routed messages and their queued deliveries (router).
- :class:`DeliveryUpdate` — what a destination answered (delivery workers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Text, bindparam, case, cast, insert, literal, select, true, update

from engine.store.crypto import encrypting
from engine.store.fastsql import Statements
from engine.store.schema import Delivery, DeliveryState, Message, MessageStatus, table_of

if TYPE_CHECKING:
    from engine.store.writer import Chain

_messages = table_of(Message)
_deliveries = table_of(Delivery)
_MESSAGE_COLUMNS = [c.name for c in _messages.columns if c.name != "id"]
_DELIVERY_COLUMNS = [c.name for c in _deliveries.columns if c.name != "id"]


class Fence(Protocol):
    """A lease a write depends on (:class:`engine.leases.records.Fence`): checked inside the
    write's transaction, it raises when another engine took the lease over, and the write is
    not committed."""

    def check(self, cursor: Any) -> None: ...


def check_fences(ops: Any, cursor: Any) -> None:
    """Check the fence of each operation of a group once (operations with ``fence``)."""
    for fence in {op.fence for op in ops if op.fence is not None}:
        fence.check(cursor)


@dataclass(slots=True)
class Barrier:
    """Writes nothing: once it is answered, every operation submitted before it is settled
    (committed or failed), since the writer commits in the order submitted."""

    done: Callable[[Any], None] = lambda result: None
    urgent: bool = False

    def write(self, cursor: Any, statements: Statements) -> None:
        return None


# -- intake ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settled:
    """The fate of a message decided at intake, with the ACK frames to send back."""

    status: str
    reason: str
    ack_code: str
    acks: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    settled: Settled
    duplicate_of: int | None


def duplicate_key(sending_application: str, sending_facility: str, control_id: str) -> str:
    """The digest of MSH-3, MSH-4 and MSH-10 (whole values) the duplicate check compares.

    Each value is prefixed by its length, so no two different triples share a text. The
    definition is stored in every row: never change it (migration 0006 computes it in SQL too).

    >>> duplicate_key("RIS", "HOSP", "1")
    '86f7753f870c770410ea0b463f0f2b60'
    """
    text = (
        f"{len(sending_application)}:{sending_application}"
        f"{len(sending_facility)}:{sending_facility}{control_id}"
    )
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


DUPLICATE_REASON = "duplicate of message "


def duplicate_reason(copy_id: int) -> str:
    """The status reason of a duplicate: which message it copies."""
    return f"{DUPLICATE_REASON}{copy_id}"


def _copy_query() -> Any:
    return (
        select(_messages.c.id)
        .where(
            _messages.c.dedup_key == bindparam("dedup_key"),
            _messages.c.received_at >= bindparam("since", type_=_messages.c.received_at.type),
            _messages.c.status != MessageStatus.REJECTED,
            _messages.c.status != MessageStatus.DUPLICATE,
        )
        .order_by(_messages.c.id)
        .limit(1)
    )


def _find_copy() -> tuple[Any, list[str]]:
    return _copy_query(), ["dedup_key", "since"]


def _add_message() -> tuple[Any, list[str]]:
    return insert(_messages).returning(_messages.c.id), _MESSAGE_COLUMNS


_SETTLED_COLUMNS = ("status", "ack_code", "ack")
"""What a duplicate stores instead of a fresh message's values (and its reason)."""


def _add_message_once() -> tuple[Any, list[str]]:
    """One statement that looks for an accepted copy and stores the message, settled as a
    duplicate when one is found: the duplicate check costs no round trip of its own.

    The fresh message's values bind under their column names, a duplicate's under
    ``duplicate_<column>``; its reason names the copy's id, composed in SQL (clear text: only
    when content is not encrypted). Returns the new id and the copy's (or NULL).
    """
    copy = _copy_query().cte("copy")
    fresh = copy.c.id.is_(None)
    values: list[Any] = []
    for name in _MESSAGE_COLUMNS:
        column = _messages.c[name]
        if name == "duplicate_of":
            values.append(copy.c.id)
        elif name == "status_reason":
            reason = literal(DUPLICATE_REASON, Text) + cast(copy.c.id, Text)
            values.append(case((fresh, bindparam(name, type_=column.type)), else_=reason))
        elif name in _SETTLED_COLUMNS:
            duplicate = bindparam(f"duplicate_{name}", type_=column.type)
            values.append(case((fresh, bindparam(name, type_=column.type)), else_=duplicate))
        else:
            values.append(bindparam(name, type_=column.type))
    one = select(literal(1).label("one")).subquery("one")
    source = select(*values).select_from(one.outerjoin(copy, true()))
    statement = (
        insert(_messages)
        .from_select(_MESSAGE_COLUMNS, source)
        .returning(_messages.c.id, _messages.c.duplicate_of)
    )
    keys = [*_MESSAGE_COLUMNS, "since", *(f"duplicate_{name}" for name in _SETTLED_COLUMNS)]
    return statement, keys


@dataclass(slots=True)
class NewMessage:
    """A message to store: its column values and how to settle it once duplicates are known."""

    row: dict[str, Any]
    settle: Callable[[int | None], Settled]
    """Called inside the transaction with the id of an earlier copy (or None); on a server
    database ahead of the statement, once for each fate (any id stands for a copy's)."""
    done: Callable[[Any], None]
    """Called on the event loop with the :class:`StoredMessage`, or the exception."""
    duplicate_since: datetime | None = None
    """Look for an accepted copy (same MSH-3, MSH-4, MSH-10) received at or after this."""
    urgent: bool = True
    """A sender waits for this commit."""

    def write(self, cursor: Any, statements: Statements) -> StoredMessage:
        copy_id: int | None = None
        row = self.row
        if self.duplicate_since is not None:
            statements.get("find_copy", _find_copy).run(
                cursor, {"dedup_key": row["dedup_key"], "since": self.duplicate_since}
            )
            found = cursor.fetchone()
            copy_id = found[0] if found else None
        settled = self._settle(copy_id)
        new_id = statements.get("add_message", _add_message).run(cursor, row).fetchone()[0]
        return StoredMessage(new_id, settled, copy_id)

    def _settle(self, copy_id: int | None) -> Settled:
        settled = self.settle(copy_id)
        row = self.row
        row["status"] = settled.status
        row["status_reason"] = settled.reason
        row["ack_code"] = settled.ack_code
        row["ack"] = b"".join(settled.acks)
        row["duplicate_of"] = copy_id
        return settled

    @property
    def one_statement(self) -> bool:
        """Whether a server database stores this message in one statement (its duplicate check
        folded in), so that the writer may commit it without a transaction of its own."""
        return not encrypting()

    @staticmethod
    def write_group(
        ops: list[NewMessage], cursor: Any, statements: Statements
    ) -> list[StoredMessage]:
        """Store messages on a server database: each in one statement that also looks for its
        copy, all of them in one pipelined round trip. Each statement sees the ones before it,
        so a copy earlier in the same group is found."""
        if encrypting():  # a duplicate's reason is sealed here, once its copy is known
            return NewMessage._write_group_sealed(ops, cursor, statements)
        add = statements.get("add_message_once", _add_message_once)
        rows = [op._both_settlements() for op in ops]
        if len(ops) == 1:  # psycopg's pipeline costs a round trip of its own
            cursor.execute(add.sql, add.params(rows[0][0]))
            returned = [cursor.fetchone()]
        else:
            cursor.executemany(
                add.sql, [add.params(values) for values, _, _ in rows], returning=True
            )
            returned = []
            while True:
                returned.append(cursor.fetchone())
                if not cursor.nextset():
                    break
        stored = []
        for op, (new_id, copy_id), (_, fresh, duplicate) in zip(ops, returned, rows, strict=True):
            settled = fresh if copy_id is None else op._settle_as(duplicate, copy_id)
            stored.append(StoredMessage(new_id, settled, copy_id))
        return stored

    def _both_settlements(self) -> tuple[dict[str, Any], Settled, Settled]:
        """The statement's values for both fates (fresh, duplicate): it picks one."""
        fresh = self._settle(None)
        # The copy's id only shows in a duplicate's reason, which the statement composes.
        duplicate = fresh if self.duplicate_since is None else self.settle(0)
        values = self.row | {
            "since": self.duplicate_since,
            "duplicate_status": duplicate.status,
            "duplicate_ack_code": duplicate.ack_code,
            "duplicate_ack": b"".join(duplicate.acks),
        }
        return values, fresh, duplicate

    def _settle_as(self, duplicate: Settled, copy_id: int) -> Settled:
        """The row as the statement stored it: a duplicate of ``copy_id``."""
        settled = Settled(
            duplicate.status, duplicate_reason(copy_id), duplicate.ack_code, duplicate.acks
        )
        self.row.update(
            status=settled.status,
            status_reason=settled.reason,
            duplicate_of=copy_id,
            ack_code=settled.ack_code,
            ack=b"".join(settled.acks),
        )
        return settled

    @staticmethod
    def _write_group_sealed(
        ops: list[NewMessage], cursor: Any, statements: Statements
    ) -> list[StoredMessage]:
        """Store several messages in two round trips: one query finds every earlier copy, one
        pipelined insert stores them all."""
        keys = [op.row["dedup_key"] for op in ops]
        checked = [key for key, op in zip(keys, ops, strict=True) if op.duplicate_since]
        if len(ops) == 1 or len(set(keys)) < len(keys):
            # One message, or the same one twice in this group: one by one, in order, so the
            # second finds the first.
            return [op.write(cursor, statements) for op in ops]
        copies: dict[str, list[tuple[int, datetime]]] = {}
        if checked:
            earliest = min(op.duplicate_since for op in ops if op.duplicate_since is not None)
            cursor.execute(_FIND_COPIES, (checked, earliest))
            for copy_id, received_at, key in cursor.fetchall():
                copies.setdefault(key, []).append((copy_id, received_at))
        settled: list[tuple[Settled, int | None]] = []
        for op, key in zip(ops, keys, strict=True):
            since = op.duplicate_since
            found = [i for i, when in copies.get(key, ()) if since is not None and when >= since]
            copy_id = found[0] if found else None
            settled.append((op._settle(copy_id), copy_id))
        new_ids = statements.get("add_message", _add_message).insert_many(
            cursor, [op.row for op in ops]
        )
        return [
            StoredMessage(new_id, outcome, copy_id)
            for new_id, (outcome, copy_id) in zip(new_ids, settled, strict=True)
        ]


_FIND_COPIES = f"""
SELECT m.id, m.received_at, m.dedup_key
FROM messages AS m
WHERE m.dedup_key = ANY(%s::text[])
  AND m.received_at >= %s
  AND m.status NOT IN ('{MessageStatus.REJECTED}', '{MessageStatus.DUPLICATE}')
ORDER BY m.id
"""
"""PostgreSQL: the accepted copies of several messages at once (what ``_find_copy`` finds for
one), oldest first."""


# -- routing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueuedDelivery:
    """A delivery as its destination worker sees it."""

    id: int
    destination: str
    partition: int
    payload: bytes
    control_id: str
    attempts: int = 0
    message_id: int = 0
    prepared: Any = None
    """What the destination's worker needs of the payload, read beforehand in the routing
    process (the MPI's registration), or None. Never stored: a delivery read back from the
    store has none, and its worker reads the payload itself."""


@dataclass(slots=True)
class RoutedMessage:
    """One message's routing: its new status and reason, and what to queue."""

    message_id: int
    status: str
    reason: str
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    """Column values: route, destination, partition, payload, control_id; and, not stored,
    ``prepared`` (:attr:`QueuedDelivery.prepared`)."""
    summary: str = ""
    """The reason without field values (PHI): what the log may say."""


def _set_message_status() -> tuple[Any, list[str]]:
    statement = (
        update(_messages)
        .where(_messages.c.id == bindparam("message_id"))
        .values(status=bindparam("status"), status_reason=bindparam("reason"))
    )
    return statement, ["message_id", "status", "reason"]


def queued_delivery(values: dict[str, Any], message_id: int, now: datetime) -> dict[str, Any]:
    """The column values of a new delivery waiting in its queue."""
    return dict(
        values,
        message_id=message_id,
        state=DeliveryState.QUEUED,
        attempts=0,
        last_error="",
        ack=None,
        created_at=now,
        updated_at=None,
        next_attempt_at=None,
    )


def _add_delivery() -> tuple[Any, list[str]]:
    return insert(_deliveries).returning(_deliveries.c.id), _DELIVERY_COLUMNS


@dataclass(slots=True)
class RoutingRecord:
    """The routing of a batch of messages, committed together."""

    routed: list[RoutedMessage]
    done: Callable[[Any], None]
    urgent: bool = False
    fence: Fence | None = None
    """The routing lease, when several engines share the store."""

    def write(self, cursor: Any, statements: Statements) -> list[QueuedDelivery]:
        if self.fence is not None:
            self.fence.check(cursor)
        now = datetime.now(UTC)
        statements.get("set_message_status", _set_message_status).run_many(
            cursor,
            [
                {"message_id": m.message_id, "status": m.status, "reason": m.reason}
                for m in self.routed
            ],
        )
        rows = [
            queued_delivery(values, message.message_id, now)
            for message in self.routed
            for values in message.deliveries
        ]
        prepared = [row.pop("prepared", None) for row in rows]
        new_ids = statements.get("add_delivery", _add_delivery).insert_many(cursor, rows)
        return [
            QueuedDelivery(
                new_id,
                row["destination"],
                row["partition"],
                row["payload"],
                row["control_id"],
                message_id=row["message_id"],
                prepared=ready,
            )
            for new_id, row, ready in zip(new_ids, rows, prepared, strict=True)
        ]


# -- delivery --------------------------------------------------------------------------------------


def _update_delivery() -> tuple[Any, list[str]]:
    statement = (
        update(_deliveries)
        .where(_deliveries.c.id == bindparam("delivery_id"))
        .values(
            state=bindparam("state"),
            attempts=bindparam("attempts"),
            last_error=bindparam("last_error"),
            ack=bindparam("ack"),
            updated_at=bindparam("updated_at", type_=_deliveries.c.updated_at.type),
            next_attempt_at=bindparam("next_attempt_at", type_=_deliveries.c.next_attempt_at.type),
        )
    )
    keys = ["delivery_id", "state", "attempts", "last_error", "ack", "updated_at"]
    return statement, [*keys, "next_attempt_at"]


@dataclass(slots=True)
class DeliveryUpdate:
    """A delivery's new state after its destination answered (or failed to)."""

    delivery_id: int
    state: str
    attempts: int
    last_error: str
    ack: bytes | None
    done: Callable[[Any], None] = lambda result: None
    urgent: bool = False
    chain: Chain | None = None
    """The worker's results this one must follow (:class:`~engine.store.writer.Chain`)."""
    next_attempt_at: datetime | None = None
    """When the worker tries again (after a failure to reach the destination)."""
    fence: Fence | None = None
    """The lease of the worker's queue partition, when several engines share the store."""

    def write(self, cursor: Any, statements: Statements) -> None:
        if self.fence is not None:
            self.fence.check(cursor)
        statements.get("update_delivery", _update_delivery).run(
            cursor, self._values() | {"updated_at": datetime.now(UTC)}
        )

    def _values(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "state": self.state,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "ack": self.ack,
            "next_attempt_at": self.next_attempt_at,
        }

    @staticmethod
    def write_group(ops: list[DeliveryUpdate], cursor: Any, statements: Statements) -> list[None]:
        """Several deliveries' new states in one ``executemany`` (one pipelined round trip on
        PostgreSQL)."""
        if len(ops) == 1:  # psycopg's pipeline costs a round trip of its own
            ops[0].write(cursor, statements)
        else:
            check_fences(ops, cursor)
            statements.get("update_delivery", _update_delivery).run_many(
                cursor, [op._values() for op in ops], same={"updated_at": datetime.now(UTC)}
            )
        return [None] * len(ops)
