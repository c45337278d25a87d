"""The engine's configuration, assembled: listeners, destinations, routes, archives, and the
reconciler's, review's and audit's sections, each typed by the part that owns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.audit.settings import AuditSettings
from engine.observability.settings import AdminSettings
from engine.pipeline.settings import DestinationSettings, ListenerSettings
from engine.reconcile.settings import ReconcilerSettings
from engine.retention.settings import RetentionSettings
from engine.review.settings import SOURCE as REVIEW_SOURCE
from engine.review.settings import ReviewSettings
from engine.routes.mappings import Mappings
from engine.routes.model import RouteSettings
from engine.settings import Problem
from engine.store.settings import StoreSettings
from engine.studies.settings import ArchiveSettings
from engine.users.settings import ConsoleSettings

__all__ = [
    "BUILT_IN_DESTINATIONS",
    "BUILT_IN_SOURCES",
    "ArchiveSettings",
    "DestinationSettings",
    "EngineConfig",
    "ListenerSettings",
]

BUILT_IN_DESTINATIONS = {
    "drop": "keep the message as filtered by this route, send nothing",
    "mpi": "apply ADT and orders to the master patient index",
}
BUILT_IN_SOURCES = {
    REVIEW_SOURCE: "merge messages of proposals approved with `crosswalk review`",
}


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine runs with, merged from the YAML files of a folder."""

    listeners: dict[str, ListenerSettings] = field(default_factory=dict)
    destinations: dict[str, DestinationSettings] = field(default_factory=dict)
    routes: dict[str, RouteSettings] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    mappings: Path = Path("mappings")
    """The folder of mapping tables."""
    tables: Mappings | None = field(default=None, compare=False, repr=False)
    """The mapping tables checked while loading."""
    archives: dict[str, ArchiveSettings] = field(default_factory=dict)
    """PACS whose studies ``studies pull`` copies into the study index."""
    reconciler: ReconcilerSettings = field(default_factory=ReconcilerSettings)
    """How ``reconcile run`` scores orphaned studies (the ``reconciler:`` section)."""
    review: ReviewSettings = field(default_factory=ReviewSettings)
    """What an approved proposal sends to the PACS (the ``review:`` section)."""
    audit: AuditSettings = field(default_factory=AuditSettings)
    """Where audit events are exported as they are recorded (the ``audit:`` section)."""
    store: StoreSettings = field(default_factory=StoreSettings)
    """How the store keeps message content (the ``store:`` section)."""
    admin: AdminSettings | None = None
    """The admin HTTP endpoint: metrics, health, status (the ``admin:`` section; None: off)."""
    retention: RetentionSettings | None = None
    """How long messages are kept, pruned by the engine (the ``retention:`` section; None:
    kept for ever)."""
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    """The web console that ``crosswalk console`` serves (the ``console:`` section)."""
    warnings: tuple[Problem, ...] = field(default=(), compare=False)
    """What is allowed but almost surely a mistake (a filter on a message type HL7 does not
    define), each with its file and line."""

    @classmethod
    def default(cls) -> EngineConfig:
        """One listener on 127.0.0.1:2575, used when no configuration folder is given."""
        return cls(listeners={"default": ListenerSettings(name="default")})
