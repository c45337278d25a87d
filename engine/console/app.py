"""The console's ASGI app: its routes, static files and the security headers of every answer."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.console import engine_pages, login, oidc, review_pages, users_page
from engine.console.visits import Console

STATIC = Path(__file__).parent / "static"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""No inline scripts or styles anywhere: the pages' behaviour is in static/console.js."""


class SecurityHeaders:
    """Adds the security headers to every response (HSTS only when served over TLS)."""

    def __init__(self, app: ASGIApp, *, tls: bool) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", CSP.encode()),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
        ]
        if tls:
            self.headers.append((b"strict-transport-security", b"max-age=31536000"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, with_headers)


def build_app(console: Console) -> ASGIApp:
    """The console over ``console`` (its store, configuration and sessions)."""
    app = Starlette(
        routes=[
            *login.routes(console),
            *oidc.routes(console),
            *engine_pages.routes(console),
            *review_pages.routes(console),
            *users_page.routes(console),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        ]
    )
    return SecurityHeaders(app, tls=console.settings.tls is not None)
