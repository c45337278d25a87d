"""Several engines on one PostgreSQL, as ``/status`` shows them.

Each engine writes a short summary of itself (:func:`summary`: its listeners' connections and
messages, its admin endpoint) into its ``engine:`` lease row at every renewal
(:mod:`engine.leases.keeper`); any one engine's ``/status`` reads those rows back
(:func:`engines_document`) with the leases each engine holds, so ``crosswalk status`` on one
engine shows them all. Another engine's figures are as of its last renewal (``--lease-ttl``/4
seconds at most); this engine's own are live. No patient data: names of listeners, counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.leases.records import EngineRow

if TYPE_CHECKING:
    from engine.observability.metrics import EngineMetrics


def iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def listeners_of(metrics: EngineMetrics) -> list[dict[str, Any]]:
    """Each configured listener of this engine: bound, connections, messages, last message."""
    view = metrics.view
    stats = view.listener_stats()
    listeners = []
    for name in view.listener_names():
        listener = stats.get(name)
        activity = metrics.activity.get(name)
        listeners.append(
            {
                "name": name,
                "bound": listener is not None,
                "open_connections": listener.open_connections if listener else 0,
                "connections": listener.connections if listener else 0,
                "refused": (listener.refused + listener.tls_refused) if listener else 0,
                "messages": activity.messages if activity else 0,
                "by_status": dict(activity.by_status) if activity else {},
                "last_message": iso(activity.last_message) if activity else None,
            }
        )
    return listeners


_PUBLISHED = ("name", "bound", "open_connections", "messages", "last_message")


def summary(metrics: EngineMetrics) -> dict[str, Any]:
    """What this engine writes of itself into its lease row (kept short: every renewal)."""
    return {
        "started": iso(metrics.started),
        "admin": metrics.admin_url,
        "listeners": [{key: item[key] for key in _PUBLISHED} for item in listeners_of(metrics)],
    }


def engines_document(
    rows: Sequence[EngineRow], me: str | None, mine: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every engine sharing the store (``me``: this one, whose ``mine`` listeners are live),
    alive first, with the leases each holds."""
    engines = []
    for row in rows:
        info = row.info
        this = row.holder == me
        engines.append(
            {
                "holder": row.holder,
                "host": row.host,
                "pid": row.pid,
                "alive": row.alive,
                "this": this,
                "leases": row.leases,
                "started": info.get("started"),
                "admin": info.get("admin"),
                "listeners": mine if this else info.get("listeners", []),
            }
        )
    engines.sort(key=lambda e: (not e["alive"], e["host"], e["pid"] or 0))
    return engines
