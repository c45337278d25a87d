"""Transform steps: what a route does to a message on its way to a destination.

Each step is a small settings class registered under its YAML key (``set``, ``map``, …). Its
fields carry the descriptions the reference docs and the JSON Schema are generated from. A step
may have ``when:`` (a condition, as in filters): it then applies only when that holds.

A step that cannot do its job raises :class:`StepError`; the message is then *errored* for that
route with the reason, and nothing is sent for it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import jinja2

from engine.errors import CrosswalkError
from engine.hl7v2.escaping import escape
from engine.hl7v2.fieldpath import ALL, FieldPath
from engine.hl7v2.message import Message, MessageError
from engine.routes.conditions import Condition
from engine.routes.mappings import MappingError, Mappings
from engine.routes.templates import TemplateError, compile_template, render
from engine.settings import Issue, setting


class StepError(CrosswalkError, ValueError):
    """A step could not be applied; the text says why, in an analyst's words."""


class SegmentId(str):
    """A three-character segment id such as PID or ZDS."""


@dataclass(frozen=True)
class FieldTemplate:
    """A Jinja2 template for one value (compiled when the configuration is loaded)."""

    text: str
    compiled: jinja2.Template = field(compare=False, repr=False)

    @classmethod
    def of(cls, text: str) -> FieldTemplate:
        return cls(text, compile_template(text))


@dataclass(frozen=True)
class MessageTemplate:
    """A Jinja2 template that produces a whole message."""

    source: str
    compiled: jinja2.Template = field(compare=False, repr=False)


@dataclass
class StepContext:
    """What steps can use while they run."""

    tables: Mappings


class Step(Protocol):
    """What every step offers: an optional condition, apply, and a short description."""

    KEY: ClassVar[str]
    when: Condition | None

    def apply(self, message: Message, ctx: StepContext) -> None: ...

    def describe(self) -> str: ...


STEPS: dict[str, type[Any]] = {}
"""YAML key → step class."""


def step(key: str) -> Any:
    def register(cls: type[Any]) -> type[Any]:
        cls.KEY = key
        STEPS[key] = cls
        return cls

    return register


def _value_or_template(
    value: str | None, template: FieldTemplate | None, message: Message, ctx: StepContext
) -> str:
    if template is not None:
        try:
            return render(template.compiled, message, ctx.tables)
        except TemplateError as error:
            raise StepError(str(error)) from None
    return value or ""


def _write(message: Message, path: FieldPath, value: str, *, raw: bool = False) -> None:
    try:
        if raw:
            message.set_raw(path, value)
        else:
            message.set(path, value)
    except MessageError as error:
        raise StepError(str(error)) from None


@step("set")
@dataclass(frozen=True)
class SetStep:
    """Set a field, component or repetition to a fixed value or a computed one."""

    field: FieldPath = setting("Where to write.", example="PID-3.4")
    value: str | None = setting(
        "The value (escaped when written).", default=None, example="GENHOSP"
    )
    template: FieldTemplate | None = setting(
        "A Jinja2 template computing the value instead.",
        default=None,
        example="{{ field('PID-5.1') | upper }}",
    )
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def check(self) -> list[Issue]:
        if (self.value is None) == (self.template is None):
            return [Issue("set needs exactly one of value or template", None)]
        return []

    def apply(self, message: Message, ctx: StepContext) -> None:
        _write(message, self.field, _value_or_template(self.value, self.template, message, ctx))

    def describe(self) -> str:
        return f"set {self.field}"


@step("copy")
@dataclass(frozen=True)
class CopyStep:
    """Copy a field, component or repetition to another place, structure included."""

    source: FieldPath = setting("Where to read.", key="from", example="PID-3.1")
    target: FieldPath = setting("Where to write.", key="to", example="PID-2.1")
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def apply(self, message: Message, ctx: StepContext) -> None:
        _write(message, self.target, _raw_value(message, self.source), raw=True)

    def describe(self) -> str:
        return f"copy {self.source} to {self.target}"


def _raw_value(message: Message, path: FieldPath) -> str:
    """The value at ``path`` in message form (escaped leaf, or structure as written)."""
    value = message.value(path)
    d = message.delimiters
    structure = (d.repetition, d.component, d.subcomponent)
    if path.component is not None or not any(ch in value for ch in structure):
        return escape(value, d)
    return value


@step("move")
@dataclass(frozen=True)
class MoveStep:
    """Move a value: copy it, then clear where it was."""

    source: FieldPath = setting("Where to read (cleared afterwards).", key="from", example="PID-19")
    target: FieldPath = setting("Where to write.", key="to", example="PID-3[2].1")
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def apply(self, message: Message, ctx: StepContext) -> None:
        _write(message, self.target, _raw_value(message, self.source), raw=True)
        message.clear(self.source)

    def describe(self) -> str:
        return f"move {self.source} to {self.target}"


@step("clear")
@dataclass(frozen=True)
class ClearStep:
    """Empty fields or components; a repetition named by index (``PID-3[2]``) is removed."""

    PRIMARY: ClassVar[str] = "fields"
    fields: list[FieldPath] = setting("What to clear.", example="[PID-19, PID-20]")
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def apply(self, message: Message, ctx: StepContext) -> None:
        for path in self.fields:
            message.clear(path)

    def describe(self) -> str:
        return "clear " + ", ".join(str(p) for p in self.fields)


@step("delete_segments")
@dataclass(frozen=True)
class DeleteSegmentsStep:
    """Remove every segment with one of these ids (MSH always stays)."""

    PRIMARY: ClassVar[str] = "segments"
    segments: list[SegmentId] = setting("Segment ids.", example="[NK1, AL1, IN1, GT1]")
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def apply(self, message: Message, ctx: StepContext) -> None:
        message.delete_segments(self.segments)

    def describe(self) -> str:
        return "delete " + ", ".join(self.segments)


@step("insert_segment")
@dataclass(frozen=True)
class InsertSegmentStep:
    """Add a segment after the last of one id (or before the first), with field values."""

    segment: SegmentId = setting("The new segment's id.", example="ZDS")
    after: SegmentId | None = setting(
        "Insert after the last segment with this id.", default=None, example="OBR"
    )
    before: SegmentId | None = setting(
        "Insert before the first segment with this id.", default=None
    )
    values: dict[str, str] = setting(
        "Field positions (``1``, ``1.2``) and their values; values may be templates.",
        default_factory=dict,
        example="{'1.1': \"{{ field('IPC-3') }}\", '1.2': '100'}",
    )
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def check(self) -> list[Issue]:
        problems: list[Issue] = []
        if self.after and self.before:
            problems.append(Issue("insert_segment takes after or before, not both", None))
        for position, text in self.values.items():
            if not re.fullmatch(r"\d+(\.\d+){0,2}", position):
                problems.append(
                    Issue(f"{position!r} is not a field position", "write 1, 1.2 or 1.2.1")
                )
            try:
                compile_template(text)
            except TemplateError as error:
                problems.append(Issue(f"value of {position}: {error}", None))
        return problems

    def apply(self, message: Message, ctx: StepContext) -> None:
        try:
            message.insert_segment(self.segment, after=self.after, before=self.before)
        except MessageError as error:
            raise StepError(str(error)) from None
        occurrence = len(message.segments_named(self.segment))
        for position, text in self.values.items():
            numbers = [int(n) for n in position.split(".")]
            path = FieldPath(
                self.segment, numbers[0], occurrence, None, *[*numbers[1:], None, None][:2]
            )
            value = _value_or_template(None, FieldTemplate.of(text), message, ctx)
            _write(message, path, value)

    def describe(self) -> str:
        return f"insert {self.segment}"


@step("rename_segment")
@dataclass(frozen=True)
class RenameSegmentStep:
    """Rename every segment with one id to another."""

    source: SegmentId = setting("The id to rename.", key="from", example="ZDS")
    target: SegmentId = setting("The new id.", key="to", example="ZD1")
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def apply(self, message: Message, ctx: StepContext) -> None:
        try:
            message.rename_segments(self.source, self.target)
        except MessageError as error:
            raise StepError(str(error)) from None

    def describe(self) -> str:
        return f"rename {self.source} to {self.target}"


@step("map")
@dataclass(frozen=True)
class MapStep:
    """Replace a value through a crosswalk table (a CSV file in mappings/)."""

    field: FieldPath = setting("The value to look up (every one, with [*]).", example="OBR-4.1")
    table: str = setting(
        "The table: a CSV file in mappings/, without .csv.", example="procedure_codes"
    )
    key: str = setting("The column holding the values looked up.", example="code")
    value: str = setting("The column holding what they become.", example="modality")
    to: FieldPath | None = setting(
        "Write the result here instead of over the value.", default=None, example="OBR-24"
    )
    on_miss: Literal["keep", "default", "reject"] = setting(
        "When the value is not in the table: keep it, write `default`, or reject the message.",
        default="keep",
    )
    default: str = setting("The value written on a miss with on_miss: default.", default="")
    ignore_case: bool = setting("Compare keys without regard to case.", default=False)
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def validate(self, tables: Mappings) -> None:
        tables.get(self.table).index(self.key, self.value, self.ignore_case)

    def apply(self, message: Message, ctx: StepContext) -> None:
        try:
            mapping = ctx.tables.get(self.table).index(self.key, self.value, self.ignore_case)
        except MappingError as error:
            raise StepError(str(error)) from None
        sources = _expand(message, self.field)
        targets = _expand(message, self.to) if self.to else sources
        for source, target in zip(sources, targets, strict=False):
            found = message.value(source)
            if found == "" and self.on_miss != "reject":
                continue
            looked = mapping.get(found.upper() if self.ignore_case else found)
            if looked is None:
                if self.on_miss == "reject":
                    raise StepError(
                        f"{source} {found!r} is not in column {self.key} of table {self.table}"
                    )
                if self.on_miss == "keep":
                    if self.to is not None:
                        _write(message, target, found)
                    continue
                looked = self.default
            _write(message, target, looked)

    def describe(self) -> str:
        return f"map {self.field} through {self.table}"


def _expand(message: Message, path: FieldPath) -> list[FieldPath]:
    """Concrete paths (no wildcards) for every place ``path`` addresses."""
    if path.occurrence != ALL and path.repetition != ALL:
        return [path]
    occurrences: list[int | None]
    if path.occurrence == ALL:
        occurrences = list(range(1, len(message.segments_named(path.segment)) + 1))
    else:
        occurrences = [path.occurrence]  # None stays None: paths print as they were written
    expanded = []
    for occurrence in occurrences:
        repetitions: list[int | None] = [path.repetition]
        if path.repetition == ALL:
            raw = _field_raw(message, path.segment, occurrence or 1, path.field)
            repetitions = list(range(1, raw.count(message.delimiters.repetition) + 2))
        for repetition in repetitions:
            expanded.append(
                FieldPath(
                    path.segment,
                    path.field,
                    occurrence,
                    repetition,
                    path.component,
                    path.subcomponent,
                )
            )
    return expanded


def _field_raw(message: Message, segment: str, occurrence: int, position: int) -> str:
    found = message.segments_named(segment)
    return found[occurrence - 1].field(position) if occurrence <= len(found) else ""


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.replace("ß", "SS").replace("ẞ", "SS"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _name(text: str) -> str:
    return " ".join(text.split()).upper().strip(" .,")


@step("normalise")
@dataclass(frozen=True)
class NormaliseStep:
    """Tidy values: upper/lower case, trim, names, ASCII, digits only, or dates to HL7 form."""

    fields: list[FieldPath] = setting(
        "The values to tidy (components of a name: PID-5.1 …).", example="[PID-5.1, PID-5.2]"
    )
    style: Literal["upper", "lower", "trim", "name", "ascii", "digits", "date"] = setting(
        "upper, lower, trim (spaces at both ends), name (trim, single spaces, upper case,"
        " no trailing punctuation), ascii (drop accents: MÜLLER → MULLER), digits (keep only"
        " 0-9), date (read with `date_formats`, write as `date_output`).",
        key="to",
        example="name",
    )
    date_formats: list[str] = setting(
        "Formats (strftime) the date may come in; values already in HL7 form pass through.",
        default_factory=list,
        example="['%d/%m/%Y', '%Y-%m-%d']",
    )
    date_output: str = setting("Format of normalised dates.", default="%Y%m%d")
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def check(self) -> list[Issue]:
        if self.style == "date" and not self.date_formats:
            return [Issue("normalise to: date needs date_formats", "e.g. ['%d/%m/%Y']")]
        return []

    def apply(self, message: Message, ctx: StepContext) -> None:
        for path in self.fields:
            for concrete in _expand(message, path):
                value = message.value(concrete)
                if value:
                    _write(message, concrete, self._tidy(value, concrete))

    def _tidy(self, value: str, path: FieldPath) -> str:
        if self.style == "name":
            return _name(value)
        if self.style == "upper":
            return value.upper()
        if self.style == "lower":
            return value.lower()
        if self.style == "trim":
            return value.strip()
        if self.style == "name":
            return _name(value)
        if self.style == "ascii":
            return _ascii(value)
        if self.style == "digits":
            return re.sub(r"\D", "", value)
        if re.fullmatch(r"\d{8}(\d{4}(\d{2})?)?", value.strip()):
            return value.strip()
        for fmt in self.date_formats:
            try:
                return datetime.strptime(value.strip(), fmt).strftime(self.date_output)
            except ValueError:
                continue
        raise StepError(f"{path} {value!r} is not a date in {', '.join(self.date_formats)}")

    def describe(self) -> str:
        return f"normalise {', '.join(str(p) for p in self.fields)} to {self.style}"


@dataclass(frozen=True)
class TableRef:
    """A column-to-column lookup in a mapping table."""

    table: str = setting(
        "The table (CSV in mappings/, without .csv).", example="assigning_authorities"
    )
    key: str = setting("Column of the values looked up.", example="local_code")
    value: str = setting("Column of what they become.", example="pacs_authority")


@step("identifiers")
@dataclass(frozen=True)
class IdentifiersStep:
    """Rewrite a list of identifiers (CX): assigning authorities through a table, then keep
    only the repetitions of the authorities the destination knows."""

    field: FieldPath = setting("The identifier list.", default=FieldPath("PID", 3), example="PID-3")
    rewrite_authority: TableRef | None = setting(
        "Map each identifier's assigning authority (CX-4.1) through this table.", default=None
    )
    keep_authorities: list[str] | None = setting(
        "Keep only identifiers whose assigning authority (CX-4.1, after rewriting) is listed.",
        default=None,
        example="[GENHOSP]",
    )
    when_none_left: Literal["reject", "keep_all"] = setting(
        "When no identifier is kept: reject the message, or leave the list unfiltered.",
        default="reject",
    )
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def validate(self, tables: Mappings) -> None:
        if self.rewrite_authority:
            ref = self.rewrite_authority
            tables.get(ref.table).index(ref.key, ref.value)

    def apply(self, message: Message, ctx: StepContext) -> None:
        d = message.delimiters
        base = FieldPath(self.field.segment, self.field.field, self.field.occurrence)
        raw = _field_raw(message, base.segment, base.occurrence or 1, base.field)
        repetitions = [r for r in raw.split(d.repetition) if r]
        mapping: dict[str, str] = {}
        if self.rewrite_authority:
            ref = self.rewrite_authority
            try:
                mapping = ctx.tables.get(ref.table).index(ref.key, ref.value)
            except MappingError as error:
                raise StepError(str(error)) from None
        kept = []
        for repetition in repetitions:
            components = repetition.split(d.component)
            while len(components) < 4:
                components.append("")
            authority = components[3].split(d.subcomponent)
            authority[0] = mapping.get(authority[0], authority[0])
            components[3] = d.subcomponent.join(authority)
            rewritten = d.component.join(components).rstrip(d.component)
            if self.keep_authorities is None or authority[0] in self.keep_authorities:
                kept.append(rewritten)
        if not kept and self.keep_authorities is not None:
            if self.when_none_left == "reject":
                raise StepError(f"{base} has no identifier from {', '.join(self.keep_authorities)}")
            kept = repetitions
        _write(message, base, d.repetition.join(kept), raw=True)

    def describe(self) -> str:
        return f"identifiers {self.field}"


@step("message_template")
@dataclass(frozen=True)
class MessageTemplateStep:
    """Replace the whole message with a Jinja2 template's output (e.g. ORM^O01 in, OMI^O23
    out). Every ``{{ … }}`` is escaped for HL7 except ``raw(…)``; lines become segments."""

    PRIMARY: ClassVar[str] = "file"
    file: MessageTemplate | None = setting(
        "A template file, relative to the route file.",
        default=None,
        example="templates/orm_to_omi.hl7.j2",
    )
    text: MessageTemplate | None = setting("The template written inline.", default=None)
    when: Condition | None = setting("Apply only when this condition holds.", default=None)

    def check(self) -> list[Issue]:
        if (self.file is None) == (self.text is None):
            return [Issue("message_template needs exactly one of file or text", None)]
        return []

    def apply(self, message: Message, ctx: StepContext) -> None:
        template = self.file or self.text
        assert template is not None
        try:
            produced = render(template.compiled, message, ctx.tables)
        except TemplateError as error:
            raise StepError(str(error)) from None
        try:
            rebuilt = Message.parse(produced)
        except Exception:
            raise StepError("the message template did not produce an MSH segment first") from None
        message.segments = rebuilt.segments
        message.delimiters = rebuilt.delimiters

    def describe(self) -> str:
        template = self.file or self.text
        return f"message template {Path(template.source).name if self.file else '(inline)'}"  # type: ignore[union-attr]


@step("reject")
@dataclass(frozen=True)
class RejectStep:
    """Stop here: the message is errored for this route with the reason given."""

    PRIMARY: ClassVar[str] = "reason"
    reason: str = setting(
        "Why, in words an analyst will read in the message's history.",
        example="order has no accession number (OBR-18)",
    )
    when: Condition | None = setting("Reject only when this condition holds.", default=None)

    def apply(self, message: Message, ctx: StepContext) -> None:
        raise StepError(self.reason)

    def describe(self) -> str:
        return "reject"


def run_steps(steps: list[Step], message: Message, ctx: StepContext) -> None:
    """Apply ``steps`` in order; a step whose ``when`` fails is skipped."""
    for number, current in enumerate(steps, start=1):
        condition = current.when
        if condition is not None and not condition.test(message):
            continue
        try:
            current.apply(message, ctx)
        except StepError as error:
            raise StepError(f"step {number} ({current.describe()}): {error}") from None
