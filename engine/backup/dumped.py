"""What a PostgreSQL dump holds, read from the dump itself (no server needed): the same
description as an SQLite backup's (:mod:`engine.backup.contents`).

``pg_restore --data-only --file=-`` writes every table's rows as ``COPY … FROM stdin`` text;
this reads that stream once, counting the rows of each table and looking at the few columns of
``messages`` and ``deliveries`` the description needs. Reading every row to the end is also the
check that the dump is whole: a truncated or damaged dump makes ``pg_restore`` fail.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from engine.backup.contents import COUNTED, Contents, ListenerPoint
from engine.backup.postgres import program

_COPY = re.compile(r'^COPY (?:"?\w+"?\.)?"?(\w+)"? \((.*)\) FROM stdin;$')
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "b": "\b", "f": "\f", "v": "\v"}


def _unescape(field: str) -> str | None:
    """A COPY text field as its value (``\\N`` is NULL)."""
    if field == "\\N":
        return None
    if "\\" not in field:
        return field
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), field)


def _moment(stamp: str | None) -> datetime | None:
    """A dumped ``timestamptz`` (in the dump session's zone) as an aware datetime."""
    try:
        moment = datetime.fromisoformat(stamp or "")
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _shown(moment: datetime | None) -> str:
    """A time as an SQLite backup shows it (UTC, no zone)."""
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _tables(lines: Iterable[str]) -> Iterator[tuple[str, list[str], Iterator[list[str]]]]:
    """Each table's name, columns and rows (split, still escaped) in the COPY stream."""
    stream = iter(lines)
    for line in stream:
        header = _COPY.match(line.rstrip("\n"))
        if header is None:
            continue
        columns = [c.strip().strip('"') for c in header.group(2).split(",")]

        def rows() -> Iterator[list[str]]:
            for row in stream:
                row = row.rstrip("\n")
                if row == "\\.":
                    return
                yield row.split("\t")

        yield header.group(1), columns, rows()


def describe(lines: Iterable[str]) -> Contents:
    """The contents of a dump from its ``COPY`` text."""
    contents = Contents(integrity="ok", migration="")
    counts: dict[str, int] = {}
    newest: dict[str, tuple[int, str, str]] = {}  # listener -> (id, received_at, control_id)
    latest: datetime | None = None
    for table, columns, rows in _tables(lines):
        n = 0
        if table == "messages":
            at = {name: columns.index(name) for name in columns}
            statuses: Counter[str] = Counter()
            for row in rows:
                n += 1
                message_id = int(row[at["id"]])
                listener = _unescape(row[at["listener"]]) or ""
                statuses[_unescape(row[at["status"]]) or ""] += 1
                received = _moment(_unescape(row[at["received_at"]]))
                if received is not None and (latest is None or received > latest):
                    latest = received
                if message_id > newest.get(listener, (0, "", ""))[0]:
                    control = _unescape(row[at["control_id"]]) or ""
                    newest[listener] = (message_id, _shown(received), control)
            contents.by_status = dict(statuses)
        elif table == "deliveries":
            state = columns.index("state")
            for row in rows:
                n += 1
                contents.queued += row[state] == "queued"
        elif table == "alembic_version":
            for row in rows:
                n += 1
                contents.migration = _unescape(row[0]) or ""
        else:
            n = sum(1 for _ in rows)
        if table in COUNTED:
            counts[table] = n
    contents.counts = {table: counts[table] for table in COUNTED if table in counts}
    contents.points = [ListenerPoint(name, *newest[name]) for name in sorted(newest)]
    contents.last_message_id = max((point[0] for point in newest.values()), default=0)
    contents.newest_message = _shown(latest)
    return contents


def read_dump_contents(path: Path) -> Contents:
    """Read every row of the dump at ``path`` and describe it (``pg_restore`` must be on the
    PATH); a dump ``pg_restore`` cannot read whole is reported in ``integrity``."""
    process = subprocess.Popen(
        [program("pg_restore"), "--data-only", "--file=-", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        contents = describe(process.stdout)
        for _ in process.stdout:  # the rest, so that pg_restore finishes
            pass
    finally:
        errors = process.stderr.read()
        code = process.wait()
    if code != 0:
        reason = (errors.strip().splitlines() or [f"exit code {code}"])[-1]
        return Contents(integrity=f"pg_restore cannot read it whole: {reason}", migration="")
    return contents
