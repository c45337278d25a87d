"""Certificates about to expire: warned about at start, at every reload, and once a day.

An expired certificate stops a feed at the worst moment (TLS handshakes start failing at
midnight); thirty days' notice in the log (WARNING, no PHI) leaves time to renew it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from engine.mllp.tls import ClientTLS, read_certificate
from engine.pipeline.settings import PipelineConfig

log = logging.getLogger(__name__)

WARN_DAYS = 30
"""A certificate that expires within this many days is warned about."""
CHECK_EVERY = 86400.0


def _files(config: PipelineConfig) -> Iterator[tuple[str, Path]]:
    for name, listener in config.listeners.items():
        if listener.tls is not None:
            yield f"listener {name}", listener.tls.cert
            if listener.tls.client_ca is not None:
                yield f"listener {name} (client CA)", listener.tls.client_ca
    for name, destination in config.destinations.items():
        yield from _client_files(f"destination {name}", destination.tls)
    for name, archive in config.archives.items():
        yield from _client_files(f"archive {name}", archive.tls)
    for name, target in config.review.merge_targets.items():
        yield from _client_files(f"merge target {name}", target.tls)
    syslog = config.audit.syslog
    if syslog is not None and syslog.protocol == "tls":
        yield from _client_files("audit syslog collector", syslog.tls)


def _client_files(owner: str, tls: ClientTLS | None) -> Iterator[tuple[str, Path]]:
    """The certificate and the CA of a connection Crosswalk makes."""
    if tls is not None:
        for what, path in (("", tls.cert), (" (CA)", tls.ca)):
            if path is not None:
                yield f"{owner}{what}", path


def expiring(
    config: PipelineConfig, days: float = WARN_DAYS, now: datetime | None = None
) -> list[str]:
    """One line for each certificate of ``config`` that expires within ``days`` (or has)."""
    now = now or datetime.now(UTC)
    found = []
    for owner, path in _files(config):
        try:
            info = read_certificate(path)
        except ValueError as error:
            found.append(f"{owner}: {error}")
            continue
        left = info.days_left(now)
        if left <= days:
            when = f"{info.not_after:%Y-%m-%d}"
            state = f"EXPIRED on {when}" if left < 0 else f"expires in {left:.0f} day(s), {when}"
            found.append(f"{owner}: certificate {path} ({info.subject}) {state}")
    return found


def warn_expiring_certificates(config: PipelineConfig) -> None:
    for line in expiring(config):
        log.warning("%s; renew it (see docs/security.md)", line)


async def check_daily(current: Callable[[], PipelineConfig]) -> None:
    """Warn about expiring certificates once a day, of the configuration running then."""
    while True:
        await asyncio.sleep(CHECK_EVERY)
        warn_expiring_certificates(current())
