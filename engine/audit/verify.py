"""Checking the audit trail's chain: every row's hash, every link, no id missing.

Rows are read in id order. For each, its content must give its hash, its ``previous_hash`` must
be the hash of the row before (:data:`~engine.audit.trail.GENESIS` for row 1), and its id must
follow that row's. What breaks is named by row id:

- **changed**: a row's content no longer gives its hash (edited in place); or a row's hash was
  recomputed after an edit, so the next row's link no longer points at it;
- **removed**: ids are missing (the rows after a removed one still link to it);
- **inserted**: a row links to its predecessor but does not follow it in id, or the next row
  links past it to the row before.

A keyless chain cannot, by itself, tell rows cut off its end, or a forger who rewrites every
later row too: the hash of the last row (``verify`` prints it; every syslog message carries it)
kept elsewhere does — ``verify --anchor ID:HASH`` checks it is still there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Connection, select

from engine.audit.tables import AuditEvent
from engine.audit.trail import GENESIS, digest
from engine.store.schema import table_of

_events = table_of(AuditEvent)


class Problem:
    """Kinds of :class:`Finding`."""

    CHANGED = "changed"
    REMOVED = "removed"
    INSERTED = "inserted"


@dataclass(frozen=True, slots=True)
class Finding:
    row: int
    """The row named (for removed rows: the first id missing)."""
    kind: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class Verification:
    rows: int = 0
    last_id: int = 0
    last_hash: str = GENESIS
    findings: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.findings


@dataclass(frozen=True, slots=True)
class _Seen:
    id: int
    hash: str


def _rows(connection: Connection, batch: int) -> Iterator[dict[str, object]]:
    streamed = connection.execution_options(stream_results=True, yield_per=batch)
    for row in streamed.execute(select(_events).order_by(_events.c.id)).mappings():
        yield dict(row)


def verify(
    connection: Connection, *, anchor: tuple[int, str] | None = None, batch: int = 1000
) -> Verification:
    """Walk the whole chain; every problem found, in row order."""
    result = Verification()
    found = result.findings
    before: _Seen | None = None  # the row before this one
    earlier: _Seen | None = None  # the row before that
    anchored: str | None = None
    for values in _rows(connection, batch):
        row_id = int(values["id"])  # type: ignore[call-overload]
        row_hash = str(values["hash"])
        link = str(values["previous_hash"])
        result.rows += 1
        if anchor is not None and row_id == anchor[0]:
            anchored = row_hash
        own = digest(values) == row_hash
        expected_id = before.id + 1 if before else 1
        expected_link = before.hash if before else GENESIS
        if row_id != expected_id and link == expected_link and before is not None:
            found.append(
                Finding(
                    row_id,
                    Problem.INSERTED,
                    f"row {row_id}: inserted: it links to row {before.id} but does not follow it",
                )
            )
        elif row_id != expected_id:
            last_missing = row_id - 1
            span = (
                f"row {expected_id}"
                if last_missing == expected_id
                else f"rows {expected_id}-{last_missing}"
            )
            found.append(
                Finding(
                    expected_id,
                    Problem.REMOVED,
                    f"{span}: removed (missing before row {row_id})",
                )
            )
            if not own:
                found.append(_changed(values))
        elif link != expected_link:
            past = (earlier.hash if earlier else GENESIS) if before is not None else None
            if before is not None and link == past:
                found.append(
                    Finding(
                        before.id,
                        Problem.INSERTED,
                        f"row {before.id}: inserted: row {row_id} links past it to"
                        f" {'row ' + str(earlier.id) if earlier else 'the start'}",
                    )
                )
                if not own:
                    found.append(_changed(values))
            elif own and before is not None:
                found.append(
                    Finding(
                        before.id,
                        Problem.CHANGED,
                        f"row {before.id}: changed: its hash is not the one row {row_id}"
                        " recorded (edited, and its hash recomputed)",
                    )
                )
            elif not own and _renumbered(values) == row_id + 1:
                found.append(
                    Finding(
                        row_id,
                        Problem.REMOVED,
                        f"row {row_id}: removed, and the later rows renumbered to close the gap"
                        f" (row {row_id} now holds row {row_id + 1}'s content)",
                    )
                )
            else:
                found.append(
                    Finding(
                        row_id,
                        Problem.CHANGED,
                        f"row {row_id}: changed or inserted: neither its hash nor its link to"
                        f" {'row ' + str(before.id) if before else 'the start'} holds",
                    )
                )
        elif not own:
            found.append(_changed(values))
        earlier, before = before, _Seen(row_id, row_hash)
    if before is not None:
        result.last_id, result.last_hash = before.id, before.hash
        last = [f for f in found if f.row == before.id and f.kind == Problem.CHANGED]
        for finding in last:  # the last row may as well have been appended by someone else
            if finding.text.endswith("does not give its hash"):
                found[found.index(finding)] = Finding(
                    finding.row, finding.kind, finding.text + " (or appended behind the engine)"
                )
    if anchor is not None:
        anchor_id, anchor_hash = anchor
        if anchored is None:
            found.append(
                Finding(
                    anchor_id,
                    Problem.REMOVED,
                    f"row {anchor_id}: removed: the anchor given is no longer in the trail",
                )
            )
        elif anchored != anchor_hash:
            found.append(
                Finding(
                    anchor_id,
                    Problem.CHANGED,
                    f"row {anchor_id}: changed: its hash is not the anchor's",
                )
            )
    found.sort(key=lambda f: f.row)
    return result


def _renumbered(values: dict[str, object]) -> int | None:
    """The id a row's content was hashed under, when it is its neighbour's: the rows were
    moved up to make room for an inserted one, or down to close the gap of a removed one."""
    row_id = int(values["id"])  # type: ignore[call-overload]
    for other in (row_id - 1, row_id + 1):
        if digest(values | {"id": other}) == values["hash"]:
            return other
    return None


def _changed(values: dict[str, object]) -> Finding:
    """A row whose content does not give its hash."""
    row_id = int(values["id"])  # type: ignore[call-overload]
    other = _renumbered(values)
    if other is not None:
        return Finding(
            row_id, Problem.CHANGED, f"row {row_id}: renumbered: its content was row {other}'s"
        )
    return Finding(
        row_id, Problem.CHANGED, f"row {row_id}: changed: its content does not give its hash"
    )
