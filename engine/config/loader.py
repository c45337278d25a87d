"""Loading a configuration folder: every ``*.yaml`` file in it, merged and checked."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
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
from engine.observability.settings import AdminSettings
from engine.reconcile.settings import ReconcilerSettings
from engine.retention.settings import RetentionSettings
from engine.review.settings import ReviewSettings
from engine.routes import syntax as _syntax  # noqa: F401  (registers the route converters)
from engine.routes.mappings import MappingError, Mappings
from engine.routes.model import RouteSettings
from engine.settings import INVALID, Binder, ConfigError, Mark, Problem, compose_file
from engine.store.settings import StoreSettings
from engine.users.settings import ConsoleSettings

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
    "admin": AdminSettings,
    "retention": RetentionSettings,
    "console": ConsoleSettings,
}
"""Top-level keys that hold one settings object (defaults apply when no file has the key)."""

MAPPINGS_ENV = "CROSSWALK_MAPPINGS"


def mappings_places(config: Path, environ: Mapping[str, str]) -> list[tuple[Path, str]]:
    """Where mapping tables are looked for, in order, each with how it was chosen:
    $CROSSWALK_MAPPINGS alone when set; else `mappings/` beside the configuration folder, then
    `mappings/` in the current folder (the project's, for a configuration folder copied
    elsewhere)."""
    if environ.get(MAPPINGS_ENV):
        return [(Path(environ[MAPPINGS_ENV]), f"${MAPPINGS_ENV}")]
    folder = config if config.is_dir() else config.parent
    beside = folder.resolve().parent / "mappings"
    places = [(beside, "beside the configuration folder")]
    try:
        current = (Path.cwd() / "mappings").resolve()
    except OSError:  # the current folder was removed under the process
        return places
    if current != beside:
        places.append((current, "in the current folder"))
    return places


def _mappings(config: Path, environ: Mapping[str, str]) -> Mappings:
    """The mapping tables: from the first of :func:`mappings_places` that exists (the first of
    all when none does, whose tables then say where they were looked for)."""
    places = mappings_places(config, environ)
    folder = next((place for place, _ in places if place.is_dir()), places[0][0])
    looked = " and ".join(f"{place} ({why})" for place, why in places)
    hint = "" if environ.get(MAPPINGS_ENV) else f"; create one or set ${MAPPINGS_ENV}"
    return Mappings(folder, missing=f"no mappings folder: looked in {looked}{hint}")


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
    warnings: list[Problem] = []
    merged: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    origins: dict[tuple[str, str], Mark] = {}
    marks: dict[int, Mark] = {}
    singles: dict[str, Any] = {}
    broken: dict[str, set[str]] = {section: set() for section in SECTIONS}
    """Names defined with problems of their own: not reported again as unknown."""
    incomplete: set[str] = set()
    """Sections some of whose names could not be read: names are then not cross-checked."""
    files = config_files(folder)
    for file in files:
        try:
            root = compose_file(file)
        except ConfigError as error:
            problems.extend(error.problems)
            incomplete.update(SECTIONS)
            continue
        if root is None:
            continue
        binder = Binder(str(file), env)
        if not isinstance(root, yaml.MappingNode):
            binder.problem(root, "a configuration file must be a mapping of sections")
            problems.extend(binder.problems)
            incomplete.update(SECTIONS)
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
            entries = binder.bind_entries(value_node, SECTIONS[section], section[:-1])
            if entries is INVALID:
                incomplete.add(section)
                continue
            for name, value in entries.items():
                if value is INVALID:
                    broken[section].add(name)
                    continue
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
        warnings.extend(binder.warnings)
        marks.update(binder.marks)
    listeners: dict[str, ListenerSettings] = merged["listeners"]
    destinations: dict[str, DestinationSettings] = merged["destinations"]
    routes: dict[str, RouteSettings] = merged["routes"]
    archives: dict[str, ArchiveSettings] = merged["archives"]
    tables = _mappings(folder, env)
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
    # Every check runs on what could be read, so one run reports every kind of problem.
    known = _Known(
        sources=None if "listeners" in incomplete else [*listeners, *broken["listeners"]],
        destinations=(
            None if "destinations" in incomplete else [*destinations, *broken["destinations"]]
        ),
    )
    problems.extend(_check_routes(routes, known, tables, origins, marks))
    review = singles.get("review", ReviewSettings())
    problems.extend(_check_merge_targets(review, destinations, archives, origins, marks))
    if not listeners and not broken["listeners"] and "listeners" not in incomplete:
        problems.append(
            Problem(
                None, f"{folder}: no listeners are configured", hint="add a `listeners:` section"
            )
        )
    if problems:
        raise ConfigError(problems, warnings)
    return EngineConfig(
        listeners=listeners,
        destinations=destinations,
        routes=routes,
        files=tuple(str(f) for f in files),
        mappings=tables.folder,
        tables=tables,
        archives=archives,
        reconciler=singles.get("reconciler", ReconcilerSettings()),
        review=review,
        audit=singles.get("audit", AuditSettings()),
        store=singles.get("store", StoreSettings()),
        admin=singles.get("admin"),
        retention=singles.get("retention"),
        console=singles.get("console", ConsoleSettings()),
        warnings=tuple(warnings),
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


@dataclass(frozen=True)
class _Known:
    """The listener and destination names routes may use (None: not all could be read)."""

    sources: list[str] | None
    destinations: list[str] | None


def _check_routes(
    routes: dict[str, RouteSettings],
    known: _Known,
    tables: Mappings,
    origins: dict[tuple[str, str], Mark],
    marks: dict[int, Mark],
) -> list[Problem]:
    problems = []
    uses: list[Mark | None] = []
    """Steps that need mapping tables, when there is no mappings folder."""
    sources = None if known.sources is None else [*known.sources, *BUILT_IN_SOURCES]
    targets = None if known.destinations is None else [*known.destinations, *BUILT_IN_DESTINATIONS]
    for name, route in routes.items():
        where = origins.get(("routes", name))
        for source in route.source:
            if sources is not None and source not in sources:
                problems.append(
                    Problem(
                        where,
                        f"route {name!r}: unknown listener {source!r}",
                        source,
                        f"sources are: {', '.join(sources)}",
                    )
                )
        for target in route.destinations:
            if targets is not None and target.destination not in targets:
                problems.append(
                    Problem(
                        marks.get(id(target), where),
                        f"route {name!r}: unknown destination {target.destination!r}",
                        target.destination,
                        f"destinations are: {', '.join(sorted(targets))}",
                    )
                )
        steps = list(route.steps) + [s for t in route.destinations for s in t.steps]
        for step in steps:
            validate = getattr(step, "validate", None)
            if validate is None:
                continue
            if not tables.folder.is_dir():
                uses.append(marks.get(id(step), where))
                continue
            try:
                validate(tables)
            except MappingError as error:
                problems.append(Problem(marks.get(id(step), where), f"route {name!r}: {error}"))
    if uses:  # said once, not once per step
        others = f" and {len(uses) - 1} more" if len(uses) > 1 else ""
        problems.append(Problem(uses[0], f"a step uses mapping tables{others}: {tables.missing}"))
    return problems


def _check_merge_targets(
    review: ReviewSettings,
    destinations: dict[str, DestinationSettings],
    archives: dict[str, ArchiveSettings],
    origins: dict[tuple[str, str], Mark],
    marks: dict[int, Mark],
) -> list[Problem]:
    """A merge target's name is its queue's: no destination may have it; an ``archive:`` it
    names must be configured."""
    problems = []
    for name, target in review.merge_targets.items():
        where = marks.get(id(target), origins.get(("review", "")))
        if name in destinations or name in BUILT_IN_DESTINATIONS:
            problems.append(
                Problem(
                    where,
                    f"merge target {name!r} has the name of a destination; the two share the"
                    " queues' names (`crosswalk queue`), so give it another",
                    name,
                )
            )
        if target.archive and target.archive not in archives:
            problems.append(
                Problem(
                    where,
                    f"merge target {name!r}: unknown archive {target.archive!r}",
                    target.archive,
                    f"archives are: {', '.join(archives) or 'none (add an `archives:` section)'}",
                )
            )
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
