"""The ``console:`` section: where the web console listens and how it lets people in.

```yaml
console:
  host: 127.0.0.1        # loopback by default: put TLS on it (tls:) before exposing it
  port: 8575
  tls: {cert: tls/crosswalk.crt, key: tls/crosswalk.key}
  require_mfa: true      # admins and reviewers must enrol a TOTP second factor
```
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.mllp.tls import ListenerTLS
from engine.settings import Duration, Issue, setting


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
