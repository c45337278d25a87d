"""Reference documentation generated from the settings classes, so docs cannot drift.

``python -m engine.config.reference`` rewrites the generated blocks in ``docs/``; a test fails
when a committed block differs from what the code says.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

from engine.audit.actions import ACTIONS
from engine.audit.settings import SyslogSettings
from engine.merge_targets.settings import MergeTargetSettings
from engine.mllp.tls import ClientTLS, ListenerTLS
from engine.observability.settings import AdminSettings
from engine.pipeline.settings import DestinationSettings, ListenerSettings
from engine.reconcile.settings import ReconcilerSettings
from engine.retention.settings import Periods, RetentionSettings
from engine.review.settings import ReviewSettings
from engine.routes.conditions import OPERATORS
from engine.routes.model import RouteSettings, RouteTarget
from engine.routes.steps import STEPS
from engine.settings import ByteSize, Duration, yaml_key
from engine.store.settings import StoreSettings
from engine.studies.settings import ArchiveSettings
from engine.users.settings import ConsoleSettings, OidcSettings


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default is dataclasses.MISSING:
        if field.default_factory is dataclasses.MISSING:
            return "required"
        return f"`{field.default_factory()!r}`".replace("'", "")
    value = field.default
    if value is None:
        return "—"
    if value == "":
        return '`""`'
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, Duration):
        seconds = float(value)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds and seconds % size == 0:
                return f"`{int(seconds // size)}{unit}`"
        return f"`{seconds:g}s`"
    if isinstance(value, ByteSize):
        return f"`{int(value) // 1024}KiB`" if value % (1024 * 1024) else f"`{value >> 20}MiB`"
    return f"`{value}`"


def settings_table(cls: Any) -> str:
    """A Markdown table of a settings class: key, default, example, description."""
    rows = ["| key | default | example | what it does |", "|---|---|---|---|"]
    for field in dataclasses.fields(cls):
        if field.name == "name" or not field.init:
            continue
        example = field.metadata.get("example")
        shown = f"`{example}`".replace("|", "\\|") if example is not None else ""
        rows.append(
            f"| `{yaml_key(field)}` | {_default(field)} | {shown} |"
            f" {field.metadata['description']} |"
        )
    return "\n".join(rows)


def steps_reference() -> str:
    """Every step: its YAML key, what it does, and its settings."""
    parts = []
    for key, cls in STEPS.items():
        doc = " ".join((cls.__doc__ or "").split())
        primary = getattr(cls, "PRIMARY", None)
        shorthand = (
            f" Shorthand: `{key}: <{primary}>` stands for `{key}: {{{primary}: <{primary}>}}`."
            if primary
            else ""
        )
        parts.append(f"### `{key}`\n\n{doc}{shorthand}\n\n{settings_table(cls)}")
    return "\n\n".join(parts)


def operators_table() -> str:
    rows = ["| operator | takes | holds when the field … | example |", "|---|---|---|---|"]
    for operator in OPERATORS.values():
        rows.append(
            f"| `{operator.key}` | {operator.takes} | {operator.meaning} | `{operator.example}` |"
        )
    return "\n".join(rows)


def actions_table() -> str:
    """Every action the audit trail records."""
    rows = ["| action | what it records |", "|---|---|"]
    rows += [f"| `{name}` | {meaning} |" for name, meaning in ACTIONS.items()]
    return "\n".join(rows)


BLOCKS: dict[str, Any] = {
    "listener-settings": lambda: settings_table(ListenerSettings),
    "destination-settings": lambda: settings_table(DestinationSettings),
    "listener-tls-settings": lambda: settings_table(ListenerTLS),
    "store-settings": lambda: settings_table(StoreSettings),
    "destination-tls-settings": lambda: settings_table(ClientTLS),
    "archive-settings": lambda: settings_table(ArchiveSettings),
    "reconciler-settings": lambda: settings_table(ReconcilerSettings),
    "review-settings": lambda: settings_table(ReviewSettings),
    "merge-target-settings": lambda: settings_table(MergeTargetSettings),
    "route-settings": lambda: settings_table(RouteSettings),
    "route-target-settings": lambda: settings_table(RouteTarget),
    "audit-syslog-settings": lambda: settings_table(SyslogSettings),
    "audit-actions": actions_table,
    "admin-settings": lambda: settings_table(AdminSettings),
    "retention-settings": lambda: settings_table(RetentionSettings),
    "console-settings": lambda: settings_table(ConsoleSettings),
    "console-oidc-settings": lambda: settings_table(OidcSettings),
    "retention-periods": lambda: settings_table(Periods),
    "steps": steps_reference,
    "operators": operators_table,
}
"""Generated block name (``<!-- generated:NAME -->``) → what renders it."""


def render(text: str) -> str:
    """``text`` with every generated block replaced by what the code says now."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<!-- generated:{name} -->\n{BLOCKS[name]()}\n<!-- end:{name} -->"

    return re.sub(r"<!-- generated:([\w-]+) -->.*?<!-- end:\1 -->", replace, text, flags=re.DOTALL)


def main(folder: str = "docs") -> None:
    for path in sorted(Path(folder).glob("*.md")):
        text = path.read_text(encoding="utf-8")
        updated = render(text)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"updated {path}")


if __name__ == "__main__":
    main(*sys.argv[1:])
