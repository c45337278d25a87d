"""A lazy, editable HL7 v2 message: what routes read and transform.

A message is split into segments once; a segment is split into fields only when a route looks at
it, and fields into repetitions and components only along the path asked for. Untouched segments
are written back exactly as received. Every value written is escaped, so a value never splits a
field; copying keeps structure (``set_raw``).

python-hl7 parses the whole message up front (~0.7 ms for a 1.5 KB ADT) and does not escape on
assignment; it remains the reference the tests compare this model against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from engine.errors import CrosswalkError
from engine.hl7v2.escaping import escape, unescape
from engine.hl7v2.fieldpath import ALL, FieldPath
from engine.hl7v2.header import Delimiters, read_delimiters, strip_preamble

_SEGMENT_BREAK = re.compile(r"\r\n|\r|\n")


class MessageError(CrosswalkError, ValueError):
    """An operation the message cannot support (missing segment, writing a delimiter field)."""


class Segment:
    """One segment; its fields are split on first use. ``fields[n]`` is field n (raw text).

    Until something is written to it, a segment is written back exactly as received.
    """

    __slots__ = ("_delimiters", "_dirty", "_fields", "_text", "id")

    def __init__(self, text: str, delimiters: Delimiters) -> None:
        self._text = text
        self._fields: list[str] | None = None
        self._dirty = False
        self._delimiters = delimiters
        self.id = text[:3]

    @property
    def fields(self) -> list[str]:
        if self._fields is None:
            parts = self._text.split(self._delimiters.field)
            if self.id == "MSH":
                parts = ["MSH", self._delimiters.field, *parts[1:]]
            self._fields = parts
        return self._fields

    def field(self, position: int) -> str:
        fields = self.fields
        return fields[position] if position < len(fields) else ""

    def set_field(self, position: int, raw: str) -> None:
        fields = self.fields
        if position >= len(fields):
            fields.extend([""] * (position + 1 - len(fields)))
        fields[position] = raw
        self._dirty = True

    def rename(self, segment_id: str) -> None:
        self.fields[0] = segment_id
        self.id = segment_id
        self._dirty = True

    def copy(self) -> Segment:
        """An independent copy (an untouched segment shares its text: strings are immutable)."""
        return Segment(str(self), self._delimiters)

    def __str__(self) -> str:
        if not self._dirty:
            return self._text
        fields = self.fields
        if self.id == "MSH":
            return "MSH" + fields[1] + fields[1].join(fields[2:])
        return self._delimiters.field.join(fields).rstrip(self._delimiters.field) or self.id


class Message:
    """An HL7 v2 message as segments; read and written by :class:`FieldPath`."""

    __slots__ = ("_index", "_segments", "_type", "delimiters")

    def __init__(self, segments: list[Segment], delimiters: Delimiters) -> None:
        self._segments = segments
        self.delimiters = delimiters
        self._index: dict[str, list[Segment]] | None = None
        self._type: tuple[str, str, str] | None = None

    @property
    def segments(self) -> list[Segment]:
        return self._segments

    @segments.setter
    def segments(self, segments: list[Segment]) -> None:
        self._segments = segments
        self._changed()

    def _changed(self) -> None:
        self._index = None
        self._type = None

    @classmethod
    def parse(cls, text: str) -> Message:
        """Split a message (CR, LF or CRLF segment ends; empty lines dropped)."""
        text = text.lstrip("\ufeff\r\n\t ")
        delimiters = read_delimiters(strip_preamble(text[:16].encode("latin-1", "replace")))
        segments = [
            Segment(line, delimiters) for line in _SEGMENT_BREAK.split(text) if line.strip()
        ]
        return cls(segments, delimiters)

    def to_text(self) -> str:
        """The message with CR segment ends (and a final CR)."""
        return "\r".join(str(segment) for segment in self.segments) + "\r"

    def copy(self) -> Message:
        """An independent copy, for a route or a destination to change."""
        return Message([segment.copy() for segment in self._segments], self.delimiters)

    def type_parts(self) -> tuple[str, str, str]:
        """MSH-9's code, trigger event and structure (read once)."""
        if self._type is None:
            value = self.value(FieldPath("MSH", 9))
            first = value.split(self.delimiters.repetition, 1)[0]
            parts = first.split(self.delimiters.component)
            parts += [""] * (3 - len(parts))
            self._type = (parts[0], parts[1], parts[2])
        return self._type

    # -- reading --------------------------------------------------------------------------------

    def segments_named(self, segment_id: str) -> list[Segment]:
        if self._index is None:
            index: dict[str, list[Segment]] = {}
            for segment in self._segments:
                index.setdefault(segment.id, []).append(segment)
            self._index = index
        return self._index.get(segment_id, [])

    def _targets(self, path: FieldPath) -> list[Segment]:
        found = self.segments_named(path.segment)
        if path.occurrence == ALL:
            return found
        index = (path.occurrence or 1) - 1
        return [found[index]] if index < len(found) else []

    def values(self, path: FieldPath) -> list[str]:
        """Every value ``path`` addresses (several with ``[*]``), in message order.

        A value that still holds delimiters of a lower level (a whole field with components) is
        returned as written; a leaf value has its escape sequences resolved.
        """
        d = self.delimiters
        found: list[str] = []
        for segment in self._targets(path):
            raw = segment.field(path.field)
            if segment.id == "MSH" and path.field <= 2:
                found.append(raw)
                continue
            if path.repetition is None and path.component is None:
                found.append(self._leaf(raw, level=0))
                continue
            repetitions = raw.split(d.repetition)
            if path.repetition == ALL:
                chosen = repetitions
            else:
                index = (path.repetition or 1) - 1
                chosen = [repetitions[index] if index < len(repetitions) else ""]
            for repetition in chosen:
                found.append(self._part(repetition, path))
        return found

    def value(self, path: FieldPath) -> str:
        """The first value ``path`` addresses, or '' when there is none."""
        found = self.values(path)
        return found[0] if found else ""

    def has_segment(self, segment_id: str) -> bool:
        return bool(self.segments_named(segment_id))

    def _part(self, repetition: str, path: FieldPath) -> str:
        d = self.delimiters
        if path.component is None:
            return self._leaf(repetition, level=1)
        components = repetition.split(d.component)
        component = components[path.component - 1] if path.component <= len(components) else ""
        if path.subcomponent is None:
            return self._leaf(component, level=2)
        subcomponents = component.split(d.subcomponent)
        index = path.subcomponent - 1
        return unescape(subcomponents[index] if index < len(subcomponents) else "", d)

    def _leaf(self, raw: str, level: int) -> str:
        d = self.delimiters
        structure = (d.repetition, d.component, d.subcomponent)[level:]
        if any(ch in raw for ch in structure):
            return raw
        return unescape(raw, d)

    # -- writing --------------------------------------------------------------------------------

    def set(self, path: FieldPath, value: str) -> int:
        """Write ``value`` (escaped) where ``path`` points; returns how many places."""
        return self.set_raw(path, escape(value, self.delimiters))

    def set_raw(self, path: FieldPath, raw: str) -> int:
        """Write ``raw`` as is (keeping its delimiters): for copying structure."""
        if path.segment == "MSH" and path.field <= 2:
            raise MessageError(f"{path} holds the message's delimiters and cannot be changed")
        targets = self._targets(path)
        if not targets:
            raise MessageError(f"the message has no {_which(path)} segment")
        if path.segment == "MSH":
            self._type = None
        for segment in targets:
            segment.set_field(path.field, self._replace(segment.field(path.field), path, raw))
        return len(targets)

    def clear(self, path: FieldPath) -> int:
        """Empty a field or component; remove a repetition named by its index."""
        targets = self._targets(path)
        d = self.delimiters
        for segment in targets:
            current = segment.field(path.field)
            if path.repetition not in (None, ALL) and path.component is None:
                repetitions = current.split(d.repetition)
                index = path.repetition - 1
                if index < len(repetitions):
                    del repetitions[index]
                segment.set_field(path.field, d.repetition.join(repetitions))
            else:
                segment.set_field(path.field, self._replace(current, path, ""))
        return len(targets)

    def _replace(self, field_raw: str, path: FieldPath, raw: str) -> str:
        d = self.delimiters
        if path.repetition is None and path.component is None:
            return raw
        repetitions = field_raw.split(d.repetition)
        if path.repetition == ALL:
            indexes = list(range(len(repetitions)))
        else:
            index = (path.repetition or 1) - 1
            if index >= len(repetitions):
                repetitions.extend([""] * (index + 1 - len(repetitions)))
            indexes = [index]
        for index in indexes:
            repetitions[index] = self._replace_in_repetition(repetitions[index], path, raw)
        return d.repetition.join(repetitions)

    def _replace_in_repetition(self, repetition: str, path: FieldPath, raw: str) -> str:
        d = self.delimiters
        if path.component is None:
            return raw
        components = repetition.split(d.component)
        index = path.component - 1
        if index >= len(components):
            components.extend([""] * (index + 1 - len(components)))
        if path.subcomponent is None:
            components[index] = raw
        else:
            subcomponents = components[index].split(d.subcomponent)
            sub = path.subcomponent - 1
            if sub >= len(subcomponents):
                subcomponents.extend([""] * (sub + 1 - len(subcomponents)))
            subcomponents[sub] = raw
            components[index] = d.subcomponent.join(subcomponents)
        return d.component.join(components).rstrip(d.component)

    # -- segments -------------------------------------------------------------------------------

    def delete_segments(self, segment_ids: Iterable[str]) -> int:
        """Remove every segment with one of these ids (never MSH); returns how many."""
        doomed = set(segment_ids) - {"MSH"}
        before = len(self._segments)
        self.segments = [s for s in self._segments if s.id not in doomed]
        return before - len(self._segments)

    def insert_segment(
        self, segment_id: str, *, after: str | None = None, before: str | None = None
    ) -> Segment:
        """Add an empty segment after the last ``after`` (or before the first ``before``).

        Without either, it goes at the end.
        """
        segment = Segment(segment_id, self.delimiters)
        ids = [s.id for s in self.segments]
        if after is not None:
            if after not in ids:
                raise MessageError(f"cannot insert {segment_id} after {after}: no {after} segment")
            position = len(ids) - ids[::-1].index(after)
        elif before is not None:
            if before not in ids:
                raise MessageError(
                    f"cannot insert {segment_id} before {before}: no {before} segment"
                )
            position = ids.index(before)
        else:
            position = len(ids)
        self._segments.insert(position, segment)
        self._changed()
        return segment

    def rename_segments(self, old: str, new: str) -> int:
        """Rename every ``old`` segment to ``new``; returns how many."""
        if "MSH" in (old, new):
            raise MessageError("the MSH segment cannot be renamed")
        count = 0
        for segment in self._segments:
            if segment.id == old:
                segment.rename(new)
                count += 1
        if count:
            self._changed()
        return count


def _which(path: FieldPath) -> str:
    if path.occurrence in (None, ALL, 1):
        return path.segment
    return f"{path.segment}[{path.occurrence}]"
