"""Statements compiled once per dialect and run on the bare DBAPI cursor.

The writer runs a handful of statements per message; SQLAlchemy's per-execute bookkeeping costs
several times what SQLite itself needs for them (measured: ~67 µs against ~16 µs for a SELECT and
an INSERT). So the hot path compiles each statement once and binds parameters with SQLAlchemy's
own type processors, which keeps the stored values identical to what the ORM writes and reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Engine, bindparam

_NO_CONSTANT = object()


class CompiledStatement:
    """One statement: its SQL text for the dialect and how to turn values into parameters."""

    def __init__(self, statement: Any, engine: Engine, keys: list[str]) -> None:
        compiled = statement.compile(dialect=engine.dialect, column_keys=keys)
        self.sql = compiled.string
        self.positions = list(compiled.positiontup or [])
        self.processors: dict[str, Callable[[Any], Any]] = {}
        self.constants: dict[str, Any] = {}
        for name, parameter in compiled.binds.items():
            processor = parameter.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
            if processor is not None:
                self.processors[name] = processor
            if name not in keys:  # a literal of the statement (LIMIT 1, a fixed value, None)
                self.constants[name] = parameter.effective_value
        # For positional drivers (SQLite): per position, a constant or (key, processor).
        self._plan = [
            (name, self.processors.get(name), self.constants.get(name, _NO_CONSTANT))
            for name in self.positions
        ]

    def params(self, values: dict[str, Any]) -> Any:
        if self.positions:
            return _positional(self._plan, values)
        processed = dict(self.constants)
        processed.update(values)
        for key, processor in self.processors.items():
            if key in values:
                processed[key] = processor(values[key])
        return processed

    def run(self, cursor: Any, values: dict[str, Any]) -> Any:
        cursor.execute(self.sql, self.params(values))
        return cursor

    def insert_many(self, cursor: Any, rows: list[dict[str, Any]]) -> list[Any]:
        """Execute once per row; each row's first RETURNING value, in order. One pipelined
        round trip on PostgreSQL (psycopg's ``executemany(returning=True)``), a statement per
        row on SQLite, whose driver cannot return rows from ``executemany``."""
        if self.positions or len(rows) < 2:  # psycopg's pipeline costs a round trip of its own
            return [self.run(cursor, row).fetchone()[0] for row in rows]
        cursor.executemany(self.sql, [self.params(row) for row in rows], returning=True)
        values = []
        while True:
            values.append(cursor.fetchone()[0])
            if not cursor.nextset():
                return values

    def run_many(
        self, cursor: Any, rows: list[dict[str, Any]], same: dict[str, Any] | None = None
    ) -> None:
        """Execute once per row (the DBAPI's executemany: bulk loads).

        ``same`` holds the values every row shares (a timestamp): processed once, not per row.
        """
        if not rows:
            return
        if len(rows) == 1 and not same:
            self.run(cursor, rows[0])
            return
        fixed = {
            key: self.processors[key](value) if key in self.processors else value
            for key, value in (same or {}).items()
        }
        if self.positions:
            plan = [
                (name, None, fixed[name]) if name in fixed else (name, processor, constant)
                for name, processor, constant in self._plan
            ]
            cursor.executemany(self.sql, [_positional(plan, values) for values in rows])
            return
        params = []
        for values in rows:
            processed = self.params(values)
            processed.update(fixed)
            params.append(processed)
        cursor.executemany(self.sql, params)


def _positional(plan: list[tuple[str, Any, Any]], values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        [
            (processor(values[name]) if processor else values[name])
            if constant is _NO_CONSTANT
            else constant
            for name, processor, constant in plan
        ]
    )


def chunks(values: list[Any], size: int = 5000) -> Iterator[list[Any]]:
    """``values`` in slices of ``size``: one ``IN`` query each, a bounded statement."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def in_values(column: Any, values: list[Any]) -> Any:
    """``column IN (values)`` with the values written into the SQL text.

    A list of bound parameters of the same length repeats the same SQL text, which PostgreSQL's
    driver prepares after five runs; the generic plan of ``IN ($1 … $5000)`` then scans the
    whole table. Literal values (escaped by SQLAlchemy) get a plan for the values at hand.
    """
    return column.in_(bindparam("values", list(values), expanding=True, literal_execute=True))


class Statements:
    """The compiled statements of one engine, built on first use."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._compiled: dict[str, CompiledStatement] = {}

    def where_in(self, column: str, values: list[Any]) -> tuple[str, list[Any]]:
        """``column IN values`` for a statement run on the DBAPI cursor: (SQL, parameters).

        PostgreSQL gets one array parameter (``= ANY(%s)``): its driver prepares repeated
        statements, and a generic plan of ``IN ($1 … $900)`` scans the whole table.
        """
        if self.engine.dialect.paramstyle == "qmark":
            return f"{column} IN ({', '.join(['?'] * len(values))})", list(values)
        return f"{column} = ANY(%s)", [list(values)]

    def get(self, name: str, build: Callable[[], tuple[Any, list[str]]]) -> CompiledStatement:
        """The statement called ``name``; ``build`` returns (statement, parameter keys)."""
        found = self._compiled.get(name)
        if found is None:
            statement, keys = build()
            found = CompiledStatement(statement, self.engine, keys)
            self._compiled[name] = found
        return found
