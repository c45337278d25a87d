"""Jinja2 templates for computed values and whole messages, in a sandbox.

Templates run in Jinja2's ``SandboxedEnvironment`` with ``StrictUndefined``: a template cannot
reach Python internals, and a misspelt name is an error, never a silent empty string. They see:

- ``field('PID-3.1')`` — a value (escape sequences resolved), ``fields('OBX[*]-5')`` — all of them;
- ``raw('PID-5')`` — a field as written, to copy structure into a message template;
- ``lookup('procedure_codes', 'code', OBR_4_1, 'modality')`` — a value from a mapping table
  (an error if the key is missing, unless a fifth argument gives a default); only the tables of
  the mappings folder, by name (:class:`engine.routes.tables.Mappings`);
- ``now()`` — the current time as an HL7 timestamp, ``now('%Y%m%d')`` in another format;
- ``new_control_id()`` — a fresh MSH-10.

In a whole-message template every ``{{ … }}`` is escaped for HL7 (``|`` becomes ``\\F\\`` …)
except what ``raw()`` returns, so a value can never split a field.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from engine.errors import CrosswalkError
from engine.hl7v2.ack import new_control_id
from engine.hl7v2.escaping import escape
from engine.hl7v2.fieldpath import FieldPath, PathError
from engine.hl7v2.header import Delimiters
from engine.hl7v2.message import Message
from engine.routes.mappings import MappingError, Mappings


class TemplateError(CrosswalkError, ValueError):
    """A template failed to compile or to render; ``line`` is its line (1-based) if known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class Raw(str):
    """Text already in HL7 form; message templates do not escape it."""


_MISSING = object()


MAX_OUTPUT = 1024 * 1024
"""Characters a template may produce (a message is at most a listener's size limit); a template
that builds more, or a value longer than this, is stopped with a TemplateError."""


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox (no attributes of Python internals, no files, no modules), with
    ``*`` and ``**`` bounded: ``'x' * 10**9`` would exhaust memory before any check."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > 64:
                raise TemplateError("template failed: an exponent over 64")
            return left**right
        if isinstance(left, int) and isinstance(right, str | list | tuple):
            left, right = right, left
        sized = isinstance(left, str | list | tuple) and isinstance(right, int)
        if sized and len(left) * right > MAX_OUTPUT:
            raise TemplateError(f"template failed: a value over {MAX_OUTPUT} characters")
        return left * right


def _environment(finalize: Callable[..., Any] | None) -> SandboxedEnvironment:
    return _Sandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        finalize=finalize,
    )


FIELD_ENVIRONMENT = _environment(None)


def compile_template(text: str, *, whole_message: bool = False) -> jinja2.Template:
    """Compile, raising :class:`TemplateError` with the line of a syntax error."""
    environment = MESSAGE_ENVIRONMENT if whole_message else FIELD_ENVIRONMENT
    try:
        return environment.from_string(text)
    except jinja2.TemplateSyntaxError as error:
        raise TemplateError(f"template syntax error: {error.message}", error.lineno) from None


@jinja2.pass_context
def _finalize_escaped(context: jinja2.runtime.Context, value: Any) -> Any:
    if isinstance(value, Raw) or value is None:
        return value
    delimiters = context.get("_delimiters") or Delimiters()
    return escape(str(value), delimiters)


MESSAGE_ENVIRONMENT = _environment(_finalize_escaped)


def context(message: Message, tables: Mappings) -> dict[str, Any]:
    """The names a template can use for ``message``."""

    def path(text: str) -> FieldPath:
        try:
            return FieldPath.parse(text)
        except PathError as error:
            raise TemplateError(str(error)) from None

    def lookup(
        table: str, key_column: str, key: Any, value_column: str, default: Any = _MISSING
    ) -> str:
        try:
            found = tables.get(str(table)).lookup(key_column, value_column, str(key))
        except MappingError as error:
            raise TemplateError(str(error)) from None
        if found is None:
            if default is _MISSING:
                raise TemplateError(f"{key!r} is not in column {key_column} of table {table}")
            return str(default)
        return found

    def now(fmt: str = "%Y%m%d%H%M%S") -> str:
        return datetime.now().astimezone().strftime(fmt)

    return {
        "_delimiters": message.delimiters,
        "field": lambda text: message.value(path(text)),
        "fields": lambda text: message.values(path(text)),
        "raw": lambda text: Raw(message.value(path(text))),
        "lookup": lookup,
        "now": now,
        "new_control_id": new_control_id,
    }


def render(template: jinja2.Template, message: Message, tables: Mappings) -> str:
    """Render ``template`` for ``message``; errors become :class:`TemplateError`, and output
    beyond ``MAX_OUTPUT`` characters stops it."""
    try:
        parts: list[str] = []
        size = 0
        for part in template.generate(context(message, tables)):
            size += len(part)
            if size > MAX_OUTPUT:
                raise TemplateError(f"template failed: its output is over {MAX_OUTPUT} characters")
            parts.append(part)
        return "".join(parts)
    except TemplateError:
        raise
    except jinja2.UndefinedError as error:
        raise TemplateError(f"template uses an undefined name: {error.message}") from None
    except jinja2.TemplateError as error:
        raise TemplateError(f"template failed: {error}") from None
    except Exception as error:  # a sandbox violation or a bad filter argument
        raise TemplateError(f"template failed: {type(error).__name__}: {error}") from None
