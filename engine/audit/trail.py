"""Recording audit events, each chained to the one before by its hash; reading them back.

A row's ``hash`` is the SHA-256 of its fields (``previous_hash`` included) serialised as
canonical JSON, and its ``id`` is the last row's plus one. Both are decided under a lock taken
in the recording transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped
advisory lock), so writers in several processes, on one host or several, append one chain; the
primary key refuses a second row with the same id even if the lock were bypassed.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, insert, or_, select, text

from engine.audit.tables import AuditEvent, Outcome
from engine.store.database import for_writing
from engine.store.schema import table_of

log = logging.getLogger(__name__)

_events = table_of(AuditEvent)

GENESIS = "0" * 64
"""The ``previous_hash`` of the first row."""
ENGINE_ACTOR = "crosswalk (engine)"
"""Who the running engine's own actions (configuration reloads) are recorded as."""
LOCK_KEY = 0x61756474
"""PostgreSQL advisory lock taken while appending (distinct from the migrations' lock)."""
MAX_OBJECTS = 200
"""Objects kept per event; beyond them, ``more:N`` says how many were left out."""
GIVEN = "(given)"
"""Recorded for a filter whose value is PHI (a search text, a name, an MRN)."""
HASHED = (
    "id",
    "recorded_at",
    "actor",
    "os_user",
    "host",
    "terminal",
    "remote_address",
    "action",
    "objects",
    "criteria",
    "outcome",
    "detail",
    "previous_hash",
)
"""The fields a row's hash covers: all but the hash itself."""
_LIMITS = {
    "actor": 100,
    "os_user": 100,
    "host": 255,
    "terminal": 100,
    "remote_address": 100,
    "action": 32,
    "detail": 2000,
}


def _clean(value: str, limit: int | None = None) -> str:
    """Text fit to store: no control characters (PostgreSQL refuses NUL), cut to ``limit``."""
    cleaned = "".join(c if c.isprintable() else " " for c in value)
    return cleaned[:limit] if limit is not None else cleaned


def os_account() -> str:
    """The operating-system user running this process."""
    try:
        return getpass.getuser()
    except Exception:  # no $USER and no password entry (some containers)
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _terminal() -> str:
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.ttyname(fd)
        except OSError:
            continue
    return ""


def _remote(environ: Mapping[str, str]) -> str:
    """The SSH client's address (``SSH_CLIENT``: address, port, local port)."""
    for name in ("SSH_CLIENT", "SSH_CONNECTION"):
        words = environ.get(name, "").split()
        if words:
            return words[0]
    return ""


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts, and from where."""

    name: str
    """The ``--user`` given, else the operating-system user."""
    os_user: str
    host: str
    terminal: str = ""
    remote_address: str = ""

    @classmethod
    def current(cls, user: str | None = None, environ: Mapping[str, str] | None = None) -> Actor:
        """The person running this command: ``user`` if given (``--user``), else the OS user;
        this host, the terminal, and the SSH client's address if any."""
        account = os_account()
        return cls(
            (user or "").strip() or account,
            account,
            socket.gethostname(),
            _terminal(),
            _remote(os.environ if environ is None else environ),
        )

    @classmethod
    def engine(cls) -> Actor:
        """The running engine, acting on its own (a configuration reload)."""
        return cls(ENGINE_ACTOR, os_account(), socket.gethostname())


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored event."""

    id: int
    recorded_at: datetime
    actor: str
    os_user: str
    host: str
    terminal: str
    remote_address: str
    action: str
    objects: tuple[str, ...]
    criteria: dict[str, str] = field(hash=False)
    outcome: str
    detail: str
    previous_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the time in ISO 8601 (UTC), objects a list, criteria an object."""
        return {
            "id": self.id,
            "recorded_at": instant(self.recorded_at),
            "actor": self.actor,
            "os_user": self.os_user,
            "host": self.host,
            "terminal": self.terminal,
            "remote_address": self.remote_address,
            "action": self.action,
            "objects": list(self.objects),
            "criteria": dict(self.criteria),
            "outcome": self.outcome,
            "detail": self.detail,
            "previous_hash": self.previous_hash,
            "hash": self.hash,
        }


def instant(moment: datetime) -> str:
    """A moment as the hash and the exports write it: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def digest(values: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of a row's fields as stored, as canonical JSON (sorted keys, no
    spaces, UTF-8)."""
    fields = {name: values[name] for name in HASHED}
    fields["id"] = int(fields["id"])
    fields["recorded_at"] = instant(fields["recorded_at"])
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def ref(kind: str, key: object) -> str:
    """An object reference: ``message:12``, ``destination:pacs``."""
    return f"{kind}:{key}"


def criteria(values: Mapping[str, object], private: Iterable[str] = ()) -> dict[str, str]:
    """The filters given, by name, for the record: empty ones left out, lists joined, and the
    values of ``private`` ones (PHI: a search text, a name, a birth date, an MRN) replaced by
    ``(given)``."""
    hidden = set(private)
    found: dict[str, str] = {}
    for name, value in values.items():
        if value is None or value == "" or value is False or value == [] or value == ():
            continue
        if name in hidden:
            found[name] = GIVEN
        elif isinstance(value, list | tuple | set | frozenset):
            found[name] = ",".join(str(v) for v in value)
        else:
            found[name] = str(value)
    return found


class Exporter(Protocol):
    """Sends each recorded event somewhere else as well (a syslog collector); best effort."""

    def send(self, record: AuditRecord) -> bool: ...


def _record_of(values: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(
        id=int(values["id"]),
        recorded_at=values["recorded_at"],
        actor=values["actor"],
        os_user=values["os_user"],
        host=values["host"],
        terminal=values["terminal"],
        remote_address=values["remote_address"],
        action=values["action"],
        objects=tuple(json.loads(values["objects"] or "[]")),
        criteria=dict(json.loads(values["criteria"] or "{}")),
        outcome=values["outcome"],
        detail=values["detail"],
        previous_hash=values["previous_hash"],
        hash=values["hash"],
    )


def _objects(objects: Iterable[str]) -> str:
    listed = list(dict.fromkeys(_clean(o, 200) for o in objects))
    if len(listed) > MAX_OBJECTS:
        listed = [*listed[:MAX_OBJECTS], f"more:{len(listed) - MAX_OBJECTS}"]
    return json.dumps(listed, ensure_ascii=False)


def _criteria(values: Mapping[str, str]) -> str:
    cleaned = {_clean(k, 64): _clean(str(v), 200) for k, v in values.items()}
    return json.dumps(cleaned, sort_keys=True, ensure_ascii=False)


def lock(connection: Connection) -> None:
    """Take the trail's append lock for this transaction (SQLite: ``BEGIN IMMEDIATE`` already
    holds the database's write lock)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})


class Trail:
    """Records events as ``actor`` into ``store``, and hands each to ``export`` (if any)."""

    def __init__(self, store: Engine, actor: Actor, export: Exporter | None = None) -> None:
        self.store = store
        self.actor = actor
        self.export = export

    def record(
        self,
        action: str,
        *,
        objects: Iterable[str] = (),
        criteria: Mapping[str, str] | None = None,
        outcome: str = Outcome.OK,
        detail: str = "",
    ) -> AuditRecord:
        """Append one event to the chain (its own transaction, committed), then export it."""
        if outcome not in Outcome.ALL:
            raise ValueError(f"unknown outcome {outcome!r}")
        actor = self.actor
        values: dict[str, Any] = {
            "actor": _clean(actor.name, _LIMITS["actor"]),
            "os_user": _clean(actor.os_user, _LIMITS["os_user"]),
            "host": _clean(actor.host, _LIMITS["host"]),
            "terminal": _clean(actor.terminal, _LIMITS["terminal"]),
            "remote_address": _clean(actor.remote_address, _LIMITS["remote_address"]),
            "action": _clean(action, _LIMITS["action"]),
            "objects": _objects(objects),
            "criteria": _criteria(criteria or {}),
            "outcome": outcome,
            "detail": _clean(detail, _LIMITS["detail"]),
        }
        with for_writing(self.store).begin() as connection:
            lock(connection)
            last = connection.execute(
                select(_events.c.id, _events.c.hash).order_by(_events.c.id.desc()).limit(1)
            ).first()
            values["id"] = last.id + 1 if last is not None else 1
            values["previous_hash"] = last.hash if last is not None else GENESIS
            # Taken under the lock, so that time never runs backwards along the chain.
            values["recorded_at"] = datetime.now(UTC)
            values["hash"] = digest(values)
            connection.execute(insert(_events).values(values))
        record = _record_of(values)
        if self.export is not None:
            try:
                self.export.send(record)
            except Exception as error:  # the export is best effort; the row is stored
                log.warning("audit: event %d not exported: %s", record.id, type(error).__name__)
        return record


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to read; every criterion given must hold."""

    user: str | None = None
    """The actor, or the operating-system user."""
    action: str | None = None
    """An action (``review.approve``) or a part (``review``: every ``review.*``)."""
    object: str | None = None
    """``message:12`` (that object), ``message`` (every message), or ``12`` (any kind)."""
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    """The newest this many (still listed oldest first)."""


def _object_condition(wanted: str) -> Any:
    column = _events.c.objects
    if ":" in wanted:
        return column.contains(json.dumps(wanted), autoescape=True)
    if wanted.isdigit():
        return column.contains(f':{wanted}"', autoescape=True)
    return column.contains(f'"{wanted}:', autoescape=True)


def events(connection: Connection, wanted: EventFilter | None = None) -> list[AuditRecord]:
    """Events matching ``wanted``, oldest first."""
    wanted = wanted or EventFilter()
    c = _events.c
    query = select(_events)
    if wanted.user:
        query = query.where(or_(c.actor == wanted.user, c.os_user == wanted.user))
    if wanted.action:
        query = query.where(
            or_(
                c.action == wanted.action, c.action.startswith(wanted.action + ".", autoescape=True)
            )
        )
    if wanted.object:
        query = query.where(_object_condition(wanted.object))
    if wanted.outcome:
        query = query.where(c.outcome == wanted.outcome)
    if wanted.since is not None:
        query = query.where(c.recorded_at >= wanted.since)
    if wanted.until is not None:
        query = query.where(c.recorded_at < wanted.until)
    if wanted.limit is None:
        found = connection.execute(query.order_by(c.id)).mappings().all()
    else:
        newest = connection.execute(query.order_by(c.id.desc()).limit(wanted.limit))
        found = list(reversed(newest.mappings().all()))
    return [_record_of(dict(row)) for row in found]
