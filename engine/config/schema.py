"""The JSON Schema of configuration files, generated from the settings classes and step specs.

Editors with YAML support (VS Code's YAML extension, JetBrains IDEs) use it to complete keys and
flag mistakes as an analyst types; ``crosswalk routes schema`` prints it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from engine.audit.settings import AuditSettings
from engine.hl7v2.fieldpath import FieldPath
from engine.observability.settings import AdminSettings
from engine.pipeline.settings import DestinationSettings, ListenerSettings
from engine.reconcile.settings import ReconcilerSettings
from engine.retention.settings import RetentionSettings
from engine.review.settings import ReviewSettings
from engine.routes.conditions import OPERATORS, Condition
from engine.routes.model import RouteSettings, RouteTarget
from engine.routes.steps import STEPS, FieldTemplate, MessageTemplate, SegmentId, Step
from engine.settings import ByteSize, Duration, yaml_key
from engine.store.settings import StoreSettings
from engine.studies.settings import ArchiveSettings
from engine.users.settings import ConsoleSettings

PATH_PATTERN = r"^[A-Z][A-Z0-9]{2}(\[(\d+|\*)\])?-\d+(\[(\d+|\*)\])?(\.\d+(\.\d+)?)?$"
_INTERPOLATED = {"type": "string", "pattern": r"\$\{"}


def _type_schema(annotation: Any) -> dict[str, Any]:
    if annotation is FieldPath:
        return {"type": "string", "pattern": PATH_PATTERN, "description": "a field path"}
    if annotation is SegmentId:
        return {"type": "string", "pattern": "^[A-Z][A-Z0-9]{2}$"}
    if annotation in (FieldTemplate, MessageTemplate):
        return {"type": "string"}
    if annotation is Condition:
        return {"$ref": "#/$defs/condition"}
    if annotation is Step:
        return {"$ref": "#/$defs/step"}
    if annotation is RouteTarget:
        return {"anyOf": [{"type": "string"}, _object_schema(RouteTarget)]}
    if annotation is Duration:
        return {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\d+(\.\d+)?\s*(ms|s|m|h|d)?$"},
                _INTERPOLATED,
            ]
        }
    if annotation is ByteSize:
        return {
            "anyOf": [
                {"type": "integer"},
                {"type": "string", "pattern": r"^\d+\s*([KkMmGg]i?[Bb])?$"},
                _INTERPOLATED,
            ]
        }
    if annotation is bool:
        return {"anyOf": [{"type": "boolean"}, _INTERPOLATED]}
    if annotation is int:
        return {"anyOf": [{"type": "integer"}, _INTERPOLATED]}
    if annotation is float:
        return {"anyOf": [{"type": "number"}, _INTERPOLATED]}
    if annotation is str or annotation is Path:
        return {"type": "string"}
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return (
            _type_schema(options[0])
            if len(options) == 1
            else {"anyOf": [_type_schema(o) for o in options]}
        )
    if origin is Literal:
        return {"enum": list(get_args(annotation))}
    if origin is list:
        (item,) = get_args(annotation)
        listed = {"type": "array", "items": _type_schema(item)}
        if item in (str, FieldPath, SegmentId):
            return {"anyOf": [listed, _type_schema(item)]}
        return listed
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(get_args(annotation)[1])}
    if dataclasses.is_dataclass(annotation):
        return _object_schema(annotation)
    raise TypeError(f"no schema for {annotation!r}")


def _object_schema(cls: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required = []
    for field in dataclasses.fields(cls):
        if field.name == "name" or not field.init:
            continue
        schema = dict(_type_schema(hints[field.name]))
        schema["description"] = field.metadata.get("description", "")
        properties[yaml_key(field)] = schema
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(yaml_key(field))
    result: dict[str, Any] = {
        "type": "object",
        "description": (cls.__doc__ or "").strip().split("\n\n")[0],
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        result["required"] = required
    return result


def _step_schema() -> dict[str, Any]:
    options = []
    for key, cls in STEPS.items():
        body = _object_schema(cls)
        primary = getattr(cls, "PRIMARY", None)
        value = body
        if primary is not None:
            value = {"anyOf": [body, body["properties"][primary]]}
        options.append(
            {
                "type": "object",
                "description": body["description"],
                "properties": {key: value},
                "required": [key],
                "additionalProperties": False,
            }
        )
    return {"oneOf": options}


def _condition_schema() -> dict[str, Any]:
    ref = {"$ref": "#/$defs/condition"}
    field_tests = []
    for operator in OPERATORS.values():
        field_tests.append(
            {
                "type": "object",
                "description": f"{{field, {operator.key}}}: the field {operator.meaning}",
                "properties": {"field": _type_schema(FieldPath), operator.key: {}},
                "required": ["field", operator.key],
                "additionalProperties": False,
            }
        )
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "type": {
                        "anyOf": [
                            {"type": "string"},
                            {"type": "array", "items": {"type": "string"}},
                        ]
                    }
                },
                "required": ["type"],
                "additionalProperties": False,
                "description": "MSH-9 matches a pattern: ADT, ADT^A08, ADT^A0*",
            },
            {
                "type": "object",
                "properties": {"segment": _type_schema(SegmentId), "exists": {"type": "boolean"}},
                "required": ["segment"],
                "additionalProperties": False,
            },
            *field_tests,
            {
                "type": "object",
                "properties": {"all": {"type": "array", "items": ref}},
                "required": ["all"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"any": {"type": "array", "items": ref}},
                "required": ["any"],
                "additionalProperties": False,
            },
            {
                "type": "object",
                "properties": {"not": ref},
                "required": ["not"],
                "additionalProperties": False,
            },
            {"type": "array", "items": ref, "description": "all of these"},
        ]
    }


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a Crosswalk configuration file."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://crosswalk.invalid/schemas/config.json",
        "title": "Crosswalk configuration file",
        "type": "object",
        "properties": {
            "listeners": {
                "type": "object",
                "additionalProperties": _object_schema(ListenerSettings),
                "description": "MLLP ports messages come in on, by name.",
            },
            "destinations": {
                "type": "object",
                "additionalProperties": _object_schema(DestinationSettings),
                "description": "MLLP receivers routes send to, by name.",
            },
            "routes": {
                "type": "object",
                "additionalProperties": _object_schema(RouteSettings),
                "description": "Routes, by name.",
            },
            "archives": {
                "type": "object",
                "additionalProperties": _object_schema(ArchiveSettings),
                "description": "PACS whose studies `studies pull` copies into the index, by name.",
            },
            "reconciler": _object_schema(ReconcilerSettings),
            "review": _object_schema(ReviewSettings),
            "audit": _object_schema(AuditSettings),
            "store": _object_schema(StoreSettings),
            "admin": _object_schema(AdminSettings),
            "retention": _object_schema(RetentionSettings),
            "console": _object_schema(ConsoleSettings),
        },
        "additionalProperties": False,
        "$defs": {"condition": _condition_schema(), "step": _step_schema()},
    }
