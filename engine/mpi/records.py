"""Reading and writing MPI rows inside the writer's transaction (the DBAPI cursor).

The MPI is kept up to date from the ADT feed through the engine's single writer, so MPI
changes share the group commits of everything else and never contend for SQLite's write lock.
Statements are compiled once per dialect (:mod:`engine.store.fastsql`). With content encryption
on, the column types encrypt and hash what is written; what is read here, on the bare cursor,
is decrypted by :func:`engine.store.crypto.reveal`, and the keyed hashes searches use
(:data:`SEARCH_KEYS`) are written beside the values they hash.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, insert, select, update

from engine.mpi.tables import (
    Order,
    Patient,
    PatientEvent,
    PatientIdentifier,
    PatientName,
    family_prefix,
)
from engine.store import crypto
from engine.store.fastsql import Statements
from engine.store.schema import table_of

if TYPE_CHECKING:
    from engine.mpi.demographics import Identifier

_patients = table_of(Patient)
_identifiers = table_of(PatientIdentifier)
_names = table_of(PatientName)
_events = table_of(PatientEvent)
_orders = table_of(Order)

DEMOGRAPHIC_COLUMNS = (
    "family_name",
    "given_name",
    "middle_name",
    "birth_date",
    "sex",
    "street",
    "city",
    "state",
    "postal_code",
    "phone",
)
SEARCH_KEYS = ("birth_key", "family_key")
"""Keyed hashes written beside a patient's demographics in an encrypted store."""


def _search_keys(columns: dict[str, Any]) -> dict[str, str]:
    return {"birth_key": columns["birth_date"], "family_key": family_prefix(columns["family_name"])}


def _revealed(names: tuple[str, ...], values: Any) -> dict[str, str]:
    return {name: crypto.reveal(value, name) for name, value in zip(names, values, strict=True)}


def _variant(name: str) -> tuple[str, bool]:
    """A statement's name for the store's mode, and whether it writes the encrypted extras (an
    encrypted copy, search hashes): a clear store's statements are what they always were."""
    keyed = crypto.encrypting()
    return (f"{name}_keyed" if keyed else name), keyed


@dataclass(frozen=True, slots=True)
class PatientRow:
    id: int
    merged_into: int | None
    event_time: str
    last_message_id: int | None
    columns: dict[str, str]


def event(
    patient_id: int | None,
    kind: str,
    event_time: str,
    message_id: int | None,
    detail: str,
    command: str = "",
) -> dict[str, Any]:
    """The values of one ``patient_events`` row: what changed, when, and what caused it."""
    return {
        "patient_id": patient_id,
        "kind": kind,
        "event_time": event_time,
        "message_id": message_id,
        "command": command,
        "detail": detail,
        "recorded_at": datetime.now(UTC),
    }


class MpiRecords:
    """The statements the MPI feed needs, bound to one cursor and transaction."""

    def __init__(self, cursor: Any, statements: Statements) -> None:
        self.cursor = cursor
        self.statements = statements

    def _run(self, name: str, build: Any, values: dict[str, Any]) -> Any:
        return self.statements.get(name, build).run(self.cursor, values)

    # -- identifiers ----------------------------------------------------------------------------

    def owner(self, value: str, authority: str) -> tuple[int, int] | None:
        """(identifier id, patient id) of an identifier, or None."""
        found = self.owner_and_origin(value, authority)
        return (found[0], found[1]) if found else None

    def owner_and_origin(self, value: str, authority: str) -> tuple[int, int, int | None] | None:
        """(identifier id, patient id, the patient a merge moved it from) or None."""
        row = self._run(
            "mpi_owner",
            lambda: (
                select(
                    _identifiers.c.id, _identifiers.c.patient_id, _identifiers.c.merged_from
                ).where(
                    _identifiers.c.value == bindparam("value"),
                    _identifiers.c.authority == bindparam("authority"),
                ),
                ["value", "authority"],
            ),
            {"value": value, "authority": authority},
        ).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def add_identifiers_of(self, patient_id: int, found: Iterable[Identifier]) -> None:
        """Give ``patient_id`` these identifiers (read from a message), in one statement."""
        self.add_identifiers(
            [
                {
                    "patient_id": patient_id,
                    "value": identifier.value,
                    "authority": identifier.authority,
                    "type_code": identifier.type_code,
                    "merged_from": None,
                }
                for identifier in found
            ]
        )

    def add_identifiers(
        self, rows: list[dict[str, Any]], same: dict[str, Any] | None = None
    ) -> None:
        """Insert identifiers: patient_id, value, authority, type_code, merged_from."""
        name, keyed = _variant("mpi_add_identifier")
        if keyed:
            rows = [dict(row, value_sealed=row["value"]) for row in rows]
        self.statements.get(
            name,
            lambda: (
                insert(_identifiers),
                ["patient_id", "value", "authority", "type_code", "merged_from"]
                + (["value_sealed"] if keyed else []),
            ),
        ).run_many(self.cursor, rows, same)

    def change_identifier(self, identifier_id: int, value: str, authority: str) -> None:
        # The encrypted copy is set NULL in a clear store (its type), never left stale.
        self._run(
            "mpi_change_identifier",
            lambda: (
                update(_identifiers)
                .where(_identifiers.c.id == bindparam("identifier_id"))
                .values(
                    value=bindparam("value"),
                    authority=bindparam("authority"),
                    value_sealed=bindparam("sealed", type_=_identifiers.c.value_sealed.type),
                ),
                ["identifier_id", "value", "authority", "sealed"],
            ),
            {
                "identifier_id": identifier_id,
                "value": value,
                "authority": authority,
                "sealed": value,
            },
        )

    def move_identifiers(self, source: int, target: int) -> None:
        """Every identifier of ``source`` now belongs to ``target`` (remembering where from)."""
        self._run(
            "mpi_move_identifiers",
            lambda: (
                update(_identifiers)
                .where(_identifiers.c.patient_id == bindparam("source"))
                .values(patient_id=bindparam("target"), merged_from=bindparam("source_again")),
                ["source", "target", "source_again"],
            ),
            {"source": source, "target": target, "source_again": source},
        )

    def move_back(self, source: int, target: int) -> int:
        """Identifiers that came to ``target`` from ``source`` by a merge go back (A37)."""
        cursor = self._run(
            "mpi_move_back",
            lambda: (
                update(_identifiers)
                .where(
                    and_(
                        _identifiers.c.patient_id == bindparam("target"),
                        _identifiers.c.merged_from == bindparam("source"),
                    )
                )
                .values(patient_id=bindparam("source_again"), merged_from=None),
                ["target", "source", "source_again"],
            ),
            {"target": target, "source": source, "source_again": source},
        )
        return cursor.rowcount or 0

    def known_identifiers(self, values: list[str]) -> set[tuple[str, str]]:
        """Which of ``values`` the MPI has, as (value, authority) pairs (bulk loads)."""
        found: set[tuple[str, str]] = set()
        stored = {crypto.lookup(value, "identifier"): value for value in values}
        keys = list(stored)
        for start in range(0, len(keys), 900):
            where, params = self.statements.where_in("value", keys[start : start + 900])
            self.cursor.execute(
                f"SELECT value, authority FROM patient_identifiers WHERE {where}", params
            )
            found.update((stored[value], authority) for value, authority in self.cursor.fetchall())
        return found

    # -- patients -------------------------------------------------------------------------------

    def patient(self, patient_id: int) -> PatientRow:
        row = self._run(
            "mpi_patient",
            lambda: (
                select(
                    _patients.c.id,
                    _patients.c.merged_into,
                    _patients.c.event_time,
                    _patients.c.last_message_id,
                    *(_patients.c[name] for name in DEMOGRAPHIC_COLUMNS),
                ).where(_patients.c.id == bindparam("patient_id")),
                ["patient_id"],
            ),
            {"patient_id": patient_id},
        ).fetchone()
        return PatientRow(row[0], row[1], row[2], row[3], _revealed(DEMOGRAPHIC_COLUMNS, row[4:]))

    def survivor(self, patient_id: int) -> int:
        """Follow merges to the patient that survives them."""
        seen = {patient_id}
        current = self.patient(patient_id)
        while current.merged_into is not None and current.merged_into not in seen:
            seen.add(current.merged_into)
            current = self.patient(current.merged_into)
        return current.id

    def add_patient(self, columns: dict[str, str], event_time: str, message_id: int | None) -> int:
        now = datetime.now(UTC)
        values = dict(
            columns,
            merged_into=None,
            event_time=event_time,
            last_message_id=message_id,
            created_at=now,
            updated_at=now,
        )
        name, keyed = _variant("mpi_add_patient")
        if keyed:
            values.update(_search_keys(columns))
        return self._run(
            name,
            lambda: (
                insert(_patients).returning(_patients.c.id),
                [
                    *DEMOGRAPHIC_COLUMNS,
                    "merged_into",
                    "event_time",
                    "last_message_id",
                    "created_at",
                    "updated_at",
                    *(SEARCH_KEYS if keyed else ()),
                ],
            ),
            values,
        ).fetchone()[0]

    def allocate_patient_ids(self, count: int) -> list[int]:
        """``count`` new patient ids, for inserting patients in bulk (see :meth:`add_patients`)."""
        if self.statements.engine.dialect.name == "sqlite":
            # Safe: the transaction holds SQLite's write lock (BEGIN IMMEDIATE).
            self.cursor.execute("SELECT COALESCE(MAX(id), 0) FROM patients")
            (top,) = self.cursor.fetchone()
            return list(range(top + 1, top + 1 + count))
        self.cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('patients', 'id')) FROM generate_series(1, %s)",
            (count,),
        )
        return [row[0] for row in self.cursor.fetchall()]

    def add_patients(self, rows: list[dict[str, Any]], event_time: str) -> None:
        """Insert patients with ids from :meth:`allocate_patient_ids` (``id`` + demographics)."""
        now = datetime.now(UTC)
        name, keyed = _variant("mpi_add_patients")
        if keyed:
            rows = [dict(row, **_search_keys(row)) for row in rows]
        self.statements.get(
            name,
            lambda: (
                insert(_patients),
                [
                    "id",
                    *DEMOGRAPHIC_COLUMNS,
                    "merged_into",
                    "event_time",
                    "last_message_id",
                    "created_at",
                    "updated_at",
                    *(SEARCH_KEYS if keyed else ()),
                ],
            ),
        ).run_many(
            self.cursor,
            rows,
            same={
                "merged_into": None,
                "event_time": event_time,
                "last_message_id": None,
                "created_at": now,
                "updated_at": now,
            },
        )

    def set_demographics(
        self, patient_id: int, columns: dict[str, str], event_time: str, message_id: int | None
    ) -> None:
        values = dict(
            columns,
            **_search_keys(columns),
            patient_id=patient_id,
            event_time=event_time,
            last_message_id=message_id,
            updated_at=datetime.now(UTC),
        )
        # The search hashes are set NULL in a clear store (their type), never left stale.
        self._run(
            "mpi_set_demographics",
            lambda: (
                update(_patients)
                .where(_patients.c.id == bindparam("patient_id"))
                .values(
                    **{name: bindparam(name) for name in DEMOGRAPHIC_COLUMNS},
                    **{name: bindparam(name, type_=_patients.c[name].type) for name in SEARCH_KEYS},
                    event_time=bindparam("event_time"),
                    last_message_id=bindparam("last_message_id"),
                    updated_at=bindparam("updated_at", type_=_patients.c.updated_at.type),
                ),
                [
                    "patient_id",
                    *DEMOGRAPHIC_COLUMNS,
                    *SEARCH_KEYS,
                    "event_time",
                    "last_message_id",
                    "updated_at",
                ],
            ),
            values,
        )

    def set_merged(self, patient_id: int, into: int | None) -> None:
        self._run(
            "mpi_set_merged",
            lambda: (
                update(_patients)
                .where(_patients.c.id == bindparam("patient_id"))
                .values(
                    merged_into=bindparam("into"),
                    updated_at=bindparam("updated_at", type_=_patients.c.updated_at.type),
                ),
                ["patient_id", "into", "updated_at"],
            ),
            {"patient_id": patient_id, "into": into, "updated_at": datetime.now(UTC)},
        )

    # -- names, events, orders ------------------------------------------------------------------

    def other_names(self, patient_id: int) -> set[tuple[str, str, str, str]]:
        rows = self._run(
            "mpi_names",
            lambda: (
                select(
                    _names.c.kind, _names.c.family_name, _names.c.given_name, _names.c.middle_name
                ).where(_names.c.patient_id == bindparam("patient_id")),
                ["patient_id"],
            ),
            {"patient_id": patient_id},
        ).fetchall()
        names = ("family_name", "given_name", "middle_name")
        return {(row[0], *_revealed(names, row[1:]).values()) for row in rows}

    def add_name(self, patient_id: int, kind: str, family: str, given: str, middle: str) -> None:
        name, keyed = _variant("mpi_add_name")
        self._run(
            name,
            lambda: (
                insert(_names),
                ["patient_id", "kind", "family_name", "given_name", "middle_name", "recorded_at"]
                + (["family_key"] if keyed else []),
            ),
            {
                "patient_id": patient_id,
                "kind": kind,
                "family_name": family,
                "given_name": given,
                "middle_name": middle,
                "recorded_at": datetime.now(UTC),
                **({"family_key": family_prefix(family)} if keyed else {}),
            },
        )

    def add_event(
        self,
        patient_id: int | None,
        kind: str,
        event_time: str,
        message_id: int | None,
        detail: str,
        command: str = "",
    ) -> None:
        self.add_events([event(patient_id, kind, event_time, message_id, detail, command)])

    def add_events(self, rows: list[dict[str, Any]], same: dict[str, Any] | None = None) -> None:
        """Insert events built by :func:`event` (or partly, with the rest ``same`` for all)."""
        self.statements.get(
            "mpi_add_event",
            lambda: (
                insert(_events),
                [
                    "patient_id",
                    "kind",
                    "event_time",
                    "message_id",
                    "command",
                    "detail",
                    "recorded_at",
                ],
            ),
        ).run_many(self.cursor, rows, same)

    def order_by_accession(self, accession: str) -> int | None:
        row = self._run(
            "mpi_order",
            lambda: (
                select(_orders.c.id).where(_orders.c.accession == bindparam("accession")),
                ["accession"],
            ),
            {"accession": accession},
        ).fetchone()
        return row[0] if row else None

    def save_order(self, order_id: int | None, values: dict[str, Any]) -> None:
        values = dict(values, recorded_at=datetime.now(UTC))
        keys = [
            "patient_id",
            "accession",
            "placer_number",
            "filler_number",
            "procedure_code",
            "order_control",
            "event_time",
            "message_id",
            "recorded_at",
        ]
        if order_id is None:
            self._run("mpi_add_order", lambda: (insert(_orders), keys), values)
            return
        self._run(
            "mpi_update_order",
            lambda: (
                update(_orders)
                .where(_orders.c.id == bindparam("order_id"))
                .values(
                    **{k: bindparam(k) for k in keys if k != "recorded_at"},
                    recorded_at=bindparam("recorded_at", type_=_orders.c.recorded_at.type),
                ),
                ["order_id", *keys],
            ),
            dict(values, order_id=order_id),
        )
