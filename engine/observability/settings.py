"""The ``admin:`` section: where the admin HTTP endpoint listens (metrics, health, status).

```yaml
admin:
  host: 127.0.0.1        # loopback by default: put a proxy or TLS in front to expose it
  port: 9575
  tls: {cert: tls/crosswalk.crt, key: tls/crosswalk.key}
```
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.mllp.tls import ListenerTLS
from engine.settings import Duration, Issue, setting


@dataclass(frozen=True, kw_only=True)
class AdminSettings:
    """The admin HTTP endpoint: Prometheus ``/metrics``, ``/healthz``, ``/readyz`` and the
    ``/status`` that ``crosswalk status`` shows. Off unless the configuration has an
    ``admin:`` section."""

    enabled: bool = setting(
        "Serve the endpoint (an `admin:` section turns it on; false turns it off again).",
        default=True,
    )
    host: str = setting(
        "Address to listen on: loopback by default, since the metrics tell anyone who can read"
        " them how busy each feed is (no PHI: no patient, control id or message is ever in"
        " them).",
        default="127.0.0.1",
    )
    port: int = setting("Port to listen on.", default=9575)
    tls: ListenerTLS | None = setting(
        "Serve HTTPS with these certificates (the keys of a listener's `tls:`; a `client_ca`"
        " makes the scraper show a certificate).",
        default=None,
    )
    scrape_interval: Duration = setting(
        "What is counted in the store (queue depths, proposals, decisions) is read again at"
        " most this often, however often the endpoint is asked.",
        default=Duration(5.0),
    )

    def check(self) -> list[Issue]:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(Issue("port must be between 0 and 65535"))
        if float(self.scrape_interval) < 0:
            problems.append(Issue("scrape_interval must not be negative"))
        return problems
