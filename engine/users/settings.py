"""The ``console:`` section: where the web console listens and how it lets people in.

```yaml
console:
  host: 127.0.0.1        # loopback by default: put TLS on it (tls:) before exposing it
  port: 8575
  tls: {cert: tls/crosswalk.crt, key: tls/crosswalk.key}
  require_mfa: true      # admins and reviewers must enrol a TOTP second factor
  oidc:                  # optional single sign-on (OpenID Connect)
    issuer: https://login.hospital.org/realms/staff
    client_id: crosswalk-console
    client_secret: ${file:/run/secrets/crosswalk-oidc}
    role_claim: groups
    role_map: {pacs-admins: admin, radiology-review: reviewer, interfaces: analyst}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.mllp.tls import ListenerTLS
from engine.settings import Duration, Issue, setting
from engine.users.accounts import Role


@dataclass(frozen=True, kw_only=True)
class OidcSettings:
    """Single sign-on through an OpenID Connect provider: the authorization code flow with
    PKCE; the ID token's signature checked against the provider's published keys; a claim of
    the token mapped to a role. Local accounts keep working beside it."""

    issuer: str = setting(
        "The provider's issuer URL (its `/.well-known/openid-configuration` is read).",
        example="https://login.hospital.org/realms/staff",
    )
    client_id: str = setting("The console's client id at the provider.", example="crosswalk")
    client_secret: str = setting(
        "The client's secret; keep it out of the file with `${file:…}` or `${VAR}`.",
        default="",
        example="${file:/run/secrets/crosswalk-oidc}",
    )
    role_claim: str = setting(
        "The ID token claim (a string or a list of strings) that says who the person is.",
        default="groups",
        example="roles",
    )
    role_map: dict[str, str] = setting(
        "Claim value → console role (viewer, analyst, reviewer, admin); when several values"
        " map, the most powerful role wins; a person with none is refused.",
        default_factory=dict,
        example="{pacs-admins: admin, radiology-review: reviewer}",
    )
    redirect_uri: str = setting(
        "The console's callback as the provider knows it (behind a proxy); default: this"
        " console's own address + `/login/oidc/callback`.",
        default="",
        example="https://crosswalk.hospital.org/login/oidc/callback",
    )
    label: str = setting(
        "The words on the login page's button.", default="Single sign-on", example="Staff login"
    )
    ca: Path | None = setting(
        "CA certificate(s) (PEM) the provider's HTTPS certificate must chain to, relative to"
        " this file; default: the system's.",
        default=None,
        example="tls/hospital-ca.crt",
    )

    def check(self) -> list[Issue]:
        problems = []
        if not self.issuer.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            problems.append(Issue("issuer must be an https:// URL (http only on loopback)"))
        if not self.role_map:
            problems.append(Issue("role_map must map at least one claim value to a role"))
        for value, role in self.role_map.items():
            if role not in Role.ALL:
                problems.append(Issue(f"role_map: {value!r} maps to {role!r}, not a role"))
        return problems


@dataclass(frozen=True, kw_only=True)
class ConsoleSettings:
    """The web console that ``crosswalk console`` serves (dashboard, messages, routes, review,
    MPI, audit log), each person under their own login and role."""

    host: str = setting(
        "Address to listen on: loopback by default; the console shows PHI, so expose it only"
        " with `tls:` (or behind a TLS proxy).",
        default="127.0.0.1",
    )
    port: int = setting("Port to listen on.", default=8575)
    tls: ListenerTLS | None = setting(
        "Serve HTTPS with these certificates (the keys of a listener's `tls:`); the session"
        " cookie is then Secure and responses carry HSTS.",
        default=None,
    )
    require_mfa: bool = setting(
        "Admins and reviewers must enrol a TOTP second factor (an authenticator app) at their"
        " first login and give a code at every login.",
        default=True,
    )
    idle_timeout: Duration = setting(
        "A session unused this long ends (the person logs in again).", default=Duration(900.0)
    )
    session_lifetime: Duration = setting(
        "A session ends this long after its login, however busy.", default=Duration(43200.0)
    )
    lockout_attempts: int = setting(
        "Wrong passwords or codes in a row that lock an account.", default=5
    )
    lockout_period: Duration = setting(
        "How long a locked account refuses every login (`crosswalk users passwd` unlocks).",
        default=Duration(900.0),
    )
    oidc: OidcSettings | None = setting(
        "Single sign-on through an OpenID Connect provider, beside local accounts.",
        default=None,
    )

    def check(self) -> list[Issue]:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(Issue("port must be between 0 and 65535"))
        if float(self.idle_timeout) <= 0 or float(self.session_lifetime) <= 0:
            problems.append(Issue("idle_timeout and session_lifetime must be positive"))
        if self.lockout_attempts < 1:
            problems.append(Issue("lockout_attempts must be at least 1"))
        if float(self.lockout_period) < 0:
            problems.append(Issue("lockout_period must not be negative"))
        return problems
