"""Recording each command in the audit trail: one ``with audited(...)`` per command.

Who: ``--user`` where the command takes it, else the operating-system user (always recorded
too); from where: this host, the terminal, the SSH client's address; what: the action, the
objects' ids and the filters by name (never a PHI value); the outcome: ok, refused (a non-zero
exit: not found, refused by the rules, bad input) or error. The event is recorded when the
command ends, and exported to the ``audit:`` section's syslog collector, if any, from the
configuration folder the command was given (else ``./routes`` when it exists).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import click
import typer
from sqlalchemy import Engine

from engine.audit.settings import AuditSettings
from engine.audit.syslog import exporter
from engine.audit.tables import Outcome
from engine.audit.trail import Actor, Trail, ref
from engine.cli.common import errors, fail
from engine.config.loader import load_section
from engine.config.model import EngineConfig
from engine.csv_import.importer import ImportReport
from engine.settings import ConfigError

DEFAULT_CONFIG = Path("routes")

UNRECORDED = (
    "the audit event of this command could not be recorded ({}); what it did is done, but not"
    " in the audit trail"
)
UNRECORDED_FAILURE = "the audit event of this failed command could not be recorded either ({})"
ConfigSource = EngineConfig | Path | None
"""The loaded configuration, or a folder to read the ``audit:`` section from (None: ./routes)."""


def audit_settings(config: ConfigSource) -> AuditSettings:
    """The ``audit:`` section: from the configuration loaded, else read alone from the folder
    (so that a problem elsewhere in it never stops the export); defaults without a folder."""
    if isinstance(config, EngineConfig):
        return config.audit
    folder = config or DEFAULT_CONFIG
    if not folder.exists():
        return AuditSettings()
    try:
        settings: AuditSettings = load_section(folder, "audit")
    except ConfigError as error:
        for problem in error.problems:
            errors.print(str(problem), markup=False, soft_wrap=True)
        errors.print(
            f"warning: the audit: section of {folder} cannot be used; this command's audit event"
            " is recorded in the store but not exported",
            markup=False,
            soft_wrap=True,
        )
        return AuditSettings()
    return settings


def command_trail(store: Engine, *, user: str | None = None, config: ConfigSource = None) -> Trail:
    """The trail of the person running this command (``user``: the ``--user`` given)."""
    return Trail(store, Actor.current(user), exporter(audit_settings(config)))


def record(
    trail: Trail,
    action: str,
    *,
    objects: Iterable[str] = (),
    criteria: Mapping[str, str] | None = None,
    outcome: str = Outcome.OK,
    detail: str = "",
) -> None:
    """Record one event now (a decision, a proposal shown by ``review next``); if it cannot be
    stored, say so and exit 2."""
    try:
        trail.record(action, objects=objects, criteria=criteria, outcome=outcome, detail=detail)
    except Exception as failure:
        fail(UNRECORDED.format(type(failure).__name__))


class Audit:
    """What a command records about itself, filled in as it goes."""

    def __init__(
        self, trail: Trail, action: str, objects: Iterable[str], criteria: Mapping[str, str]
    ) -> None:
        self.trail = trail
        self.action = action
        self.objects = list(objects)
        self.criteria = dict(criteria)
        self.outcome: str | None = None
        self.detail = ""

    def add(self, kind: str, *keys: object) -> None:
        """Objects the command acted on or showed (``add("message", 12, 13)``)."""
        self.objects.extend(ref(kind, key) for key in keys)

    def refuse(self, detail: str) -> None:
        """Recorded as refused, with ``detail`` (words without PHI)."""
        self.outcome, self.detail = Outcome.REFUSED, detail

    def done(self, detail: str) -> None:
        """Recorded as ok with ``detail`` (counts), even if the command then exits non-zero
        (an import that skipped bad rows)."""
        self.outcome, self.detail = Outcome.OK, detail

    def save(self, outcome: str, detail: str) -> None:
        self.trail.record(
            self.action,
            objects=self.objects,
            criteria=self.criteria,
            outcome=outcome,
            detail=detail,
        )


_EXITS = (typer.Exit, click.exceptions.Exit)
_ABORTS = (KeyboardInterrupt, typer.Abort, click.exceptions.Abort)


def _exit_code(error: BaseException) -> int | None:
    """The exit status an exit exception stands for; None for other exceptions."""
    if isinstance(error, _EXITS):
        return int(error.exit_code)
    if isinstance(error, SystemExit):  # rich's answer to a closed pipe, among others
        return error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    return None


def _ended(audit: Audit, error: BaseException) -> tuple[str, str]:
    """The outcome of a command that ended with ``error`` (an exit status is one)."""
    code = _exit_code(error)
    if isinstance(error, _EXITS):
        if audit.outcome is not None:
            return audit.outcome, audit.detail
        if code == 0:
            return Outcome.OK, audit.detail
        return Outcome.REFUSED, f"exit status {code}"
    if code is not None:
        return (Outcome.OK, audit.detail) if code == 0 else (Outcome.ERROR, f"exit status {code}")
    if isinstance(error, _ABORTS):
        return Outcome.ERROR, "interrupted"
    if isinstance(error, click.exceptions.ClickException):
        return Outcome.REFUSED, "bad parameter"  # its text may quote what was typed
    return Outcome.ERROR, type(error).__name__


@contextmanager
def audited(
    store: Engine,
    action: str,
    *,
    objects: Iterable[str] = (),
    criteria: Mapping[str, str] | None = None,
    user: str | None = None,
    config: ConfigSource = None,
) -> Iterator[Audit]:
    """Record ``action`` when the block ends, with its outcome. If the event cannot be stored
    the command fails (exit 2) saying so, unless it failed already."""
    audit = Audit(command_trail(store, user=user, config=config), action, objects, criteria or {})
    try:
        yield audit
    except BaseException as error:
        outcome, detail = _ended(audit, error)
        clean = _exit_code(error) == 0
        _save(audit, outcome, detail, strict=clean)
        raise
    _save(audit, audit.outcome or Outcome.OK, audit.detail, strict=True)


def _save(audit: Audit, outcome: str, detail: str, *, strict: bool) -> None:
    """Store the event; if it cannot be, say so (and, ``strict``, exit 2)."""
    try:
        audit.save(outcome, detail)
    except Exception as failure:
        if strict:
            fail(UNRECORDED.format(type(failure).__name__))
        text = UNRECORDED_FAILURE.format(type(failure).__name__)
        errors.print(f"error: {text}", markup=False, soft_wrap=True)


def imported(report: ImportReport) -> str:
    """An import's counts, for its audit event."""
    return (
        f"{report.rows} row(s): {report.created} created, {report.updated} updated,"
        f" {report.unchanged} unchanged, {report.skipped} bad row(s) skipped"
    )
