"""Single sign-on through OpenID Connect, end to end against a real provider on loopback
(tests/oidc_provider.py): the code flow with PKCE, state and nonce; the ID token's signature
checked against the provider's JWKS; a claim mapped to a role; refusals in words; every login
in the audit trail; local accounts beside it."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from joserfc.jwk import RSAKey
from sqlalchemy import Engine
from starlette.testclient import TestClient

from engine.audit.trail import EventFilter, events
from engine.config.loader import load_config
from engine.settings import ConfigError
from engine.users.accounts import Role, add_user, disable, find
from tests.certificates import Authority
from tests.console_support import PASSWORD, client_of, console_folder, console_over, log_in
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, running_provider


@pytest.fixture
def provider() -> Iterator[Provider]:
    with running_provider() as running:
        yield running


@pytest.fixture
def client(store: Engine, tmp_path: Path, provider: Provider) -> TestClient:
    return console_client(store, tmp_path, provider)


def console_client(
    store: Engine, tmp_path: Path, provider: Provider, extra: str = ""
) -> TestClient:
    """A console whose sign-on goes to ``provider`` (``extra``: more oidc: lines)."""
    secret = tmp_path / "oidc-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    console = (
        "console:\n"
        "  require_mfa: true\n"
        "  oidc:\n"
        f"    issuer: {provider.issuer}\n"
        f"    client_id: {CLIENT_ID}\n"
        f"    client_secret: ${{file:{secret}}}\n"
        "    role_claim: groups\n"
        "    role_map: {pacs-admins: admin, radiology: reviewer, interfaces: analyst}\n"
        "    label: Hospital login\n"
        f"{extra}"
    )
    return client_of(console_over(store, console_folder(tmp_path, console=console)))


def sign_on(
    client: TestClient,
    claims: dict[str, object],
    provider: Provider,
    trust: ssl.SSLContext | bool = True,
) -> httpx2.Response:
    """Through the login page's button, the provider (the browser trusting ``trust``) and
    back: the callback's answer."""
    provider.claims = claims
    assert "Hospital login" in client.get("/login").text
    start = client.get("/login/oidc")
    assert start.status_code == 303
    at_provider = httpx2.get(start.headers["location"], timeout=10, verify=trust)
    assert at_provider.status_code == 302, at_provider.text
    back = urlsplit(at_provider.headers["location"])
    return client.get(f"{back.path}?{back.query}")


def person(name: str, *groups: str) -> dict[str, object]:
    """The claims of a person the provider signs on."""
    return {"sub": f"id-{name}", "preferred_username": name, "groups": list(groups)}


def logins(store: Engine) -> list[tuple[str, str, str]]:
    with store.connect() as connection:
        found = events(connection, EventFilter(action="console.login", limit=50))
    return [(e.actor, e.outcome, e.detail) for e in found]


def test_a_mapped_claim_signs_on_with_its_role(
    client: TestClient, provider: Provider, store: Engine
) -> None:
    answer = sign_on(
        client,
        person("dr.okafor", "radiology", "staff"),
        provider,
    )
    assert answer.status_code == 200 and 'http-equiv="refresh" content="0;url=/"' in answer.text
    dashboard = client.get("/")
    assert dashboard.status_code == 200 and "dr.okafor (reviewer)" in dashboard.text
    assert client.get("/review").status_code == 200  # a reviewer's page, no second factor asked
    assert client.get("/users").status_code == 403
    asked = provider.seen[-1]
    assert asked["code_challenge_method"] == "S256" and len(asked["code_challenge"]) == 43
    assert asked["nonce"] and asked["state"] and "openid" in asked["scope"].split()
    assert asked["redirect_uri"] == "http://127.0.0.1/login/oidc/callback"
    assert logins(store)[-1] == ("dr.okafor", "ok", f"oidc {provider.issuer} as reviewer")
    account = find(store, "dr.okafor")
    assert account is not None and account.role == Role.REVIEWER
    # The provider's word is the role: next time, moved to the admins' group.
    client.cookies.clear()
    sign_on(
        client,
        person("dr.okafor", "pacs-admins", "radiology"),
        provider,
    )
    assert "dr.okafor (admin)" in client.get("/").text
    row = re.search(r"<tr><td>dr\.okafor</td>.*?</tr>", client.get("/users").text, re.S)
    assert row and "<td>admin</td>" in row.group(0) and "single sign-on" in row.group(0)


def test_an_unmapped_claim_is_refused_in_words(
    client: TestClient, provider: Provider, store: Engine
) -> None:
    answer = sign_on(client, person("visitor", "cafeteria"), provider)
    assert answer.status_code == 403
    assert "gives no role in Crosswalk" in answer.text and "cafeteria" in answer.text
    assert client.get("/").headers["location"] == "/login"
    assert find(store, "visitor") is None
    assert logins(store)[-1] == ("visitor", "refused", "claim 'groups' maps to no role")


def test_a_token_signed_by_another_key_is_refused(
    client: TestClient, provider: Provider, store: Engine
) -> None:
    provider.signing_key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    answer = sign_on(client, person("mallory", "pacs-admins"), provider)
    assert answer.status_code == 403 and "could not be verified" in answer.text
    assert client.get("/").headers["location"] == "/login"
    _, outcome, detail = logins(store)[-1]
    assert (outcome, detail.split(":")[0]) == ("refused", "ID token refused")


def test_a_replayed_nonce_or_a_forged_state_is_refused(
    client: TestClient, provider: Provider, store: Engine
) -> None:
    provider.nonce = "a nonce from another login"
    answer = sign_on(client, person("eve", "pacs-admins"), provider)
    assert answer.status_code == 403 and "nonce" in logins(store)[-1][2]
    provider.nonce = None
    provider.claims = person("eve", "pacs-admins")
    start = client.get("/login/oidc")
    at_provider = httpx2.get(start.headers["location"], follow_redirects=False, timeout=10)
    back = urlsplit(at_provider.headers["location"])
    code = parse_qs(back.query)["code"][0]
    forged = client.get(f"{back.path}?code={code}&state=someone-elses")
    assert forged.status_code == 403 and logins(store)[-1][1:] == ("refused", "state mismatch")
    other_browser = TestClient(client.app, base_url="http://127.0.0.1", follow_redirects=False)
    replayed = other_browser.get(f"{back.path}?{back.query}")
    assert replayed.status_code == 403 and logins(store)[-1][2] == "no pending sign-on"
    assert client.get("/").headers["location"] == "/login"
    assert client.get(f"{back.path}?{back.query}").status_code == 200  # the real one, unused
    assert "eve (admin)" in client.get("/").text


def test_local_accounts_keep_working_and_keep_their_names(
    client: TestClient, provider: Provider, store: Engine
) -> None:
    add_user(store, "analyst1", Role.ANALYST, PASSWORD)
    log_in(client, "analyst1")
    assert "analyst1 (analyst)" in client.get("/").text
    client.cookies.clear()
    answer = sign_on(
        client,
        person("analyst1", "pacs-admins"),
        provider,
    )
    assert answer.status_code == 403 and "local account is already named analyst1" in answer.text
    assert find(store, "analyst1").role == Role.ANALYST  # type: ignore[union-attr]
    sign_on(client, person("tech", "interfaces"), provider)
    disable(store, "tech")
    client.cookies.clear()
    answer = sign_on(client, person("tech", "interfaces"), provider)
    assert answer.status_code == 403 and "disabled" in answer.text


def test_the_settings_refuse_an_unknown_role_and_plain_http(tmp_path: Path) -> None:
    console = (
        "console:\n  oidc:\n    issuer: http://login.example.org\n    client_id: c\n"
        "    role_map: {staff: superuser}\n"
    )
    with pytest.raises(ConfigError) as refused:
        load_config(console_folder(tmp_path, console=console), {})
    said = str(refused.value)
    assert "'staff' maps to 'superuser', not a role" in said and "https://" in said


def test_a_provider_over_https_is_trusted_through_its_ca(store: Engine, tmp_path: Path) -> None:
    """``ca:`` names the CA the provider's certificate chains to (a hospital's own); without
    it the system's CAs refuse that certificate and the sign-on does not start."""
    authority = Authority(tmp_path / "pki")
    with running_provider(tls=authority.issue("login")) as provider:
        assert provider.issuer.startswith("https://")
        trusting = console_client(store, tmp_path, provider, f"    ca: {authority.cert}\n")
        browser_trust = ssl.create_default_context(cafile=str(authority.cert))
        answer = sign_on(trusting, person("dr.osei", "pacs-admins"), provider, browser_trust)
        assert answer.status_code == 200 and "dr.osei (admin)" in trusting.get("/").text
        distrustful = console_client(store, tmp_path, provider)
        refused = distrustful.get("/login/oidc")
        assert refused.status_code == 502 and "cannot be reached" in refused.text
        assert logins(store)[-1][1:] == ("error", "discovery: ConnectError")
