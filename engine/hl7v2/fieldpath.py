"""Field paths in HL7's own notation: ``PID-3``, ``PID-3.1``, ``PID-3[2].4.1``, ``OBX[*]-5``.

A path names a segment (and which occurrence: 1-based, or ``*`` for all), a field, optionally a
repetition (1-based or ``*``), a component and a subcomponent. Without an occurrence or a
repetition, the first one is meant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import CrosswalkError

ALL = 0
"""Marks ``[*]``: every occurrence or every repetition."""

_PATH = re.compile(
    r"""^(?P<segment>[A-Z][A-Z0-9]{2})
        (?:\[(?P<occurrence>\d+|\*)\])?
        -(?P<field>\d+)
        (?:\[(?P<repetition>\d+|\*)\])?
        (?:\.(?P<component>\d+)(?:\.(?P<subcomponent>\d+))?)?$""",
    re.VERBOSE,
)


class PathError(CrosswalkError, ValueError):
    """A field path that cannot be read; the text says what is wrong and shows the form."""


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A parsed field path; ``occurrence``/``repetition`` are None (first), a number, or ALL."""

    segment: str
    field: int
    occurrence: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None

    @classmethod
    def parse(cls, text: str) -> FieldPath:
        """Read a path, or raise :class:`PathError` explaining the expected form.

        >>> str(FieldPath.parse("PID-3[2].4")), FieldPath.parse("OBX[*]-5").occurrence == ALL
        ('PID-3[2].4', True)
        """
        match = _PATH.match(text.strip())
        if not match:
            raise PathError(_explain(text))
        parts = match.groupdict()

        def number(name: str) -> int | None:
            value = parts[name]
            if value is None:
                return None
            if value == "*":
                return ALL
            if int(value) < 1:
                raise PathError(f"{text!r}: positions start at 1")
            return int(value)

        field = int(parts["field"])
        if field < 1:
            raise PathError(f"{text!r}: field positions start at 1")
        path = cls(
            segment=parts["segment"],
            field=field,
            occurrence=number("occurrence"),
            repetition=number("repetition"),
            component=number("component"),
            subcomponent=number("subcomponent"),
        )
        if path.segment == "MSH" and path.field in (1, 2) and (path.component or path.repetition):
            raise PathError(f"{text!r}: MSH-1 and MSH-2 are the delimiters and have no parts")
        return path

    @property
    def is_leaf_level(self) -> bool:
        """True when the path reaches a component or subcomponent."""
        return self.component is not None

    def __str__(self) -> str:
        text = self.segment
        if self.occurrence is not None:
            text += f"[{'*' if self.occurrence == ALL else self.occurrence}]"
        text += f"-{self.field}"
        if self.repetition is not None:
            text += f"[{'*' if self.repetition == ALL else self.repetition}]"
        if self.component is not None:
            text += f".{self.component}"
            if self.subcomponent is not None:
                text += f".{self.subcomponent}"
        return text


def _explain(text: str) -> str:
    stripped = text.strip()
    hint = "expected a path like PID-3, PID-3.1, PID-3[2].4 or OBX[*]-5"
    if re.match(r"^[A-Za-z][A-Za-z0-9]{2}\.\d", stripped):
        return f"{text!r}: use '-' between segment and field (PID-3, not PID.3); {hint}"
    if re.match(r"^[a-z][a-z0-9]{2}-", stripped):
        return f"{text!r}: segment ids are upper case ({stripped[:3].upper()}); {hint}"
    if re.match(r"^[A-Z][A-Z0-9]{2}$", stripped):
        return f"{text!r}: a field number is missing; {hint}"
    return f"{text!r} is not a field path; {hint}"
