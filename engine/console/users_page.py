"""The users page (admins): the accounts, and adding, disabling, re-rolling and resetting the
second factor of one — what ``crosswalk users`` does."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response
from starlette.routing import Route

from engine.audit import actions
from engine.audit.tables import Outcome
from engine.audit.trail import criteria as recorded
from engine.audit.trail import ref
from engine.console.permissions import Permission
from engine.console.visits import Console, Visit, guarded
from engine.users.accounts import (
    AccountError,
    Role,
    accounts,
    add_user,
    disable,
    reset_second_factor,
    set_password,
    set_role,
)


def routes(console: Console) -> list[Route]:
    page = guarded(console, Permission.USERS)
    return [Route("/users", page(users), methods=["GET", "POST"])]


def users(visit: Visit) -> Response:
    message, error = "", ""
    if visit.request.method == "POST":
        try:
            message = _change(visit)
        except AccountError as problem:
            error = str(problem)
    return visit.render(
        "users.html",
        status_code=409 if error else 200,
        found=accounts(visit.store),
        roles=Role.ALL,
        message=message,
        error=error,
    )


def _change(visit: Visit) -> str:
    """Do what the form asks; the words to show. Audited either way."""
    name, verb = visit.field("name"), visit.field("verb")
    store = visit.store
    changes: dict[str, tuple[str, Callable[[], object], str]] = {
        "add": (
            actions.USERS_ADD,
            lambda: add_user(store, name, visit.field("role"), visit.form.get("password", "")),
            f"user {name} added ({visit.field('role')})",
        ),
        "disable": (actions.USERS_DISABLE, lambda: disable(store, name), f"user {name} disabled"),
        "role": (
            actions.USERS_CHANGE,
            lambda: set_role(store, name, visit.field("role")),
            f"user {name}: role {visit.field('role')}",
        ),
        "reset-mfa": (
            actions.USERS_CHANGE,
            lambda: reset_second_factor(store, name),
            f"user {name}: second factor reset",
        ),
        "password": (
            actions.USERS_CHANGE,
            lambda: set_password(store, name, visit.form.get("password", "")),
            f"user {name}: password set",
        ),
    }
    if verb not in changes:
        raise AccountError(f"unknown change {verb!r}")
    action, change, words = changes[verb]
    objects = [ref("user", name)]
    criteria = recorded({"change": verb})
    try:
        change()
    except AccountError as problem:
        visit.audit(
            action, objects=objects, criteria=criteria, outcome=Outcome.REFUSED, detail=str(problem)
        )
        raise
    visit.audit(action, objects=objects, criteria=criteria, detail=words)
    return words
