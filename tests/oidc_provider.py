"""A small OpenID Connect provider for tests, served by uvicorn on loopback: discovery, an
authorization endpoint that signs the next person in at once (no login page), a token endpoint
that checks the client's secret and the PKCE verifier, and a JWKS endpoint; ID tokens are
RS256-signed with a key made at start."""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.certificates import Issued

CLIENT_ID = "crosswalk-console"
CLIENT_SECRET = "s3cret-only-the-console-knows"


class Provider:
    """The provider's state: who signs in next, and knobs that make it misbehave."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"})
        self.issuer = ""
        self.claims: dict[str, Any] = {}
        """The claims of the next person to sign in (besides iss, aud, exp, nonce…)."""
        self.signing_key: RSAKey | None = None
        """Sign with this key instead of the published one (a forged token)."""
        self.nonce: str | None = None
        """Put this nonce in the token instead of the one asked for (a replayed token)."""
        self.consent = False
        """Show a page with a Continue link instead of redirecting at once (as a real provider
        does after its login form: the way back is then a navigation from its own site)."""
        self.codes: dict[str, dict[str, str]] = {}
        self.seen: list[dict[str, str]] = []
        """The authorization requests received."""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self.discovery),
                Route("/authorize", self.authorize),
                Route("/token", self.token, methods=["POST"]),
                Route("/jwks", self.jwks),
            ]
        )

    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "response_types_supported": ["code"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def authorize(self, request: Request) -> Response:
        asked = dict(request.query_params)
        self.seen.append(asked)
        if asked.get("client_id") != CLIENT_ID or asked.get("response_type") != "code":
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = asked
        back = {"code": code, "state": asked.get("state", "")}
        there = f"{asked['redirect_uri']}?{urlencode(back)}"
        if self.consent:
            page = f'<!doctype html><title>Provider</title><a id="continue" href="{there}">Go</a>'
            return HTMLResponse(page)
        return RedirectResponse(there, status_code=302)

    async def token(self, request: Request) -> Response:
        form = dict(await request.form())
        basic = request.headers.get("authorization", "").removeprefix("Basic ")
        given = base64.b64decode(basic).decode() if basic else ""
        if given != f"{CLIENT_ID}:{CLIENT_SECRET}":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        asked = self.codes.pop(str(form.get("code", "")), None)
        if asked is None or form.get("redirect_uri") != asked["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        digest = hashlib.sha256(str(form.get("code_verifier", "")).encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if asked.get("code_challenge_method") != "S256" or challenge != asked["code_challenge"]:
            return JSONResponse({"error": "invalid_grant", "why": "PKCE"}, status_code=400)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": self.nonce if self.nonce is not None else asked.get("nonce", ""),
            **self.claims,
        }
        key = self.signing_key or self.key
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)
        return JSONResponse(
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "id_token": id_token,
            }
        )

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(KeySet([self.key]).as_dict(private=False))


@contextmanager
def running_provider(name: str = "127.0.0.1", tls: Issued | None = None) -> Iterator[Provider]:
    """A provider listening on a free loopback port until the block ends; ``name``: the host
    its issuer URL names (``localhost``: another site than a console on 127.0.0.1); ``tls``:
    serve HTTPS with this certificate."""
    provider = Provider()
    sock = socket.create_server(("127.0.0.1", 0))
    scheme = "https" if tls else "http"
    provider.issuer = f"{scheme}://{name}:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        provider.app(),
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
