"""The lease statements (PostgreSQL): acquire, renew, release, read, and the fence of a write.

Expiry is judged by the database's clock (``now()``), never an engine's, so engines on hosts
whose clocks disagree still agree on when a lease is free. A lease is taken only when it has
expired (or its holder takes it again), and every take raises its epoch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError

from engine.errors import CrosswalkError
from engine.store.database import open_engine

log = logging.getLogger(__name__)

MEMBER = "engine:"
"""Prefix of the rows that say an engine is alive: ``engine:<holder>``."""
FORGET_MEMBERS_AFTER = 3600
"""Seconds after which the row of an engine that died is deleted."""


class LeaseLost(CrosswalkError, RuntimeError):
    """Not written: the lease this write was fenced with was taken over by another engine."""


@dataclass(frozen=True, slots=True)
class Fence:
    """A lease as held when a write was made: the write commits only if it is still held.

    ``check`` runs inside the write's transaction and locks the lease row (FOR SHARE) until the
    commit, so a takeover waits for the write, and a write after a takeover is refused.
    """

    name: str
    holder: str
    epoch: int

    def check(self, cursor: Any) -> None:
        """Raise :class:`LeaseLost` unless the lease is still this holder's, at this epoch."""
        cursor.execute("SELECT holder, epoch FROM leases WHERE name = %s FOR SHARE", (self.name,))
        row = cursor.fetchone()
        if row is None or row[0] != self.holder or row[1] != self.epoch:
            raise LeaseLost(f"lease {self.name} was taken over (epoch {self.epoch} is stale)")


_ACQUIRE = text(
    """
    INSERT INTO leases (name, holder, epoch, expires_at, acquired_at)
    VALUES (:name, :holder, 1, now() + make_interval(secs => :ttl), now())
    ON CONFLICT (name) DO UPDATE
    SET holder = EXCLUDED.holder, epoch = leases.epoch + 1,
        expires_at = EXCLUDED.expires_at, acquired_at = EXCLUDED.acquired_at
    WHERE leases.expires_at <= now() OR leases.holder = EXCLUDED.holder
    RETURNING epoch
    """
)
_RENEW = text(
    """
    UPDATE leases SET expires_at = now() + make_interval(secs => :ttl)
    WHERE name = :name AND epoch = :epoch AND holder = :holder
    """
)
_RENEW_MEMBER = text(
    """
    UPDATE leases SET expires_at = now() + make_interval(secs => :ttl),
        info = COALESCE(:info, info)
    WHERE name = :name AND epoch = :epoch AND holder = :holder
    """
)


def application_name(holder: str) -> str:
    """How the server names the connections of engine ``holder`` (``pg_stat_activity``): its
    pid and random part first, so that a long host name cut at 63 bytes keeps it unique."""
    host, _, rest = holder.partition(":")
    return f"crosswalk {rest} {host}"[:63] if rest else f"crosswalk {holder}"[:63]


def end_stalled_transactions(engine: Engine, ttl: float, holder: str) -> None:
    """Have the server end this engine's transactions left idle for ``ttl / 2`` seconds, and
    name its connections after ``holder`` (:func:`end_stalled_holder`).

    A write fenced by a lease locks the lease's row until it commits: were the engine paused
    in the middle of one, no one could take its leases over until it resumed. Its leases
    expire no sooner than ``3 * ttl / 4`` after its last renewal, so by then the server has
    already rolled such a transaction back (and the engine's writer reconnects). A transaction
    paused in the middle of a statement (a pipeline of statements half sent) is not idle: the
    engine taking the lease over ends it (:func:`acquire`).
    """
    timeout_ms = max(1, int(ttl * 500))
    name = application_name(holder)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET idle_in_transaction_session_timeout = {timeout_ms}")
            cursor.execute("SELECT set_config('application_name', %s, false)", (name,))
        dbapi_connection.commit()

    engine.dispose()  # the connections already open get it as they are made again


def lease_engine(store: Engine, wait: float) -> Engine:
    """The keeper's own connections to the store (two at most): apart from the engine's pool,
    so that busy workers never hold up a renewal, and with every statement bounded by ``wait``
    seconds (a lease row locked by a paused engine's write must not hold a renewal for long)."""
    engine = open_engine(
        store.url.render_as_string(hide_password=False), pool_size=2, max_overflow=0
    )
    timeout_ms = max(1, int(wait * 1000))

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET lock_timeout = {timeout_ms}")
            cursor.execute(f"SET statement_timeout = {timeout_ms}")
        dbapi_connection.commit()

    return engine


def acquire(engine: Engine, name: str, holder: str, ttl: float) -> int | None:
    """Take the lease ``name`` for ``ttl`` seconds if it is free (or expired, or already
    ``holder``'s): its new epoch, or None when another engine holds it.

    An expired lease whose row stays locked (``engine`` bounds the wait) is held up by a
    transaction of its last holder, paused or cut off mid-statement: that holder's
    transactions are ended, and the lease is taken at the next try."""
    try:
        with engine.begin() as connection:
            params = {"name": name, "holder": holder, "ttl": ttl}
            row = connection.execute(_ACQUIRE, params).first()
    except OperationalError as error:
        if not _timed_out(error):
            raise
        end_stalled_holder(engine, name, holder)
        return None
    return None if row is None else int(row[0])


def end_stalled_holder(engine: Engine, name: str, holder: str) -> int:
    """End the open transactions of the engine whose lease ``name`` expired (not ``holder``'s
    own): they hold the lease's row, or rows its next holder must write. Its writes are fenced
    and its work stopped on its own clock, so nothing it still had to commit is lost; it
    reconnects when it runs again. The number of connections ended."""
    with engine.begin() as connection:
        stale = connection.execute(
            text(
                "SELECT holder FROM leases WHERE name = :name AND expires_at <= now()"
                " AND holder <> :holder"
            ),
            {"name": name, "holder": holder},
        ).scalar()
        if stale is None:
            return 0
        ended = int(
            connection.execute(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                    " FROM pg_stat_activity WHERE application_name = :application"
                    " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
                ),
                {"application": application_name(stale)},
            ).scalar_one()
        )
    log.warning(
        "leases: %s expired but its row stayed locked by %s (paused or cut off in the middle"
        " of a write): ended %d of its transactions",
        name,
        stale,
        ended,
    )
    return ended


def renew(
    engine: Engine,
    holder: str,
    held: Mapping[str, int],
    ttl: float,
    info: Mapping[str, Any] | None = None,
) -> tuple[set[str], set[str]]:
    """Extend the leases ``held`` (name → epoch) by ``ttl`` seconds from now: the names
    renewed, and those whose row stayed locked (held still, not renewed: their work stops if
    their time runs out). One in neither was taken over (after it expired): its work must stop.
    ``info``: what this engine says of itself, written into its ``engine:`` row as it is
    renewed (``crosswalk status`` on any engine shows it).

    Each lease is renewed in a transaction of its own: renewing waits for the writes fenced by
    a lease (they lock its row until they commit), and holding one lease row while waiting for
    another could deadlock with a write fenced by both.
    """
    kept: set[str] = set()
    locked: set[str] = set()
    with engine.connect() as connection:
        for name, epoch in held.items():
            params: dict[str, Any] = {"name": name, "epoch": epoch, "holder": holder, "ttl": ttl}
            statement = _RENEW
            if name.startswith(MEMBER):
                statement = _RENEW_MEMBER
                params["info"] = None if info is None else json.dumps(info)
            try:
                renewed = connection.execute(statement, params).rowcount
            except OperationalError as error:
                if not _timed_out(error):
                    raise
                connection.rollback()  # its row is locked: try again next time
                locked.add(name)
                continue
            connection.commit()
            if renewed:
                kept.add(name)
    return kept, locked


def _timed_out(error: OperationalError) -> bool:
    """A lock or statement timeout (SQLSTATE 55P03, 57014), not a lost connection."""
    return getattr(error.orig, "sqlstate", None) in ("55P03", "57014")


def queue_lease(destination: str, partition: int) -> str:
    """The lease that owns one partition of a destination's queue."""
    return f"queue:{destination}#{partition}"


def queue_of_lease(name: str) -> tuple[str, int] | None:
    """The destination and partition a queue's lease owns (None: not a queue's lease)."""
    destination, _, partition = name.removeprefix("queue:").rpartition("#")
    if not name.startswith("queue:") or not partition.isdigit():
        return None
    return destination, int(partition)


def release(engine: Engine, holder: str, held: Mapping[str, int]) -> None:
    """Give up these leases at once (another engine may take them now); the rows that said
    this engine was alive are deleted."""
    if not held:
        return
    with engine.begin() as connection:
        for name, epoch in held.items():
            params = {"name": name, "holder": holder, "epoch": epoch}
            if name.startswith(MEMBER):
                connection.execute(
                    text("DELETE FROM leases WHERE name = :name AND holder = :holder"), params
                )
            else:
                connection.execute(
                    text(
                        "UPDATE leases SET expires_at = now() - interval '1 second'"
                        " WHERE name = :name AND holder = :holder AND epoch = :epoch"
                    ),
                    params,
                )


@dataclass(frozen=True, slots=True)
class Survey:
    """What an engine needs to know before taking leases."""

    taken: frozenset[str]
    """Of the names asked about, those another engine holds and has not let expire."""
    engines: int
    """Engines alive (their ``engine:`` rows not expired), at least 1."""


def survey(engine: Engine, names: Iterable[str], holder: str) -> Survey:
    """Which of ``names`` other engines hold, and how many engines are alive; rows of engines
    dead for over an hour are deleted on the way."""
    with engine.begin() as connection:
        taken = connection.execute(
            text(
                "SELECT name FROM leases WHERE name = ANY(CAST(:names AS text[]))"
                " AND expires_at > now() AND holder <> :holder"
            ),
            {"names": list(names), "holder": holder},
        ).scalars()
        taken_names = frozenset(taken)
        alive = connection.execute(
            text("SELECT count(*) FROM leases WHERE name LIKE :member AND expires_at > now()"),
            {"member": MEMBER + "%"},
        ).scalar_one()
        connection.execute(
            text(
                "DELETE FROM leases WHERE name LIKE :member"
                " AND expires_at < now() - make_interval(secs => :after)"
            ),
            {"member": MEMBER + "%", "after": FORGET_MEMBERS_AFTER},
        )
    return Survey(taken_names, max(1, int(alive)))


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease row as stored (``crosswalk queue status``, tests)."""

    name: str
    holder: str
    epoch: int
    expires_at: datetime
    expired: bool


def read_leases(engine: Engine) -> list[HeldLease]:
    """Every lease row, by name; an SQLite store has none."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT name, holder, epoch, expires_at, expires_at <= now()"
                " FROM leases ORDER BY name"
            )
        ).all()
    return [HeldLease(r[0], r[1], int(r[2]), r[3], bool(r[4])) for r in rows]


@dataclass(frozen=True, slots=True)
class EngineRow:
    """An engine sharing the store, as its rows say (``crosswalk status``)."""

    holder: str
    alive: bool
    """Its ``engine:`` row is renewed (not expired)."""
    leases: list[str] = field(default_factory=list)
    """The leases it holds, unexpired, by name."""
    info: dict[str, Any] = field(default_factory=dict)
    """What it last said of itself (written by :func:`renew`); empty from an older engine."""

    @property
    def host(self) -> str:
        return self.holder.rsplit(":", 2)[0]

    @property
    def pid(self) -> int | None:
        parts = self.holder.rsplit(":", 2)
        return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def read_engines(engine: Engine) -> list[EngineRow]:
    """Every engine with a row (alive, or dead for under an hour), each with the leases it
    holds; an SQLite store has none."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT name, holder, expires_at <= now(), info FROM leases ORDER BY name")
        ).all()
    held: dict[str, list[str]] = {}
    for name, holder, expired, _ in rows:
        if not name.startswith(MEMBER) and not expired:
            held.setdefault(holder, []).append(name)
    engines = []
    for name, holder, expired, info in rows:
        if name.startswith(MEMBER):
            try:
                said = json.loads(info) if info else {}
            except ValueError:
                said = {}
            engines.append(EngineRow(holder, not expired, held.get(holder, []), said))
    return engines
