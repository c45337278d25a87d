"""The lease statements (PostgreSQL): acquire, renew, release, read, and the fence of a write.

Expiry is judged by the database's clock (``now()``), never an engine's, so engines on hosts
whose clocks disagree still agree on when a lease is free. A lease is taken only when it has
expired (or its holder takes it again), and every take raises its epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

from engine.errors import CrosswalkError

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
    UPDATE leases AS l SET expires_at = now() + make_interval(secs => :ttl)
    FROM unnest(CAST(:names AS text[]), CAST(:epochs AS bigint[])) AS h(name, epoch)
    WHERE l.name = h.name AND l.epoch = h.epoch AND l.holder = :holder
    RETURNING l.name
    """
)


def acquire(engine: Engine, name: str, holder: str, ttl: float) -> int | None:
    """Take the lease ``name`` for ``ttl`` seconds if it is free (or expired, or already
    ``holder``'s): its new epoch, or None when another engine holds it."""
    with engine.begin() as connection:
        row = connection.execute(_ACQUIRE, {"name": name, "holder": holder, "ttl": ttl}).first()
    return None if row is None else int(row[0])


def renew(engine: Engine, holder: str, held: Mapping[str, int], ttl: float) -> set[str]:
    """Extend the leases ``held`` (name → epoch) by ``ttl`` seconds from now: the names still
    held. One missing was taken over (after it expired): its work must stop."""
    if not held:
        return set()
    names = list(held)
    with engine.begin() as connection:
        rows = connection.execute(
            _RENEW,
            {"names": names, "epochs": [held[n] for n in names], "holder": holder, "ttl": ttl},
        )
        return {row[0] for row in rows}


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
