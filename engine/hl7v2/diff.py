"""Field-level differences between two versions of a message, for ``crosswalk routes test``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from engine.hl7v2.header import Delimiters
from engine.hl7v2.message import Message


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: a segment added or removed, or a value changed at a path."""

    path: str
    before: str | None
    after: str | None

    def __str__(self) -> str:
        if self.before is None and self.after is None:
            return self.path
        if self.before is None:
            return f"{self.path}: (none) → `{self.after}`"
        if self.after is None:
            return f"{self.path}: `{self.before}` → (removed)"
        return f"{self.path}: `{self.before}` → `{self.after}`"


def _labelled(message: Message) -> dict[str, list[str]]:
    """Segment label (``OBX[2]`` when repeated) → its fields as written."""
    totals = Counter(s.id for s in message.segments)
    seen: Counter[str] = Counter()
    labelled: dict[str, list[str]] = {}
    for segment in message.segments:
        seen[segment.id] += 1
        label = f"{segment.id}[{seen[segment.id]}]" if totals[segment.id] > 1 else segment.id
        labelled[label] = segment.fields
    return labelled


def field_changes(before: str, after: str) -> list[Change]:
    """What changed from ``before`` to ``after`` (message texts), in message order.

    A segment that appears or disappears is reported once; a repetition added or removed is
    reported whole; otherwise the components that differ.
    """
    old_message, new_message = Message.parse(before), Message.parse(after)
    old, new = _labelled(old_message), _labelled(new_message)
    d = new_message.delimiters
    changes = [Change(f"segment {label} removed", None, None) for label in old if label not in new]
    changes += [Change(f"segment {label} added", None, None) for label in new if label not in old]
    for label, new_fields in new.items():
        old_fields = old.get(label)
        if old_fields is None:
            continue
        for position in range(1, max(len(old_fields), len(new_fields))):
            a = old_fields[position] if position < len(old_fields) else ""
            b = new_fields[position] if position < len(new_fields) else ""
            if a != b:
                changes.extend(_field_changes(f"{label}-{position}", a, b, d))
    return changes


def _field_changes(path: str, before: str, after: str, d: Delimiters) -> list[Change]:
    old_reps, new_reps = before.split(d.repetition), after.split(d.repetition)
    if len(old_reps) != len(new_reps):
        changes = []
        for index in range(max(len(old_reps), len(new_reps))):
            a = old_reps[index] if index < len(old_reps) else None
            b = new_reps[index] if index < len(new_reps) else None
            if a != b:
                changes.append(Change(f"{path}[{index + 1}]", a or None, b or None))
        return changes
    changes = []
    for index, (a, b) in enumerate(zip(old_reps, new_reps, strict=True)):
        if a == b:
            continue
        where = f"{path}[{index + 1}]" if len(old_reps) > 1 else path
        old_parts, new_parts = a.split(d.component), b.split(d.component)
        if len(old_parts) == 1 and len(new_parts) == 1:
            changes.append(Change(where, a or None, b or None))
            continue
        for number in range(max(len(old_parts), len(new_parts))):
            x = old_parts[number] if number < len(old_parts) else ""
            y = new_parts[number] if number < len(new_parts) else ""
            if x != y:
                changes.append(Change(f"{where}.{number + 1}", x or None, y or None))
    return changes
