"""The ``audit:`` section of the configuration: where audit events are exported as they happen.

```yaml
audit:
  syslog:
    host: audit.hospital.org
    port: 6514
    protocol: tls
    tls: {ca: tls/hospital-ca.crt, cert: tls/crosswalk-client.crt, key: tls/crosswalk-client.key}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.mllp.tls import ClientTLS
from engine.settings import Duration, Issue, setting

MAX_APP_NAME = 48
"""RFC 5424's limit on APP-NAME."""


@dataclass(frozen=True, kw_only=True)
class SyslogSettings:
    """A syslog collector that receives each audit event as it is recorded (an IHE ATNA audit
    record repository, a SIEM): RFC 5424 messages, octet-counted, over TCP or TLS."""

    host: str = setting("The collector's address.", example="audit.hospital.org")
    port: int = setting("Its port (6514 is syslog over TLS, 601 syslog over TCP).", example="6514")
    protocol: Literal["tcp", "tls"] = setting(
        "`tls` (RFC 5425: the collector's certificate and name verified) or `tcp` (RFC 6587:"
        " plain, for a collector on the same host or a trusted network only).",
        default="tls",
    )
    tls: ClientTLS | None = setting(
        "With `protocol: tls`: whom to trust and the client certificate to show (the keys of a"
        " destination's `tls:`); default: the system's trusted CAs, no client certificate.",
        default=None,
    )
    app_name: str = setting("APP-NAME of each message.", default="crosswalk")
    facility: int = setting(
        "Syslog facility number: 10 (authpriv, the ATNA convention), 13 (log audit), 16–23"
        " (local0–local7).",
        default=10,
    )
    timeout: Duration = setting(
        "Give up connecting or sending after this long; the command or engine goes on (the"
        " event stays in the store) and the collector is tried again 30 s later.",
        default=Duration(2),
        example="500ms",
    )

    def check(self) -> list[Issue]:
        problems: list[Issue] = []
        if not self.host.strip():
            problems.append(Issue("host must not be empty"))
        if not 1 <= self.port <= 65535:
            problems.append(Issue(f"port {self.port} is outside 1-65535"))
        if not 0 <= self.facility <= 23:
            problems.append(Issue(f"facility {self.facility} is outside 0-23", "10 (authpriv)"))
        name = self.app_name
        if not name or len(name) > MAX_APP_NAME or not all(33 <= ord(c) <= 126 for c in name):
            problems.append(
                Issue(
                    f"app_name {name!r} must be 1 to {MAX_APP_NAME} printable ASCII characters,"
                    " without spaces"
                )
            )
        if self.tls is not None and self.protocol != "tls":
            problems.append(Issue("tls: is only for protocol: tls"))
        if float(self.timeout) <= 0:
            problems.append(Issue("timeout must be more than 0"))
        return problems


@dataclass(frozen=True, kw_only=True)
class AuditSettings:
    """The audit trail's settings. The trail itself (the store's ``audit_events``) is always
    kept; this section adds an export."""

    syslog: SyslogSettings | None = setting(
        "Send every audit event, as it is recorded, to this syslog collector (RFC 5424; RFC 5425"
        " over TLS). Best effort: a collector that cannot be reached never fails a command.",
        default=None,
    )
