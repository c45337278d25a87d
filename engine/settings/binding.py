"""Binding YAML nodes to typed settings dataclasses, collecting every problem with its position.

Settings classes are plain dataclasses whose fields are declared with :func:`setting`, which
carries the description, example and default an analyst sees in docs and in the JSON Schema.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from engine.settings.source import Mark, Problem, interpolate


class Duration(float):
    """Seconds, written ``30``, ``30s``, ``500ms``, ``5m``, ``1h`` or ``1d``."""

    UNITS: typing.ClassVar[dict[str, float]] = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text)
        if not match:
            raise ValueError("expected a duration such as 30s, 5m, 1h or a number of seconds")
        return cls(float(match.group(1)) * cls.UNITS[match.group(2) or "s"])


class ByteSize(int):
    """Bytes, written ``1048576``, ``512KiB``, ``1MiB`` (also KB/MB as powers of 1000)."""

    UNITS: typing.ClassVar[dict[str, int]] = {
        "": 1,
        "b": 1,
        "kb": 1000,
        "mb": 1000**2,
        "kib": 1024,
        "mib": 1024**2,
        "gib": 1024**3,
    }

    @classmethod
    def parse(cls, text: str) -> ByteSize:
        match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
        unit = match.group(2).lower() if match else ""
        if not match or unit not in cls.UNITS:
            raise ValueError("expected a size such as 1048576, 512KiB or 1MiB")
        return cls(int(match.group(1)) * cls.UNITS[unit])


def setting(
    description: str,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Any = dataclasses.MISSING,
    example: Any = None,
    key: str | None = None,
) -> Any:
    """Declare a settings field with the words that document it."""
    metadata = {"description": description, "example": example, "key": key}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def yaml_key(field: dataclasses.Field[Any]) -> str:
    """The key a field has in YAML (``key=`` if given, else the field name)."""
    return field.metadata.get("key") or field.name


INVALID: Any = object()
"""Returned by :meth:`Binder.bind` where a value had a problem (already recorded)."""


Converter = typing.Callable[["Binder", yaml.Node, str], Any]

CONVERTERS: dict[Any, Converter] = {}
"""Types bound by a function instead of structurally (field paths, conditions, steps)."""


def converter(annotation: Any) -> typing.Callable[[Converter], Converter]:
    """Register how to bind ``annotation`` from a YAML node."""

    def register(function: Converter) -> Converter:
        CONVERTERS[annotation] = function
        return function

    return register


class Binder:
    """Turns YAML nodes into settings objects, recording problems instead of stopping."""

    def __init__(self, file: str, environ: Mapping[str, str] | None = None) -> None:
        self.file = file
        self.environ = environ
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        """What is allowed but almost surely a mistake (a filter no message can pass)."""
        self.marks: dict[int, Mark] = {}
        """Position of every bound settings object, by ``id()``, for later cross-checks."""

    def mark(self, node: yaml.Node) -> Mark:
        return Mark.of(node, self.file)

    def problem(
        self, node: yaml.Node | None, message: str, value: Any = None, hint: str | None = None
    ) -> Any:
        where = self.mark(node) if node is not None else None
        shown = None if value is None else str(value)
        self.problems.append(Problem(where, message, shown, hint))
        return INVALID

    def warn(
        self, node: yaml.Node, message: str, value: Any = None, hint: str | None = None
    ) -> None:
        """Record a warning: the value is bound all the same."""
        self.warnings.append(
            Problem(self.mark(node), message, None if value is None else str(value), hint)
        )

    def scalar(self, node: yaml.Node, what: str) -> str | Any:
        """A scalar's text after ``${VAR}`` interpolation."""
        if not isinstance(node, yaml.ScalarNode):
            return self.problem(node, f"{what} must be a single value, not a {_kind(node)}")
        text, missing = interpolate(node.value, self.environ)
        for name in missing:
            if name.startswith("file:"):
                self.problem(node, f"the file {name[5:]} cannot be read", node.value)
                continue
            self.problem(
                node,
                f"environment variable {name} is not set",
                node.value,
                f"set {name} or give a default: ${{{name}:-value}}",
            )
        return INVALID if missing else text

    def bind(self, node: yaml.Node, annotation: Any, what: str) -> Any:
        """Convert ``node`` to ``annotation``; on a problem record it and return INVALID."""
        custom = CONVERTERS.get(annotation)
        if custom is not None:
            return custom(self, node, what)
        origin = get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in get_args(annotation) if a is not type(None)]
            if _is_null(node):
                return None
            if len(options) == 1:
                return self.bind(node, options[0], what)
            return self._bind_union(node, options, what)
        if dataclasses.is_dataclass(annotation):
            return self.bind_object(node, annotation, what)
        if origin is list:
            (item_type,) = get_args(annotation)
            if _is_null(node):
                return []
            if not isinstance(node, yaml.SequenceNode):
                return self.problem(node, f"{what} must be a list, not a {_kind(node)}")
            items = [self.bind(child, item_type, f"{what} item") for child in node.value]
            return INVALID if any(i is INVALID for i in items) else items
        if origin is dict:
            _, value_type = get_args(annotation)
            return self.bind_mapping(node, value_type, what)
        if origin is Literal:
            text = self.scalar(node, what)
            if text is INVALID:
                return INVALID
            allowed = [str(a) for a in get_args(annotation)]
            if text not in allowed:
                return self.problem(
                    node,
                    f"{what} must be one of {', '.join(allowed)}",
                    text,
                    closest(text, allowed),
                )
            return text
        if annotation is Any:
            return _plain(node)
        return self._bind_scalar(node, annotation, what)

    def bind_mapping(self, node: yaml.Node, value_type: Any, what: str) -> dict[str, Any] | Any:
        before = len(self.problems)
        entries = self.bind_entries(node, value_type, what)
        if entries is INVALID or len(self.problems) > before:
            return INVALID
        return entries

    def bind_entries(self, node: yaml.Node, value_type: Any, what: str) -> dict[str, Any] | Any:
        """A mapping of names, each bound on its own: an entry with a problem is INVALID (its
        problems recorded), the others are kept, and a name given twice keeps its first entry.
        INVALID when ``node`` is no mapping."""
        if _is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            return self.problem(node, f"{what} must be a mapping of names, not a {_kind(node)}")
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in result:
                self.problem(key_node, f"{what} {key!r} is defined twice", key)
                continue
            value = self.bind(value_node, value_type, f"{what} {key!r}")
            if (
                dataclasses.is_dataclass(value)
                and not isinstance(value, type)
                and any(f.name == "name" for f in dataclasses.fields(value))
            ):
                value = dataclasses.replace(value, name=key)
                self.marks[id(value)] = self.mark(key_node)
            result[key] = value
        return result

    def bind_object(self, node: yaml.Node, cls: Any, what: str) -> Any:
        primary = getattr(cls, "PRIMARY", None)
        if not isinstance(node, yaml.MappingNode):
            if primary is not None and not _is_null(node):
                # Shorthand: `delete_segments: [NK1, AL1]` is `{segments: [NK1, AL1]}`.
                primary_key = yaml.ScalarNode(
                    "tag:yaml.org,2002:str", primary, node.start_mark, node.end_mark
                )
                node = yaml.MappingNode(
                    "tag:yaml.org,2002:map", [(primary_key, node)], node.start_mark, node.end_mark
                )
            elif _is_null(node) and _all_optional(cls):
                node = yaml.MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)
            else:
                return self.problem(node, f"{what} must be a mapping, not a {_kind(node)}")
        hints = typing.get_type_hints(cls)
        fields = {yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
        settable = {k: f for k, f in fields.items() if f.name != "name" or k != "name"}
        values: dict[str, Any] = {}
        ok = True
        seen: set[str] = set()
        for key_node, value_node in node.value:
            name = str(key_node.value)
            field = settable.get(name)
            if field is None:
                self.problem(
                    key_node,
                    f"unknown key {name!r} in {what}",
                    name,
                    closest(name, list(settable)) or f"allowed keys: {', '.join(settable)}",
                )
                ok = False
                continue
            if name in seen:
                self.problem(key_node, f"key {name!r} appears twice in {what}", name)
                ok = False
                continue
            seen.add(name)
            value = self.bind(value_node, hints[field.name], f"{what}: {name}")
            ok = ok and value is not INVALID
            values[field.name] = value
        for key, field in settable.items():
            if field.name in values or field.name == "name":
                continue
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                self.problem(node, f"{what} is missing required key {key!r}")
                ok = False
        if not ok:
            return INVALID
        if "name" in fields and "name" not in values:
            values["name"] = ""
        obj = cls(**values)
        self.marks[id(obj)] = self.mark(node)
        check = getattr(obj, "check", None)
        if check is not None:
            for message, hint in check():
                self.problem(node, f"{what}: {message}", hint=hint)
                ok = False
        return obj if ok else INVALID

    def _bind_union(self, node: yaml.Node, options: list[Any], what: str) -> Any:
        for option in options:
            trial = Binder(self.file, self.environ)
            value = trial.bind(node, option, what)
            if value is not INVALID:
                self.marks.update(trial.marks)
                self.warnings.extend(trial.warnings)
                return value
        names = " or ".join(_type_name(o) for o in options)
        return self.problem(node, f"{what} must be {names}", _plain(node))

    def _bind_scalar(self, node: yaml.Node, annotation: Any, what: str) -> Any:
        text = self.scalar(node, what)
        if text is INVALID:
            return INVALID
        try:
            if annotation is bool:
                lowered = text.strip().lower()
                if lowered in ("true", "yes", "on", "1"):
                    return True
                if lowered in ("false", "no", "off", "0"):
                    return False
                raise ValueError("expected true or false")
            if annotation in (Duration, ByteSize):
                return annotation.parse(text)
            if annotation is int:
                return int(text.strip())
            if annotation is float:
                return float(text.strip())
            if annotation is str:
                return text
            if annotation is Path:
                # Relative to the file that names it, as a route's template file is.
                path = Path(text.strip()).expanduser()
                return path if path.is_absolute() else Path(self.file).parent / path
        except ValueError as error:
            message = str(error)
            if annotation in (int, float):
                message = f"expected a {'whole ' if annotation is int else ''}number"
            return self.problem(node, f"{what}: {message}", text)
        raise TypeError(f"unsupported settings type {annotation!r}")


def closest(word: str, options: list[str]) -> str | None:
    """A 'did you mean …?' hint for a misspelt word, or None."""
    match = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f"did you mean {match[0]!r}?" if match else None


def _is_null(node: yaml.Node) -> bool:
    return (
        isinstance(node, yaml.ScalarNode)
        and node.tag == "tag:yaml.org,2002:null"
        and node.value in ("", "~", "null", "Null", "NULL")
    )


def _all_optional(cls: Any) -> bool:
    return all(
        f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        for f in dataclasses.fields(cls)
        if f.init and f.name != "name"
    )


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    return "single value"


def _plain(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return node.value
    if isinstance(node, yaml.SequenceNode):
        return [_plain(n) for n in node.value]
    return {str(k.value): _plain(v) for k, v in node.value}


def _type_name(annotation: Any) -> str:
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    if get_origin(annotation) is list:
        return "a list"
    return {str: "text", int: "a whole number", float: "a number", bool: "true or false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )
