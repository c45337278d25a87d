"""Single sign-on through an OpenID Connect provider (``console.oidc``).

The authorization code flow with PKCE (S256), a state and a nonce: ``/login/oidc`` sends the
browser to the provider with them; ``/login/oidc/callback`` takes the code back, checks the
state, exchanges the code (with the verifier and the client's secret) for tokens at the
provider's token endpoint, and checks the ID token: its RS256/ES256 signature against the keys
the provider publishes (JWKS), its issuer, audience, expiry and nonce. The ``role_claim`` then
maps to a role through ``role_map``; a person none of whose values map is refused, in words.
Every login, refused or not, is in the audit trail.

The state, nonce and verifier wait in a cookie of their own, signed, HttpOnly and
SameSite=Lax: the provider's redirect back is a navigation from another site, which a
SameSite=Strict cookie (the session's) would not come with.
"""

from __future__ import annotations

import json
import secrets
import ssl
from dataclasses import dataclass
from typing import Any

import httpx2
from itsdangerous import BadSignature, URLSafeTimedSerializer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from engine.audit import actions
from engine.audit.tables import Outcome
from engine.console.sessions import Stage
from engine.console.visits import Console, address_of, keep, render
from engine.users.accounts import LoginRefused, Role, logged_in, single_sign_on
from engine.users.settings import OidcSettings

PENDING = "crosswalk_oidc"
"""The cookie that carries a sign-on's state, nonce and PKCE verifier to the callback."""
PENDING_AGE = 600
"""Seconds a sign-on may take at the provider."""
ALGORITHMS = ["RS256", "ES256"]
TIMEOUT = 10.0
"""Seconds the console waits on the provider for each request."""
_RANK = {role: n for n, role in enumerate(Role.ALL)}


class SignOnRefused(Exception):
    """Why a sign-on is refused: ``shown`` to the person, ``reason`` for the audit trail."""

    def __init__(self, shown: str, reason: str, name: str = "") -> None:
        super().__init__(shown)
        self.shown, self.reason, self.name = shown, reason, name


@dataclass(frozen=True, slots=True)
class Endpoints:
    authorization: str
    token: str
    jwks: str


def endpoints(settings: OidcSettings) -> Endpoints:
    """The provider's endpoints, from its discovery document (its issuer must be its own)."""
    url = settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
    document = httpx2.get(url, timeout=TIMEOUT, verify=trust(settings)).raise_for_status().json()
    if document.get("issuer") != settings.issuer:
        raise SignOnRefused(
            "The sign-on provider is misconfigured.",
            f"discovery names issuer {document.get('issuer')!r}",
        )
    return Endpoints(
        document["authorization_endpoint"], document["token_endpoint"], document["jwks_uri"]
    )


def trust(settings: OidcSettings) -> ssl.SSLContext | bool:
    """What the provider's HTTPS certificate must chain to: ``ca``, else the system's CAs."""
    return ssl.create_default_context(cafile=str(settings.ca)) if settings.ca else True


def role_of(claims: dict[str, Any], settings: OidcSettings) -> str | None:
    """The most powerful role the claim's values map to, or None."""
    value = claims.get(settings.role_claim)
    values = value if isinstance(value, list) else [value] if value is not None else []
    roles = [settings.role_map[v] for v in values if isinstance(v, str) and v in settings.role_map]
    return max(roles, key=_RANK.__getitem__) if roles else None


def verified_claims(
    id_token: str, keys: dict[str, Any], settings: OidcSettings, nonce: str
) -> dict[str, Any]:
    """The ID token's claims, once its signature, issuer, audience, expiry and nonce hold."""
    try:
        published = KeySet.import_key_set(keys)  # type: ignore[arg-type]
        token = jwt.decode(id_token, published, algorithms=ALGORITHMS)
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": settings.issuer},
            aud={"essential": True, "value": settings.client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        ).validate(token.claims)
    except (JoseError, ValueError) as error:
        raise SignOnRefused(
            "The sign-on could not be verified; please try again.",
            f"ID token refused: {type(error).__name__}: {error}",
        ) from error
    return dict(token.claims)


def routes(console: Console) -> list[Route]:
    async def start(request: Request) -> Response:
        return await run_in_threadpool(_start, console, request)

    async def callback(request: Request) -> Response:
        return await run_in_threadpool(_callback, console, request)

    return [
        Route("/login/oidc", start),
        Route("/login/oidc/callback", callback, name="oidc_callback"),
    ]


def _settings(console: Console) -> OidcSettings | None:
    return console.settings.oidc


def _pending_signer(console: Console) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(console.sessions.key, salt="console-oidc")


def _redirect_uri(settings: OidcSettings, request: Request) -> str:
    return settings.redirect_uri or str(request.url_for("oidc_callback"))


def _client(settings: OidcSettings, request: Request) -> Any:
    """authlib's OAuth 2 client for the flow (imported here: only a sign-on needs it)."""
    from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
        OAuth2Client,
    )

    return OAuth2Client(
        settings.client_id,
        settings.client_secret or None,
        scope="openid profile email",
        redirect_uri=_redirect_uri(settings, request),
        code_challenge_method="S256",
        timeout=TIMEOUT,
        verify=trust(settings),
    )


def _start(console: Console, request: Request) -> Response:
    settings = _settings(console)
    if settings is None:
        return _refused(console, request, "Single sign-on is not set up.", 404)
    try:
        where = endpoints(settings)
    except (httpx2.HTTPError, KeyError, ValueError, SignOnRefused) as error:
        _audit(console, request, "", Outcome.ERROR, f"discovery: {type(error).__name__}")
        return _refused(console, request, "The sign-on provider cannot be reached.", 502)
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    verifier += secrets.token_urlsafe(32)  # PKCE wants 43 to 128 characters
    with _client(settings, request) as client:
        url, _ = client.create_authorization_url(
            where.authorization, state=state, nonce=nonce, code_verifier=verifier
        )
    response = RedirectResponse(url, status_code=303)
    pending = _pending_signer(console).dumps({"state": state, "nonce": nonce, "verifier": verifier})
    response.set_cookie(
        PENDING,
        pending,
        max_age=PENDING_AGE,
        path="/login/oidc",
        httponly=True,
        samesite="lax",
        secure=console.sessions.secure,
    )
    return response


def _callback(console: Console, request: Request) -> Response:
    settings = _settings(console)
    if settings is None:
        return _refused(console, request, "Single sign-on is not set up.", 404)
    try:
        name, role = _signed_on(console, settings, request)
        account = single_sign_on(console.store, name, role, settings.issuer)
    except SignOnRefused as refused:
        _audit(console, request, refused.name, Outcome.REFUSED, refused.reason)
        return _refused(console, request, refused.shown, 403)
    except LoginRefused as refused:
        _audit(console, request, name, Outcome.REFUSED, refused.reason)
        shown = (
            "Your account is disabled."
            if refused.reason == "account disabled"
            else f"A local account is already named {name}; ask an administrator."
        )
        return _refused(console, request, shown, 403)
    logged_in(console.store, account.name)
    _audit(console, request, account.name, Outcome.OK, f"oidc {settings.issuer} as {role}")
    # A page that moves on, not a redirect: the browser came here from the provider's site,
    # and the SameSite=Strict session cookie is sent only once a page of this site asks.
    page = render(console, request, "signed_on.html", None, None)
    page.delete_cookie(PENDING, path="/login/oidc")
    return keep(console, page, console.sessions.new(account.id, account.name, Stage.FULL))


def _signed_on(console: Console, settings: OidcSettings, request: Request) -> tuple[str, str]:
    """The person's name and role, once every check of the callback holds."""
    params = request.query_params
    try:
        pending = _pending_signer(console).loads(
            request.cookies.get(PENDING, ""), max_age=PENDING_AGE
        )
    except BadSignature as error:
        raise SignOnRefused(
            "The sign-on took too long or did not start here; please try again.",
            "no pending sign-on",
        ) from error
    if "error" in params:
        raise SignOnRefused(
            "The sign-on provider refused the login.", f"provider error {params['error']!r}"
        )
    if not secrets.compare_digest(str(pending.get("state", "")), params.get("state", "")):
        raise SignOnRefused("The sign-on did not match; please try again.", "state mismatch")
    try:
        where = endpoints(settings)
        with _client(settings, request) as client:
            tokens = client.fetch_token(
                where.token,
                grant_type="authorization_code",
                code=params.get("code", ""),
                code_verifier=pending["verifier"],
            )
        keys = httpx2.get(where.jwks, timeout=TIMEOUT, verify=trust(settings))
        keys = keys.raise_for_status().json()
    except (httpx2.HTTPError, KeyError, ValueError, json.JSONDecodeError) as error:
        raise SignOnRefused(
            "The sign-on provider cannot be reached or refused the code.",
            f"token exchange: {type(error).__name__}",
        ) from error
    except Exception as error:  # authlib's OAuth errors (invalid_grant…) have no common base
        raise SignOnRefused(
            "The sign-on provider refused the code.", f"token exchange: {error}"
        ) from error
    claims = verified_claims(str(tokens.get("id_token", "")), keys, settings, pending["nonce"])
    name = str(claims.get("preferred_username") or claims.get("email") or claims["sub"])
    role = role_of(claims, settings)
    if role is None:
        value = claims.get(settings.role_claim)
        raise SignOnRefused(
            f"You signed on as {name}, but your {settings.role_claim!r} ({value or 'none'})"
            " gives no role in Crosswalk. Ask an administrator to map it (console.oidc.role_map).",
            f"claim {settings.role_claim!r} maps to no role",
            name,
        )
    return name, role


def _audit(console: Console, request: Request, name: str, outcome: str, detail: str) -> None:
    trail = console.trail(name or "(unknown)", address_of(request))
    objects = [f"user:{name}"] if name else []
    trail.record(actions.CONSOLE_LOGIN, objects=objects, outcome=outcome, detail=detail)


def _refused(console: Console, request: Request, why: str, status: int) -> Response:
    return render(console, request, "refused.html", None, None, status_code=status, why=why)
