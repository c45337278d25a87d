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

from engine.config.binding import ByteSize, Duration, yaml_key
from engine.config.model import ListenerSettings

BLOCKS: dict[str, Any] = {"listener-settings": ListenerSettings}
"""Generated block name (``<!-- generated:NAME -->``) → settings class."""


def _default(field: dataclasses.Field[Any]) -> str:
    value = field.default
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
        if field.name == "name":
            continue
        example = field.metadata.get("example")
        rows.append(
            f"| `{yaml_key(field)}` | {_default(field)} | "
            f"{f'`{example}`' if example is not None else ''} | {field.metadata['description']} |"
        )
    return "\n".join(rows)


def render(text: str) -> str:
    """``text`` with every generated block replaced by what the code says now."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return f"<!-- generated:{name} -->\n{settings_table(BLOCKS[name])}\n<!-- end:{name} -->"

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
