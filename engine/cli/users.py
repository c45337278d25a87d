"""``crosswalk users``: the web console's accounts (add, passwd, role, reset-mfa, disable, list).

Passwords are typed twice at a prompt, or read as one line from standard input with
``--password-stdin`` (for scripts); they are never an argument (it would be in the shell's
history and the process list).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from engine.audit import actions
from engine.audit.trail import criteria as recorded
from engine.audit.trail import ref
from engine.cli.auditing import audited
from engine.cli.common import DbOption, console, fail, open_store_or_fail
from engine.cli.tables import Column, fit
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

app = typer.Typer(help="The web console's users: accounts, roles, second factors.")

Name = Annotated[str, typer.Argument(help="The user name they log in with.")]
PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password as one line of stdin.")
]
RoleOption = Annotated[str, typer.Option("--role", help=f"One of: {', '.join(Role.ALL)}.")]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@app.command("add")
def add(
    name: Name, role: RoleOption, password_stdin: PasswordStdin = False, db: DbOption = None
) -> None:
    """Add a user with ROLE; a reviewer or admin enrols a second factor at the first login."""
    store = open_store_or_fail(db)
    password = _password(password_stdin)
    with audited(
        store, actions.USERS_ADD, objects=[ref("user", name)], criteria=recorded({"role": role})
    ) as audit:
        try:
            add_user(store, name, role, password)
        except AccountError as error:
            audit.refuse(str(error))
            fail(str(error))
    console.print(f"user {name} added ({role})")


@app.command("passwd")
def passwd(name: Name, password_stdin: PasswordStdin = False, db: DbOption = None) -> None:
    """Set NAME's password (it also unlocks and re-enables the account)."""
    store = open_store_or_fail(db)
    password = _password(password_stdin)
    _change(store, name, "password set", lambda: set_password(store, name, password))


@app.command("role")
def role(name: Name, new_role: RoleOption, db: DbOption = None) -> None:
    """Give NAME another role."""
    store = open_store_or_fail(db)
    _change(store, name, f"role {new_role}", lambda: set_role(store, name, new_role))


@app.command("reset-mfa")
def reset_mfa(name: Name, db: DbOption = None) -> None:
    """Forget NAME's second factor (a lost phone): they enrol again at the next login."""
    store = open_store_or_fail(db)
    _change(store, name, "second factor reset", lambda: reset_second_factor(store, name))


@app.command("disable")
def disable_user(name: Name, db: DbOption = None) -> None:
    """No more logins for NAME; their open console sessions end at once."""
    store = open_store_or_fail(db)
    with audited(store, actions.USERS_DISABLE, objects=[ref("user", name)]) as audit:
        try:
            disable(store, name)
        except AccountError as error:
            audit.refuse(str(error))
            fail(str(error))
    console.print(f"user {name} disabled")


def _change(store, name: str, words: str, change) -> None:  # type: ignore[no-untyped-def]
    with audited(store, actions.USERS_CHANGE, objects=[ref("user", name)]) as audit:
        try:
            change()
        except AccountError as error:
            audit.refuse(str(error))
            fail(str(error))
        audit.done(words)
    console.print(f"user {name}: {words}")


_COLUMNS = (
    Column("name"),
    Column("role"),
    Column("state"),
    Column("second factor"),
    Column("last login"),
)


@app.command("list")
def list_users(db: DbOption = None) -> None:
    """The console's users, their roles and states."""
    store = open_store_or_fail(db)
    with audited(store, actions.USERS_LIST):
        found = accounts(store)
    if not found:
        console.print("no users; add one with `crosswalk users add NAME --role admin`")
        return
    rows = (
        (
            a.name,
            a.role,
            "disabled" if a.disabled else ("locked" if a.locked_until else "enabled"),
            a.second_factor,
            a.last_login_at.strftime("%Y-%m-%d %H:%M") if a.last_login_at else "never",
        )
        for a in found
    )
    console.print(fit(console, _COLUMNS, rows, show_edge=False, header_style="bold").table)
