"""Logging in: a password, then (when required or enrolled) a TOTP code; enrolment of the
second factor with a QR code; logging out. Every attempt is in the audit trail."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import segno
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.audit import actions
from engine.audit.tables import Outcome
from engine.console.sessions import COOKIE, Session, Stage, csrf_ok
from engine.console.visits import Console, address_of, keep, render, to
from engine.users.accounts import (
    Account,
    LoginRefused,
    Role,
    check_code,
    check_password_login,
    enrolment_uri,
    find,
    logged_in,
    new_secret,
    prepare_logins,
)

ANONYMOUS = 0
"""The user id of a session before its login (it carries the login form's CSRF token)."""


def routes(console: Console) -> list[Route]:
    prepare_logins()

    async def login(request: Request) -> Response:
        form = dict(await request.form()) if request.method == "POST" else {}
        return await run_in_threadpool(_login, console, request, form)

    async def code(request: Request) -> Response:
        form = dict(await request.form()) if request.method == "POST" else {}
        return await run_in_threadpool(_code, console, request, form)

    async def logout(request: Request) -> Response:
        form = dict(await request.form())
        return await run_in_threadpool(_logout, console, request, form)

    return [
        Route("/login", login, methods=["GET", "POST"]),
        Route("/login/code", code, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


def _audit(
    console: Console, request: Request, name: str, action: str, outcome: str, detail: str = ""
) -> None:
    trail = console.trail(name or "(unknown)", address_of(request))
    trail.record(action, objects=[f"user:{name}"] if name else [], outcome=outcome, detail=detail)


def _fresh(console: Console, request: Request) -> Session:
    """The pre-login session of this browser (its CSRF token), or a new one."""
    found = console.sessions.read(request.cookies.get(COOKIE))
    if found is not None and found.user_id == ANONYMOUS:
        return found
    return console.sessions.new(ANONYMOUS, "", Stage.PASSWORD)


def _login(console: Console, request: Request, form: Mapping[str, object]) -> Response:
    current = console.sessions.read(request.cookies.get(COOKIE))
    if current is not None and current.stage == Stage.FULL and request.method == "GET":
        return to("/", request)  # already logged in: a fresh login form would end the session
    session = _fresh(console, request)
    sso = console.settings.oidc.label if console.settings.oidc else ""
    if request.method == "GET":
        page = render(console, request, "login.html", session, None, sso_label=sso)
        return keep(console, page, session)
    name = str(form.get("name", "")).strip()
    password = str(form.get("password", ""))

    def again(message: str, status: int) -> Response:
        page = render(
            console,
            request,
            "login.html",
            session,
            None,
            status_code=status,
            error=message,
            name=name,
            sso_label=sso,
        )
        return keep(console, page, session)

    refusal = _unfit(console, request, session, form, name)
    if refusal:
        return again(*refusal)
    settings = console.settings
    try:
        account = check_password_login(
            console.store,
            name,
            password,
            attempts=settings.lockout_attempts,
            period=float(settings.lockout_period),
        )
    except LoginRefused as refused:
        _audit(console, request, name, actions.CONSOLE_LOGIN, Outcome.REFUSED, refused.reason)
        return again(str(refused), 401)
    if _needs_code(console, account):
        started = console.sessions.new(account.id, account.name, Stage.PASSWORD)
        if not account.enrolled:
            started = replace(started, enrolling=new_secret())
        return keep(console, to("/login/code", request), started)
    return _complete(console, request, account)


def _unfit(
    console: Console, request: Request, session: Session, form: Mapping[str, object], name: str
) -> tuple[str, int] | None:
    """Why a login form is refused before its password or code is looked at (an expired form,
    too many attempts from the address), with the status; None when it is not."""
    if not csrf_ok(session, str(form.get("csrf", ""))):
        return "The form expired; please try again.", 403
    if not console.throttle.allow(address_of(request)):
        _audit(console, request, name, actions.CONSOLE_LOGIN, Outcome.REFUSED, "throttled")
        return "Too many attempts from this address; wait a minute.", 429
    return None


def _needs_code(console: Console, account: Account) -> bool:
    return account.enrolled or (console.settings.require_mfa and account.role in Role.SECOND_FACTOR)


def _complete(console: Console, request: Request, account: Account) -> Response:
    logged_in(console.store, account.name)
    _audit(console, request, account.name, actions.CONSOLE_LOGIN, Outcome.OK)
    # A new session (and CSRF token) at each login: one fixed before it is of no use.
    return keep(
        console, to("/", request), console.sessions.new(account.id, account.name, Stage.FULL)
    )


def _code(console: Console, request: Request, form: Mapping[str, object]) -> Response:
    session = console.sessions.read(request.cookies.get(COOKIE))
    if session is None or session.user_id == ANONYMOUS or session.stage != Stage.PASSWORD:
        return to("/login", request)
    qr = ""
    if session.enrolling:
        uri = enrolment_uri(session.name, session.enrolling)
        qr = segno.make(uri, error="m").svg_inline(scale=4, dark="#000", light="#fff")

    def again(message: str, status: int) -> Response:
        page = render(
            console,
            request,
            "code.html",
            session,
            None,
            status_code=status,
            error=message,
            qr=qr,
            secret=session.enrolling,
        )
        return keep(console, page, session)

    if request.method == "GET":
        return again("", 200)
    refusal = _unfit(console, request, session, form, session.name)
    if refusal:
        return again(*refusal)
    settings = console.settings
    try:
        check_code(
            console.store,
            session.name,
            str(form.get("code", "")),
            attempts=settings.lockout_attempts,
            period=float(settings.lockout_period),
            secret=session.enrolling,
        )
    except LoginRefused as refused:
        _audit(
            console, request, session.name, actions.CONSOLE_LOGIN, Outcome.REFUSED, refused.reason
        )
        return again(str(refused), 401)
    if session.enrolling:
        _audit(console, request, session.name, actions.CONSOLE_ENROL, Outcome.OK)
    account = find(console.store, session.name)
    if account is None or account.disabled:
        return to("/login", request)
    return _complete(console, request, account)


def _logout(console: Console, request: Request, form: Mapping[str, object]) -> Response:
    session = console.sessions.read(request.cookies.get(COOKIE))
    response = to("/login", request)
    response.delete_cookie(COOKIE, path="/")
    if session is not None and session.user_id != ANONYMOUS:
        if csrf_ok(session, str(form.get("csrf", ""))):
            _audit(console, request, session.name, actions.CONSOLE_LOGOUT, Outcome.OK)
        else:
            return keep(console, to("/", request), session)
    return response
