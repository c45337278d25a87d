"""Filter conditions: message type patterns and field tests, combined with all / any / not.

A condition never evaluates code from the configuration: each is a small object with a fixed
test. Where a path addresses several values (``OBX[*]-5``), a field test holds if any value
passes it. Every condition can say, in words, why it did not hold.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from engine.hl7v2.fieldpath import FieldPath
from engine.hl7v2.message import Message


class Condition(Protocol):
    """Anything a filter or a step's ``when`` can test."""

    def test(self, message: Message) -> bool: ...

    def explain(self, message: Message) -> str:
        """Why the condition does not hold for ``message`` (called only when it does not)."""
        ...


@dataclass(frozen=True)
class TypeIs:
    """MSH-9 matches one of the patterns: ``ADT``, ``ADT^A08``, ``ADT^A0*``, ``OMI^O23^OMI_O23``."""

    patterns: tuple[str, ...]
    where: str = ""

    def test(self, message: Message) -> bool:
        actual = message.type_parts()
        return any(_type_matches(pattern, actual) for pattern in self.patterns)

    def explain(self, message: Message) -> str:
        actual = message.value(FieldPath("MSH", 9)) or "(empty)"
        return f"type {' or '.join(self.patterns)}: MSH-9 is {actual}"


def _type_matches(pattern: str, actual: tuple[str, str, str]) -> bool:
    parts = pattern.split("^")
    return all(
        fnmatch.fnmatchcase(value, wanted)
        for wanted, value in zip(parts, actual, strict=False)
        if wanted
    )


@dataclass(frozen=True)
class FieldTest:
    """A field compared with an operator: ``{field: PV1-2, in: [I, O]}``."""

    path: FieldPath
    operator: str
    expected: object
    check: Callable[[str], bool] = field(compare=False, repr=False)
    where: str = ""

    def test(self, message: Message) -> bool:
        values = message.values(self.path)
        if self.operator in ("exists", "empty"):
            present = any(v != "" for v in values)
            wanted = truth(self.expected)
            return present == (wanted if self.operator == "exists" else not wanted)
        return any(self.check(value) for value in values)

    def explain(self, message: Message) -> str:
        values = [v for v in message.values(self.path) if v != ""]
        shown = ", ".join(repr(v) for v in values[:3]) if values else "empty"
        if self.operator in ("exists", "empty"):
            return f"{self.path} {self.operator} {_show(truth(self.expected))}: it is {shown}"
        return (
            f"{self.path} {self.operator.replace('_', ' ')} {_show(self.expected)}: it is {shown}"
        )


def _show(expected: object) -> str:
    if isinstance(expected, (list, tuple)):
        return "[" + ", ".join(str(e) for e in expected) + "]"
    if isinstance(expected, bool):
        return "true" if expected else "false"
    return repr(expected) if isinstance(expected, str) else str(expected)


@dataclass(frozen=True)
class SegmentExists:
    """The message has (or lacks) a segment: ``{segment: ZDS, exists: true}``."""

    segment: str
    exists: bool = True
    where: str = ""

    def test(self, message: Message) -> bool:
        return message.has_segment(self.segment) == self.exists

    def explain(self, message: Message) -> str:
        return f"segment {self.segment} {'is missing' if self.exists else 'is present'}"


@dataclass(frozen=True)
class All:
    conditions: tuple[Condition, ...]
    where: str = ""

    def test(self, message: Message) -> bool:
        return all(c.test(message) for c in self.conditions)

    def explain(self, message: Message) -> str:
        for condition in self.conditions:
            if not condition.test(message):
                return condition.explain(message)
        return "all conditions hold"


@dataclass(frozen=True)
class Any_:
    conditions: tuple[Condition, ...]
    where: str = ""

    def test(self, message: Message) -> bool:
        return any(c.test(message) for c in self.conditions)

    def explain(self, message: Message) -> str:
        return "none of: " + "; ".join(c.explain(message) for c in self.conditions)


@dataclass(frozen=True)
class Not:
    condition: Condition
    where: str = ""

    def test(self, message: Message) -> bool:
        return not self.condition.test(message)

    def explain(self, message: Message) -> str:
        return f"not ({_describe(self.condition)}): it holds"


def _describe(condition: Condition) -> str:
    if isinstance(condition, TypeIs):
        return f"type {' or '.join(condition.patterns)}"
    if isinstance(condition, FieldTest):
        return (
            f"{condition.path} {condition.operator.replace('_', ' ')} {_show(condition.expected)}"
        )
    if isinstance(condition, SegmentExists):
        return f"segment {condition.segment} {'exists' if condition.exists else 'is absent'}"
    return type(condition).__name__.lower().strip("_")


# -- operators -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operator:
    """One field operator: its YAML key, the value it takes, and what it means."""

    key: str
    takes: str
    meaning: str
    example: str
    build: Callable[[object], Callable[[str], bool]]


def _text(value: object) -> str:
    if isinstance(value, (list, dict)):
        raise ValueError("expected a single value")
    return "" if value is None else str(value)


def _texts(value: object) -> list[str]:
    if not isinstance(value, list):
        raise ValueError("expected a list of values")
    return [_text(v) for v in value]


def _regex(value: object) -> Callable[[str], bool]:
    try:
        pattern = re.compile(_text(value))
    except re.error as error:
        raise ValueError(f"not a valid regular expression: {error}") from None
    return lambda v: pattern.search(v) is not None


def _number(value: object) -> float:
    try:
        return float(_text(value))
    except ValueError:
        raise ValueError("expected a number") from None


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


_RELATIVE = re.compile(r"(now|today)?([+-]\d+[mhd])?")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """A comparison date: ISO (2026-01-01, 2026-01-01T10:00), HL7 (20260101), or relative:
    ``now``, ``today`` (midnight), ``-30d``, ``today-1d``, ``+2h``."""
    compact = text.strip().replace(" ", "")
    match = _RELATIVE.fullmatch(compact)
    if compact and match:
        base = now or datetime.now()
        if match.group(1) == "today":
            base = datetime.combine(base.date(), datetime.min.time())
        if match.group(2):
            offset = match.group(2)
            amount = int(offset[1:-1]) * (-1 if offset[0] == "-" else 1)
            base += timedelta(**{_UNITS[offset[-1]]: amount})
        return base
    moment = hl7_datetime(compact)
    if moment is None:
        try:
            moment = datetime.fromisoformat(compact)
        except ValueError:
            raise ValueError(
                "expected a date such as 2026-01-01, 20260101, today, now or -30d"
            ) from None
    return moment.replace(tzinfo=None)


def hl7_datetime(text: str) -> datetime | None:
    """An HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]) as a naive local datetime, or None."""
    match = re.fullmatch(
        r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?", text.strip()
    )
    if not match:
        return None
    numbers = [
        int(g) if g else d for g, d in zip(match.groups()[:6], (0, 1, 1, 0, 0, 0), strict=True)
    ]
    try:
        return datetime(*numbers)  # type: ignore[arg-type]
    except ValueError:
        return None


def _date_test(
    value: object, compare: Callable[[datetime, datetime], bool]
) -> Callable[[str], bool]:
    text = _text(value)
    parse_moment(text)  # fail at load time on a bad date

    def check(field_value: str) -> bool:
        actual = hl7_datetime(field_value)
        return actual is not None and compare(actual, parse_moment(text))

    return check


def _number_test(value: object, compare: Callable[[float, float], bool]) -> Callable[[str], bool]:
    limit = _number(value)

    def check(field_value: str) -> bool:
        actual = _as_number(field_value)
        return actual is not None and compare(actual, limit)

    return check


def _equals(value: object) -> Callable[[str], bool]:
    expected = _text(value)
    return lambda v: v == expected


def _in(value: object) -> Callable[[str], bool]:
    options = set(_texts(value))
    return lambda v: v in options


def _starts_with(value: object) -> Callable[[str], bool]:
    prefix = _text(value)
    return lambda v: v.startswith(prefix)


def truth(value: object) -> bool:
    """``true``/``false`` (also yes/no) as written in YAML."""
    if isinstance(value, bool):
        return value
    text = _text(value).strip().lower()
    if text in ("true", "yes", "on"):
        return True
    if text in ("false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _presence(value: object) -> Callable[[str], bool]:
    truth(value)
    return lambda v: True


OPERATORS: dict[str, Operator] = {
    op.key: op
    for op in (
        Operator("equals", "text", "is exactly this text", "{field: PV1-2, equals: O}", _equals),
        Operator("in", "list", "is one of these", "{field: PV1-2, in: [I, O, E]}", _in),
        Operator(
            "starts_with",
            "text",
            "begins with this text",
            "{field: PID-3.1, starts_with: TR}",
            _starts_with,
        ),
        Operator(
            "regex",
            "regular expression",
            "matches (anywhere; anchor with ^ and $)",
            "{field: OBR-4.1, regex: '^CT'}",
            _regex,
        ),
        Operator(
            "exists",
            "true/false",
            "has (or, with false, lacks) a non-empty value",
            "{field: OBR-18, exists: true}",
            _presence,
        ),
        Operator(
            "empty",
            "true/false",
            "is empty or absent (or, with false, is not)",
            "{field: PID-29, empty: true}",
            _presence,
        ),
        Operator(
            "before",
            "date",
            "is an HL7 date/time earlier than this",
            "{field: PID-7, before: 1900-01-02}",
            lambda v: _date_test(v, lambda a, b: a < b),
        ),
        Operator(
            "after",
            "date",
            "is an HL7 date/time later than this",
            "{field: EVN-2, after: -30d}",
            lambda v: _date_test(v, lambda a, b: a > b),
        ),
        Operator(
            "less_than",
            "number",
            "is a number below this",
            "{field: OBX-5, less_than: 10}",
            lambda v: _number_test(v, lambda a, b: a < b),
        ),
        Operator(
            "greater_than",
            "number",
            "is a number above this",
            "{field: OBX-5, greater_than: 0}",
            lambda v: _number_test(v, lambda a, b: a > b),
        ),
        Operator(
            "at_least",
            "number",
            "is a number at or above this",
            "{field: PV1-44, at_least: 1}",
            lambda v: _number_test(v, lambda a, b: a >= b),
        ),
        Operator(
            "at_most",
            "number",
            "is a number at or below this",
            "{field: OBX-5, at_most: 100}",
            lambda v: _number_test(v, lambda a, b: a <= b),
        ),
    )
}


def field_test(path: FieldPath, operator: str, expected: object, where: str = "") -> FieldTest:
    """Build a field test; raises ValueError with the reason when ``expected`` does not fit."""
    if operator not in OPERATORS:
        raise KeyError(operator)
    check = OPERATORS[operator].build(expected)
    return FieldTest(path, operator, expected, check, where)
