"""How route YAML becomes conditions, steps and field paths (binder converters).

Importing this module registers the converters; :mod:`engine.config.loader` does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from engine.hl7v2.events import type_pattern_problem
from engine.hl7v2.fieldpath import FieldPath, PathError
from engine.routes import conditions as c
from engine.routes.model import RouteTarget
from engine.routes.steps import (
    STEPS,
    FieldTemplate,
    MessageTemplate,
    SegmentId,
    Step,
)
from engine.routes.templates import TemplateError, compile_template
from engine.settings import INVALID, Binder, closest, converter

_SEGMENT = re.compile(r"[A-Z][A-Z0-9]{2}")


@converter(FieldPath)
def bind_path(binder: Binder, node: yaml.Node, what: str) -> Any:
    text = binder.scalar(node, what)
    if text is INVALID:
        return INVALID
    try:
        return FieldPath.parse(text)
    except PathError as error:
        return binder.problem(node, f"{what}: bad field path: {error}", text)


@converter(SegmentId)
def bind_segment(binder: Binder, node: yaml.Node, what: str) -> Any:
    text = binder.scalar(node, what)
    if text is INVALID:
        return INVALID
    if not _SEGMENT.fullmatch(text):
        return binder.problem(node, f"{what}: not a segment id", text, "three capitals: PID, ZDS")
    return SegmentId(text)


def _bind_list_of(item: Any) -> Any:
    def bind(binder: Binder, node: yaml.Node, what: str) -> Any:
        nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
        values = [binder.bind(n, item, what) for n in nodes]
        return INVALID if any(v is INVALID for v in values) else values

    return bind


for _item in (str, FieldPath, SegmentId):
    converter(list[_item])(_bind_list_of(_item))  # type: ignore[valid-type]  # a single value is a list of one


@converter(FieldTemplate)
def bind_field_template(binder: Binder, node: yaml.Node, what: str) -> Any:
    text = binder.scalar(node, what)
    if text is INVALID:
        return INVALID
    try:
        return FieldTemplate.of(text)
    except TemplateError as error:
        return binder.problem(_line_within(node, error.line), f"{what}: {error}", text)


@converter(MessageTemplate)
def bind_message_template(binder: Binder, node: yaml.Node, what: str) -> Any:
    text = binder.scalar(node, what)
    if text is INVALID:
        return INVALID
    if what.endswith(": text"):
        source, body = "(inline)", text
    else:
        path = Path(binder.file).parent / text
        try:
            body = path.read_text(encoding="utf-8")
        except OSError:
            return binder.problem(node, f"{what}: no such template file: {path}", text)
        source = str(path)
    try:
        return MessageTemplate(source, compile_template(body, whole_message=True))
    except TemplateError as error:
        where = f" at line {error.line} of {source}" if error.line and source != "(inline)" else ""
        return binder.problem(node, f"{what}: {error}{where}", text)


def _line_within(node: yaml.Node, line: int | None) -> yaml.Node:
    """The node, with its mark moved down to ``line`` of a multi-line scalar."""
    if not line or line <= 1 or not isinstance(node, yaml.ScalarNode) or node.style in (None, ""):
        return node
    mark = node.start_mark
    moved = yaml.Mark(mark.name, mark.index, mark.line + line, mark.column, None, None)  # type: ignore[arg-type]  # no buffer: PyYAML's own marks allow None
    return yaml.ScalarNode(node.tag, node.value, moved, node.end_mark, node.style)


@converter(Step)
def bind_step(binder: Binder, node: yaml.Node, what: str) -> Any:
    if not isinstance(node, yaml.MappingNode) or not node.value:
        return binder.problem(
            node,
            f"{what}: a step is a mapping with one key naming it",
            None,
            f"steps are: {', '.join(STEPS)}",
        )
    key_node, value_node = node.value[0]
    key = str(key_node.value)
    cls = STEPS.get(key)
    if cls is None:
        return binder.problem(
            key_node,
            f"unknown step {key!r}",
            key,
            closest(key, list(STEPS)) or f"steps are: {', '.join(STEPS)}",
        )
    if len(node.value) > 1:
        extra = str(node.value[1][0].value)
        return binder.problem(
            node.value[1][0],
            f"step {key!r} has a second key {extra!r}",
            extra,
            "indent the step's settings under its name; one step per list item",
        )
    return binder.bind_object(value_node, cls, f"step {key!r}")


@converter(RouteTarget)
def bind_target(binder: Binder, node: yaml.Node, what: str) -> Any:
    if isinstance(node, yaml.ScalarNode):
        name = binder.scalar(node, what)
        if name is INVALID:
            return INVALID
        target = RouteTarget(destination=name)
        binder.marks[id(target)] = binder.mark(node)
        return target
    return binder.bind_object(node, RouteTarget, what)


# -- conditions ------------------------------------------------------------------------------------

_COMBINATORS = ("all", "any", "not")


@converter(c.Condition)
def bind_condition(binder: Binder, node: yaml.Node, what: str) -> Any:
    where = str(binder.mark(node))
    if isinstance(node, yaml.SequenceNode):  # a list means all of them
        parts = [bind_condition(binder, n, what) for n in node.value]
        return INVALID if INVALID in parts else c.All(tuple(parts), where)
    if not isinstance(node, yaml.MappingNode):
        return binder.problem(
            node, f"{what}: a condition is a mapping", getattr(node, "value", None), _CONDITION_HINT
        )
    entries = {str(k.value): (k, v) for k, v in node.value}
    keys = set(entries)
    if len(keys & set(_COMBINATORS)) == 1 and len(keys) == 1:
        key, (_, value) = next(iter(entries.items()))
        if key == "not":
            inner = bind_condition(binder, value, what)
            return INVALID if inner is INVALID else c.Not(inner, where)
        if not isinstance(value, yaml.SequenceNode):
            return binder.problem(value, f"{what}: {key} takes a list of conditions")
        parts = [bind_condition(binder, n, what) for n in value.value]
        if INVALID in parts:
            return INVALID
        return (c.All if key == "all" else c.Any_)(tuple(parts), where)
    if keys == {"type"}:
        return _bind_type(binder, entries["type"][1], what, where)
    if "segment" in keys:
        return _bind_segment_test(binder, entries, what, where)
    if "field" in keys:
        return _bind_field_test(binder, node, entries, what, where)
    first_key = node.value[0][0]
    return binder.problem(
        first_key,
        f"{what}: unknown condition {str(first_key.value)!r}",
        str(first_key.value),
        closest(str(first_key.value), ["type", "field", "segment", *_COMBINATORS])
        or _CONDITION_HINT,
    )


_CONDITION_HINT = (
    "write {type: ADT^A08}, {field: PID-3.1, exists: true}, {segment: ZDS, exists: true},"
    " or all:/any:/not: around them"
)


def _bind_type(binder: Binder, node: yaml.Node, what: str, where: str) -> Any:
    nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
    patterns = []
    for item in nodes:
        text = binder.scalar(item, f"{what}: type")
        if text is INVALID:
            return INVALID
        if not re.fullmatch(r"[A-Z0-9*?]{1,3}(\^[A-Za-z0-9_*?]*){0,2}", text):
            return binder.problem(
                item,
                f"{what}: {text!r} is not a message type pattern",
                text,
                "like ADT, ADT^A08, ADT^A0* or OMI^O23^OMI_O23",
            )
        impossible = type_pattern_problem(text)
        if impossible is not None:
            reason, hint = impossible
            binder.warn(item, f"{what}: type {text} can match no message: {reason}", None, hint)
        patterns.append(text)
    return c.TypeIs(tuple(patterns), where)


def _bind_segment_test(
    binder: Binder, entries: dict[str, tuple[yaml.Node, yaml.Node]], what: str, where: str
) -> Any:
    unknown = set(entries) - {"segment", "exists"}
    if unknown:
        name = sorted(unknown)[0]
        return binder.problem(entries[name][0], f"{what}: a segment test takes only exists", name)
    segment = bind_segment(binder, entries["segment"][1], f"{what}: segment")
    exists = True
    if "exists" in entries:
        exists = binder.bind(entries["exists"][1], bool, f"{what}: exists")
    if INVALID in (segment, exists):
        return INVALID
    return c.SegmentExists(segment, exists, where)


def _bind_field_test(
    binder: Binder,
    node: yaml.Node,
    entries: dict[str, tuple[yaml.Node, yaml.Node]],
    what: str,
    where: str,
) -> Any:
    path = bind_path(binder, entries["field"][1], f"{what}: field")
    operators = [k for k in entries if k != "field"]
    if len(operators) != 1:
        return binder.problem(
            node,
            f"{what}: a field test needs exactly one operator, found {len(operators)}",
            ", ".join(operators) or None,
            f"operators are: {', '.join(c.OPERATORS)}",
        )
    operator = operators[0]
    key_node, value_node = entries[operator]
    if operator not in c.OPERATORS:
        return binder.problem(
            key_node,
            f"{what}: unknown operator {operator!r}",
            operator,
            closest(operator, list(c.OPERATORS)) or f"operators are: {', '.join(c.OPERATORS)}",
        )
    expected = _plain_value(binder, value_node, f"{what}: {operator}")
    if path is INVALID or expected is INVALID:
        return INVALID
    try:
        return c.field_test(path, operator, expected, where)
    except ValueError as error:
        return binder.problem(
            value_node,
            f"{what}: {operator}: {error}",
            expected if not isinstance(expected, list) else None,
        )


def _plain_value(binder: Binder, node: yaml.Node, what: str) -> Any:
    if isinstance(node, yaml.SequenceNode):
        items = [_plain_value(binder, n, what) for n in node.value]
        return INVALID if INVALID in items else items
    if isinstance(node, yaml.MappingNode):
        return binder.problem(node, f"{what}: expected a value or a list of values")
    # Values stay text as written: YAML 1.1 would read `equals: NO` as false.
    return binder.scalar(node, what)
