"""Loading a configuration folder: every ``*.yaml`` file in it, merged and checked."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from engine.config.binding import INVALID, Binder
from engine.config.model import EngineConfig, ListenerSettings
from engine.config.source import ConfigError, Mark, Problem, compose_file

SECTIONS: dict[str, Any] = {"listeners": ListenerSettings}
"""Top-level keys of a configuration file and the settings class of their entries."""


def config_files(path: Path) -> list[Path]:
    """The YAML files a configuration folder (or single file) consists of, in load order."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ConfigError([Problem(None, f"{path}: no such configuration folder or file")])
    return sorted(
        p
        for p in path.iterdir()
        if p.suffix in (".yaml", ".yml") and p.is_file() and not p.stem.endswith("_test")
    )


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> EngineConfig:
    """Read, interpolate, bind and cross-check a configuration; raise listing every problem."""
    folder = Path(path)
    problems: list[Problem] = []
    merged: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    origins: dict[tuple[str, str], Mark] = {}
    files = config_files(folder)
    for file in files:
        try:
            root = compose_file(file)
        except ConfigError as error:
            problems.extend(error.problems)
            continue
        if root is None:
            continue
        binder = Binder(str(file), environ)
        if not isinstance(root, yaml.MappingNode):
            binder.problem(root, "a configuration file must be a mapping of sections")
            problems.extend(binder.problems)
            continue
        for key_node, value_node in root.value:
            section = str(key_node.value)
            if section not in SECTIONS:
                binder.problem(
                    key_node,
                    f"unknown section {section!r}",
                    section,
                    f"sections are: {', '.join(SECTIONS)}",
                )
                continue
            entries = binder.bind_mapping(value_node, SECTIONS[section], section[:-1])
            if entries is INVALID:
                continue
            for name, value in entries.items():
                mark = binder.marks.get(id(value), binder.mark(value_node))
                earlier = origins.get((section, name))
                if earlier is not None:
                    binder.problems.append(
                        Problem(mark, f"{section[:-1]} {name!r} is already defined at {earlier}")
                    )
                    continue
                origins[(section, name)] = mark
                merged[section][name] = value
        problems.extend(binder.problems)
    listeners: dict[str, ListenerSettings] = merged["listeners"]
    problems.extend(_check_ports(listeners, origins))
    if not problems and not listeners:
        problems.append(
            Problem(
                None, f"{folder}: no listeners are configured", hint="add a `listeners:` section"
            )
        )
    if problems:
        raise ConfigError(problems)
    return EngineConfig(listeners=listeners, files=tuple(str(f) for f in files))


def _check_ports(
    listeners: dict[str, ListenerSettings], origins: dict[tuple[str, str], Mark]
) -> list[Problem]:
    problems = []
    taken: dict[tuple[str, int], str] = {}
    for name, listener in listeners.items():
        if listener.port == 0:
            continue
        key = (listener.host, listener.port)
        if key in taken:
            problems.append(
                Problem(
                    origins.get(("listeners", name)),
                    f"listener {name!r} uses {listener.host}:{listener.port}, as does"
                    f" listener {taken[key]!r}",
                )
            )
        taken[key] = name
    return problems
