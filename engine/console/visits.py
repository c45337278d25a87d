"""One request to a guarded page: who (session, account), from where, checked for role and
CSRF before the page's own code runs; rendering, audit records and redirects for that code."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from engine.audit import actions
from engine.audit.settings import AuditSettings
from engine.audit.syslog import exporter
from engine.audit.tables import Outcome
from engine.audit.trail import Actor, Trail, os_account, ref
from engine.config.model import EngineConfig
from engine.console.permissions import allowed, menu
from engine.console.sessions import COOKIE, Session, Sessions, Stage, Throttle, csrf_ok
from engine.routes.router import Router
from engine.users.accounts import Account, active_account
from engine.users.settings import ConsoleSettings

TEMPLATES = Path(__file__).parent / "templates"
TERMINAL = "console"
"""What the audit trail records as the terminal of a console action."""


@dataclass
class Console:
    """Everything the pages share: the store, the configuration and the session keeper."""

    store: Engine
    config: EngineConfig
    sessions: Sessions
    throttle: Throttle = field(default_factory=Throttle)
    templates: Jinja2Templates = field(
        default_factory=lambda: Jinja2Templates(directory=str(TEMPLATES))
    )
    _router: Router | None = None

    @property
    def settings(self) -> ConsoleSettings:
        return self.config.console

    @property
    def router(self) -> Router:
        """The configured routes (built once: a router compiles its routes)."""
        if self._router is None:
            self._router = Router(self.config)
        return self._router

    def trail(self, name: str, address: str) -> Trail:
        """The audit trail of ``name`` acting from ``address`` through the console."""
        actor = Actor(name, os_account(), socket.gethostname(), TERMINAL, address)
        return Trail(self.store, actor, exporter(self.audit_settings))

    @property
    def audit_settings(self) -> AuditSettings:
        return self.config.audit


def address_of(request: Request) -> str:
    return request.client.host if request.client else ""


@dataclass
class Visit:
    """A request that passed the guard."""

    console: Console
    request: Request
    session: Session
    account: Account
    form: Mapping[str, str]
    forms: FormData | None = None

    @property
    def store(self) -> Engine:
        return self.console.store

    def audit(
        self,
        action: str,
        *,
        objects: Iterable[str] = (),
        criteria: Mapping[str, str] | None = None,
        outcome: str = Outcome.OK,
        detail: str = "",
    ) -> None:
        trail = self.console.trail(self.account.name, address_of(self.request))
        trail.record(action, objects=objects, criteria=criteria, outcome=outcome, detail=detail)

    def render(self, template: str, *, status_code: int = 200, **values: Any) -> Response:
        return render(
            self.console,
            self.request,
            template,
            self.session,
            self.account,
            status_code=status_code,
            **values,
        )

    def field(self, name: str, default: str = "") -> str:
        """A form field, else the query's, stripped."""
        value = self.form.get(name)
        if value is None:
            value = self.request.query_params.get(name, default)
        return str(value).strip()


def render(
    console: Console,
    request: Request,
    template: str,
    session: Session | None,
    account: Account | None,
    *,
    status_code: int = 200,
    **values: Any,
) -> Response:
    context = {
        "request": request,
        "session": session,
        "account": account,
        "menu": menu(account.role) if account else [],
        "csrf": session.csrf if session else "",
        **values,
    }
    return console.templates.TemplateResponse(request, template, context, status_code=status_code)


def to(url: str, request: Request) -> Response:
    """A redirect that htmx follows as a whole page."""
    if request.headers.get("HX-Request"):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def keep(console: Console, response: Response, session: Session) -> Response:
    response.set_cookie(
        COOKIE, console.sessions.cookie(session), **console.sessions.cookie_options()
    )
    return response


Handler = Callable[[Visit], Response]


def guarded(console: Console, permission: str) -> Callable[[Handler], Callable[[Request], Any]]:
    """An endpoint that runs ``handler`` (in a worker thread: the store is synchronous) for a
    logged-in user whose role has ``permission``; a POST must carry the session's CSRF token."""

    def wrap(handler: Handler) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            forms = await request.form() if request.method == "POST" else None
            return await run_in_threadpool(_serve, console, request, forms, permission, handler)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


def _serve(
    console: Console,
    request: Request,
    forms: FormData | None,
    permission: str,
    handler: Handler,
) -> Response:
    session = console.sessions.read(request.cookies.get(COOKIE))
    if session is None or session.stage != Stage.FULL:
        return to("/login", request)
    account = active_account(console.store, session.user_id)
    if account is None:
        response = to("/login", request)
        response.delete_cookie(COOKIE, path="/")
        return response
    form = {k: v for k, v in forms.items() if isinstance(v, str)} if forms is not None else {}
    visit = Visit(console, request, console.sessions.touched(session), account, form, forms)
    if request.method == "POST":
        given = form.get("csrf") or request.headers.get("X-CSRF-Token")
        if not csrf_ok(session, given):
            visit.audit(
                actions.CONSOLE_REFUSED,
                outcome=Outcome.REFUSED,
                detail=f"{request.url.path}: no valid CSRF token",
            )
            return visit.render(
                "refused.html", status_code=403, why="This form has expired; reload the page."
            )
    if not allowed(account.role, permission):
        visit.audit(
            actions.CONSOLE_REFUSED,
            outcome=Outcome.REFUSED,
            detail=f"{request.url.path}: role {account.role} lacks {permission}",
        )
        return visit.render(
            "refused.html",
            status_code=403,
            why=f"Your role ({account.role}) may not use {permission}.",
        )
    return keep(console, handler(visit), visit.session)


def not_found(visit: Visit, what: str) -> Response:
    return visit.render("refused.html", status_code=404, why=f"There is no {what}.")


def missing(visit: Visit, action: str, kind: str, key: int) -> Response:
    """The answer to a page of an object that does not exist, audited as refused."""
    objects = [ref(kind, key)]
    visit.audit(action, objects=objects, outcome=Outcome.REFUSED, detail=f"no such {kind}")
    return not_found(visit, f"{kind} {key}")


def environment_secret() -> bytes | None:
    """``CROSSWALK_CONSOLE_KEY`` when set, else None: the key kept in the store."""
    value = os.environ.get("CROSSWALK_CONSOLE_KEY", "")
    return value.encode() if value else None
