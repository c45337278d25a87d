"""The process's open-file limit: every connection, the store, the routing process and each
destination hold descriptors, and distributions start services at a soft limit of 1,024."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterable

log = logging.getLogger(__name__)

RESERVED = 64
"""Descriptors kept for the store, the routing process, destinations and log files."""
_CEILING = 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit, say so, and return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning(
                "open-file limit stays at %d: cannot raise it to %d (%s)", soft, target, error
            )
            return soft
        log.info("open-file limit raised from %d to %d (the hard limit)", soft, target)
        return target
    log.info("open-file limit: %d", soft)
    return soft


def check_connection_room(limit: int, max_connections: Iterable[int]) -> None:
    """Warn when the listeners' max_connections could use descriptors the engine needs: at the
    limit new connections wait unaccepted (the ones open go on), but a destination or a new
    database connection could not open either."""
    total = sum(max_connections)
    if total + RESERVED > limit:
        log.warning(
            "the listeners' max_connections add up to %d, more than the open-file limit %d"
            " leaves (%d kept for the store and destinations): lower max_connections or raise"
            " the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn)",
            total,
            limit,
            RESERVED,
        )
