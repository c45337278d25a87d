"""What each role may see and do in the console."""

from __future__ import annotations

from engine.users.accounts import Role

ANALYST_AND_ADMIN = frozenset({Role.ANALYST, Role.ADMIN})
REVIEWER_AND_ADMIN = frozenset({Role.REVIEWER, Role.ADMIN})


class Permission:
    """A permission names what it allows; each maps to the roles that have it."""

    DASHBOARD = "dashboard"
    """The engine at a glance: listeners, routes, queues (no PHI)."""
    QUEUE_CONTROL = "queue control"
    """Pause, resume and retry a destination's queue."""
    MESSAGES = "messages"
    """Find, read and resend messages (PHI)."""
    ROUTES = "routes"
    """The routes, and testing one on a pasted message."""
    REVIEW = "review"
    """The review worklist: read and decide proposals (PHI)."""
    MPI = "mpi"
    """Patient search and the patient page (PHI)."""
    AUDIT = "audit"
    USERS = "users"


ROLES: dict[str, frozenset[str]] = {
    Permission.DASHBOARD: frozenset(Role.ALL),
    Permission.QUEUE_CONTROL: ANALYST_AND_ADMIN,
    Permission.MESSAGES: ANALYST_AND_ADMIN,
    Permission.ROUTES: ANALYST_AND_ADMIN,
    Permission.REVIEW: REVIEWER_AND_ADMIN,
    Permission.MPI: REVIEWER_AND_ADMIN,
    Permission.AUDIT: frozenset({Role.ADMIN}),
    Permission.USERS: frozenset({Role.ADMIN}),
}
"""Permission → the roles that have it."""


def allowed(role: str, permission: str) -> bool:
    return role in ROLES[permission]


def menu(role: str) -> list[str]:
    """The permissions a role has, in menu order."""
    return [p for p in ROLES if allowed(role, p)]
