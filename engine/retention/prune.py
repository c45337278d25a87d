"""Pruning: which messages a retention rule removes, a batch at a time, and the dry run.

A *rule* is one kind (``content`` or ``metadata``) and one category with its period. Each rule
walks the messages of its status in id order, up to the newest one received before its cutoff,
a batch at a time. Choosing a batch is a read (:meth:`Pruning.next_batch`); pruning it is one
write transaction (:meth:`Pruning.apply`: the engine's writer runs it, or ``crosswalk prune``),
which looks again, inside the transaction, at what still holds each message back: a delivery
queued (always), a delivery set aside (unless ``prune_set_aside``), a review decision that sent
it (metadata). Where the rule got to is stored with the batch, so a restart resumes there; a
message held back keeps that mark at itself, and is looked at again on the next pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from engine.retention.settings import RetentionSettings
from engine.review.tables import ReviewDecision
from engine.store.fastsql import Statements
from engine.store.schema import (
    Delivery,
    DeliveryState,
    Message,
    MessageStatus,
    RetentionProgress,
    table_of,
)

STATUS_OF = {
    "delivered": MessageStatus.ROUTED,
    "filtered": MessageStatus.FILTERED,
    "rejected": MessageStatus.REJECTED,
    "duplicate": MessageStatus.DUPLICATE,
    "errored": MessageStatus.ERRORED,
}
"""The message status of each retention category (``delivered``: routed, all delivered)."""

CONTENT, METADATA = "content", "metadata"

# Rows that name a message: pruning its metadata clears the name (the MPI keeps its history,
# without the message); a review decision keeps the merge message it sent.
CLEARED_REFERENCES = (("patient_events", "message_id"), ("orders", "message_id"))
KEEPING_REFERENCES = (("review_decisions", "message_id"),)


@dataclass(frozen=True)
class Rule:
    """Prune ``kind`` of the messages of ``category`` older than ``seconds``."""

    kind: str
    category: str
    seconds: float

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.category}"

    @property
    def status(self) -> str:
        return STATUS_OF[self.category]


def rules_of(settings: RetentionSettings) -> list[Rule]:
    """The settings' rules, metadata first (what it deletes, content pruning need not clear)."""
    return [Rule(METADATA, c, s) for c, s in settings.metadata.items()] + [
        Rule(CONTENT, c, s) for c, s in settings.content.items()
    ]


@dataclass
class Batch:
    """Messages chosen for one rule: their ids, and the rule's mark before them."""

    rule: Rule
    ids: list[int]
    last: bool
    """Fewer than a full batch: the rule is caught up once this one is applied."""


@dataclass
class Applied:
    """What one batch did."""

    rule: Rule
    looked: int
    pruned: int
    kept: int
    first_kept: int | None = None
    """The oldest message held back (the rule's next pass starts there)."""
    pages_freed: int = 0


@dataclass
class _Walk:
    """A rule's position: ``floor`` as stored, ``cursor`` where this pass got to."""

    floor: int
    cursor: int
    first_kept: int | None = None


@dataclass
class Pruning:
    """The state of pruning one store with one set of settings."""

    settings: RetentionSettings
    rules: list[Rule] = field(init=False)
    walks: dict[str, _Walk] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rules = rules_of(self.settings)

    def load(self, connection: Connection) -> None:
        """Read where each rule got to (a rule never run starts at the beginning)."""
        progress = table_of(RetentionProgress)
        stored = dict(connection.execute(select(progress.c.name, progress.c.after_id)).all())
        self.walks = {
            rule.name: _Walk(int(stored.get(rule.name, 0)), int(stored.get(rule.name, 0)))
            for rule in self.rules
        }

    def next_batch(
        self, connection: Connection, rule: Rule, now: datetime | None = None
    ) -> Batch | None:
        """The next messages of ``rule`` old enough to prune (None: the rule is caught up, and
        its next pass starts again from its stored mark)."""
        walk = self.walks[rule.name]
        bound = newest_before(connection, cutoff_of(rule, now))
        messages = table_of(Message)
        ids = list(
            connection.execute(
                select(messages.c.id)
                .where(
                    messages.c.status == rule.status,
                    messages.c.id > walk.cursor,
                    messages.c.id <= (bound or 0),
                )
                .order_by(messages.c.id)
                .limit(self.settings.batch)
            ).scalars()
        )
        if not ids:
            walk.cursor, walk.first_kept = walk.floor, None
            return None
        return Batch(rule, ids, last=len(ids) < self.settings.batch)

    def apply(self, cursor: Any, statements: Statements, batch: Batch) -> Applied:
        """Prune ``batch`` in the caller's transaction (the DBAPI ``cursor``), with the rule's
        new mark; the caller commits, then calls :meth:`advance`."""
        rule, ids = batch.rule, batch.ids
        held = self._held(cursor, statements, rule, ids)
        chosen = [i for i in ids if i not in held]
        pruned = 0
        if chosen:
            prune = _prune_metadata if rule.kind == METADATA else _prune_content
            pruned = prune(cursor, statements, chosen)
        walk = self.walks[rule.name]
        first_held = min(held, default=None)
        first_kept = walk.first_kept if walk.first_kept is not None else first_held
        mark = first_kept - 1 if first_kept is not None else ids[-1]
        _save_mark(cursor, statements, rule.name, mark)
        applied = Applied(rule, len(ids), pruned, len(held), first_held)
        if self.settings.vacuum and statements.engine.dialect.name == "sqlite" and pruned:
            applied.pages_freed = incremental_vacuum(cursor)
        return applied

    def advance(self, batch: Batch, applied: Applied) -> None:
        """The batch is committed: move the rule's position past it."""
        walk = self.walks[batch.rule.name]
        walk.cursor = batch.ids[-1]
        if walk.first_kept is None:
            walk.first_kept = applied.first_kept
        walk.floor = walk.first_kept - 1 if walk.first_kept is not None else walk.cursor
        if batch.last:
            walk.cursor, walk.first_kept = walk.floor, None

    def _held(self, cursor: Any, statements: Statements, rule: Rule, ids: list[int]) -> set[int]:
        states = [DeliveryState.QUEUED]
        if not self.settings.prune_set_aside:
            states.append(DeliveryState.ERRORED)
        clause, params = statements.where_in("message_id", ids)
        listed = ", ".join(f"'{state}'" for state in states)  # constants of the schema
        cursor.execute(
            f"SELECT DISTINCT message_id FROM deliveries WHERE {clause} AND state IN ({listed})",
            params,
        )
        held = {int(row[0]) for row in cursor.fetchall()}
        if rule.kind == METADATA:
            for table, column in KEEPING_REFERENCES:
                clause, params = statements.where_in(column, ids)
                cursor.execute(f"SELECT DISTINCT {column} FROM {table} WHERE {clause}", params)
                held |= {int(row[0]) for row in cursor.fetchall()}
        return held


def cutoff_of(rule: Rule, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(seconds=rule.seconds)


def newest_before(connection: Connection, cutoff: datetime) -> int | None:
    """The id of the newest message received before ``cutoff`` (ids grow with receipt): one
    step down the index of receipt times (``max(id)`` would read every entry before it)."""
    messages = table_of(Message)
    found = connection.execute(
        select(messages.c.id)
        .where(messages.c.received_at < cutoff)
        .order_by(messages.c.received_at.desc(), messages.c.id.desc())  # ties: the newest id
        .limit(1)
    ).scalar()
    return None if found is None else int(found)


def _marker(statements: Statements) -> str:
    return "?" if statements.engine.dialect.paramstyle == "qmark" else "%s"


def _prune_content(cursor: Any, statements: Statements, ids: list[int]) -> int:
    """Clear the messages' bytes and ACKs and their deliveries' payloads and answers; the
    empty value is stored as such (it reads back empty with or without encryption)."""
    mark = _marker(statements)
    clause, params = statements.where_in("id", ids)
    cursor.execute(
        f"UPDATE messages SET raw = {mark}, ack = {mark} WHERE {clause} AND length(raw) > 0",
        [b"", b"", *params],
    )
    cleared = int(cursor.rowcount)
    clause, params = statements.where_in("message_id", ids)
    cursor.execute(
        f"UPDATE deliveries SET payload = {mark}, ack = NULL WHERE {clause}"
        " AND length(payload) > 0",
        [b"", *params],
    )
    return cleared


def _prune_metadata(cursor: Any, statements: Statements, ids: list[int]) -> int:
    """Delete the messages and their deliveries; clear what names them."""
    for table, column in CLEARED_REFERENCES:
        clause, params = statements.where_in(column, ids)
        cursor.execute(f"UPDATE {table} SET {column} = NULL WHERE {clause}", params)
    clause, params = statements.where_in("duplicate_of", ids)
    cursor.execute(f"UPDATE messages SET duplicate_of = NULL WHERE {clause}", params)
    clause, params = statements.where_in("message_id", ids)
    cursor.execute(f"DELETE FROM deliveries WHERE {clause}", params)
    clause, params = statements.where_in("id", ids)
    cursor.execute(f"DELETE FROM messages WHERE {clause}", params)
    return int(cursor.rowcount)


def _save_mark(cursor: Any, statements: Statements, name: str, after_id: int) -> None:
    progress = table_of(RetentionProgress)
    now = datetime.now(UTC)
    changed = statements.get(
        "retention.mark",
        lambda: (
            update(progress)
            .where(progress.c.name == bindparam("rule"))
            .values(after_id=bindparam("mark"), updated_at=bindparam("at")),
            ["rule", "mark", "at"],
        ),
    ).run(cursor, {"rule": name, "mark": after_id, "at": now})
    if changed.rowcount == 0:
        statements.get(
            "retention.first_mark", lambda: (insert(progress), ["name", "after_id", "updated_at"])
        ).run(cursor, {"name": name, "after_id": after_id, "updated_at": now})


VACUUM_PAGES = 1024
"""Pages (4 MiB of 4 KiB pages) given back to the file system at most per batch: moving pages
from the end of the file into the free ones is the costly part of a batch."""
VACUUM_RESERVE = 8192
"""Free pages (32 MiB) kept for the feed to reuse: only those beyond are given back, so that
the file neither grows nor shrinks page by page in the steady state."""


def incremental_vacuum(cursor: Any) -> int:
    """SQLite: hand the free pages back to the file system (a store made with
    ``auto_vacuum=INCREMENTAL``; on another it does nothing). The number of pages freed."""
    cursor.execute("PRAGMA freelist_count")
    free = int(cursor.fetchone()[0])
    if free <= VACUUM_RESERVE:
        return 0
    cursor.execute(f"PRAGMA incremental_vacuum({min(free - VACUUM_RESERVE, VACUUM_PAGES)})")
    cursor.fetchall()  # the pragma frees a page per step: run it to the end
    cursor.execute("PRAGMA freelist_count")
    return free - int(cursor.fetchone()[0])


def auto_vacuum_mode(engine: Engine) -> str | None:
    """SQLite's auto_vacuum of the store (``none``, ``full``, ``incremental``); None elsewhere."""
    if engine.dialect.name != "sqlite":
        return None
    with engine.connect() as connection:
        mode = connection.exec_driver_sql("PRAGMA auto_vacuum").scalar()
    return {0: "none", 1: "full", 2: "incremental"}.get(int(mode or 0), str(mode))


@dataclass(frozen=True)
class Planned:
    """What a rule would do now: messages it would prune, and those held back."""

    rule: Rule
    cutoff: datetime
    prunable: int
    held: int


def plan(engine: Engine, settings: RetentionSettings, now: datetime | None = None) -> list[Planned]:
    """The dry run: for each rule, how many messages it would prune now and how many it holds
    back (a delivery queued or set aside; a review decision's merge message)."""
    pruning = Pruning(settings)
    messages, deliveries = table_of(Message), table_of(Delivery)
    held_states = [DeliveryState.QUEUED]
    if not settings.prune_set_aside:
        held_states.append(DeliveryState.ERRORED)
    found = []
    with engine.connect() as connection:
        pruning.load(connection)
        metadata_bound = {
            rule.category: newest_before(connection, cutoff_of(rule, now)) or 0
            for rule in pruning.rules
            if rule.kind == METADATA
        }
        for rule in pruning.rules:
            cutoff = cutoff_of(rule, now)
            low = pruning.walks[rule.name].floor
            if rule.kind == CONTENT:
                low = max(low, metadata_bound.get(rule.category, 0))
            where = [
                messages.c.status == rule.status,
                messages.c.id > low,
                messages.c.id <= (newest_before(connection, cutoff) or 0),
            ]
            if rule.kind == CONTENT:
                where.append(func.length(messages.c.raw) > 0)
            total = connection.execute(select(func.count()).where(*where)).scalar() or 0
            holding: Any = select(deliveries.c.message_id).where(
                deliveries.c.state.in_(held_states)
            )
            if rule.kind == METADATA:
                decisions = table_of(ReviewDecision)
                holding = holding.union(
                    select(decisions.c.message_id).where(decisions.c.message_id.is_not(None))
                )
            held = (
                connection.execute(
                    select(func.count()).where(*where, messages.c.id.in_(holding))
                ).scalar()
                or 0
            )
            found.append(Planned(rule, cutoff, int(total) - int(held), int(held)))
    return found
