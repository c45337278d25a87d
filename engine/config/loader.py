"""Loading a configuration folder: every ``*.yaml`` file in it, merged and checked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from engine.audit.settings import AuditSettings
from engine.config.model import (
    BUILT_IN_DESTINATIONS,
    BUILT_IN_SOURCES,
    ArchiveSettings,
    DestinationSettings,
    EngineConfig,
    ListenerSettings,
)
from engine.reconcile.settings import ReconcilerSettings
from engine.review.settings import ReviewSettings
from engine.routes import syntax as _syntax  # noqa: F401  (registers the route converters)
from engine.routes.mappings import MappingError, Mappings
from engine.routes.model import RouteSettings
from engine.settings import INVALID, Binder, ConfigError, Mark, Problem, compose_file
from engine.store.settings import StoreSettings

SECTIONS: dict[str, Any] = {
    "listeners": ListenerSettings,
    "destinations": DestinationSettings,
    "routes": RouteSettings,
    "archives": ArchiveSettings,
}
"""Top-level keys of a configuration file and the settings class of their entries."""
SINGLETONS: dict[str, Any] = {
    "reconciler": ReconcilerSettings,
    "review": ReviewSettings,
    "audit": AuditSettings,
    "store": StoreSettings,
}
"""Top-level keys that hold one settings object (defaults apply when no file has the key)."""

MAPPINGS_ENV = "CROSSWALK_MAPPINGS"


def mappings_folder(config: Path, environ: Mapping[str, str]) -> Path:
    """Where mapping tables live: $CROSSWALK_MAPPINGS, else `mappings/` beside the config folder."""
    if environ.get(MAPPINGS_ENV):
        return Path(environ[MAPPINGS_ENV])
    folder = config if config.is_dir() else config.parent
    return folder.resolve().parent / "mappings"


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
    env = os.environ if environ is None else environ
    folder = Path(path)
    problems: list[Problem] = []
    merged: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    origins: dict[tuple[str, str], Mark] = {}
    marks: dict[int, Mark] = {}
    singles: dict[str, Any] = {}
    files = config_files(folder)
    for file in files:
        try:
            root = compose_file(file)
        except ConfigError as error:
            problems.extend(error.problems)
            continue
        if root is None:
            continue
        binder = Binder(str(file), env)
        if not isinstance(root, yaml.MappingNode):
            binder.problem(root, "a configuration file must be a mapping of sections")
            problems.extend(binder.problems)
            continue
        for key_node, value_node in root.value:
            section = str(key_node.value)
            if section in SINGLETONS:
                _bind_single(binder, section, key_node, value_node, singles, origins)
                continue
            if section not in SECTIONS:
                binder.problem(
                    key_node,
                    f"unknown section {section!r}",
                    section,
                    f"sections are: {', '.join([*SECTIONS, *SINGLETONS])}",
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
        marks.update(binder.marks)
    listeners: dict[str, ListenerSettings] = merged["listeners"]
    destinations: dict[str, DestinationSettings] = merged["destinations"]
    routes: dict[str, RouteSettings] = merged["routes"]
    archives: dict[str, ArchiveSettings] = merged["archives"]
    tables = Mappings(mappings_folder(folder, env))
    problems.extend(_check_ports(listeners, origins))
    for section, reserved, built_in in (
        ("destinations", destinations, BUILT_IN_DESTINATIONS),
        ("listeners", listeners, BUILT_IN_SOURCES),
    ):
        for name in built_in:
            if name in reserved:
                problems.append(
                    Problem(
                        origins.get((section, name)),
                        f"{section[:-1]} name {name!r} is reserved for the built-in one",
                    )
                )
    if not problems:
        problems.extend(_check_routes(routes, listeners, destinations, tables, origins, marks))
    if not problems and not listeners:
        problems.append(
            Problem(
                None, f"{folder}: no listeners are configured", hint="add a `listeners:` section"
            )
        )
    if problems:
        raise ConfigError(problems)
    return EngineConfig(
        listeners=listeners,
        destinations=destinations,
        routes=routes,
        files=tuple(str(f) for f in files),
        mappings=tables.folder,
        tables=tables,
        archives=archives,
        reconciler=singles.get("reconciler", ReconcilerSettings()),
        review=singles.get("review", ReviewSettings()),
        audit=singles.get("audit", AuditSettings()),
        store=singles.get("store", StoreSettings()),
    )


def load_section(path: str | Path, section: str, environ: Mapping[str, str] | None = None) -> Any:
    """One section of those holding a single settings object (``audit``, ``review``…), read
    alone: the rest of the configuration is neither bound nor checked. Defaults when no file
    has the section; ``ConfigError`` listing the section's problems."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []
    singles: dict[str, Any] = {}
    origins: dict[tuple[str, str], Mark] = {}
    for file in config_files(Path(path)):
        try:
            root = compose_file(file)
        except ConfigError as error:
            problems.extend(error.problems)
            continue
        if not isinstance(root, yaml.MappingNode):
            continue
        binder = Binder(str(file), env)
        for key_node, value_node in root.value:
            if str(key_node.value) == section:
                _bind_single(binder, section, key_node, value_node, singles, origins)
        problems.extend(binder.problems)
    if problems:
        raise ConfigError(problems)
    return singles.get(section, SINGLETONS[section]())


def _bind_single(
    binder: Binder,
    section: str,
    key_node: yaml.Node,
    value_node: yaml.Node,
    singles: dict[str, Any],
    origins: dict[tuple[str, str], Mark],
) -> None:
    mark = binder.mark(key_node)
    earlier = origins.get((section, ""))
    if earlier is not None:
        binder.problems.append(
            Problem(mark, f"section {section!r} is already defined at {earlier}")
        )
        return
    origins[(section, "")] = mark
    value = binder.bind_object(value_node, SINGLETONS[section], section)
    if value is not INVALID:
        singles[section] = value


def _check_routes(
    routes: dict[str, RouteSettings],
    listeners: dict[str, ListenerSettings],
    destinations: dict[str, DestinationSettings],
    tables: Mappings,
    origins: dict[tuple[str, str], Mark],
    marks: dict[int, Mark],
) -> list[Problem]:
    problems = []
    known = {*destinations, *BUILT_IN_DESTINATIONS}
    for name, route in routes.items():
        where = origins.get(("routes", name))
        for source in route.source:
            if source not in listeners and source not in BUILT_IN_SOURCES:
                problems.append(
                    Problem(
                        where,
                        f"route {name!r}: unknown listener {source!r}",
                        source,
                        f"sources are: {', '.join([*listeners, *BUILT_IN_SOURCES])}",
                    )
                )
        for target in route.destinations:
            if target.destination not in known:
                problems.append(
                    Problem(
                        marks.get(id(target), where),
                        f"route {name!r}: unknown destination {target.destination!r}",
                        target.destination,
                        f"destinations are: {', '.join(sorted(known))}",
                    )
                )
        steps = list(route.steps) + [s for t in route.destinations for s in t.steps]
        for step in steps:
            validate = getattr(step, "validate", None)
            if validate is None:
                continue
            try:
                validate(tables)
            except MappingError as error:
                problems.append(Problem(marks.get(id(step), where), f"route {name!r}: {error}"))
    return problems


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
