"""The process's open-file limit: every connection, the store, the routing process and each
destination hold descriptors, and distributions start services at a soft limit of 1,024."""

from __future__ import annotations

import logging
import resource
from collections.abc import Iterable

from engine.mllp.capacity import PROCESS

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


def connection_capacity(limit: int) -> int:
    """How many MLLP connections an open-file limit leaves room for: the limit less the
    descriptors kept for the store and destinations (at least half of a very low limit)."""
    return max(limit - RESERVED, limit // 2)


def check_connection_room(limit: int, max_connections: Iterable[int]) -> None:
    """Hold the process's MLLP connections to what the open-file limit leaves room for, and
    warn when the listeners' max_connections add up to more: beyond it a new connection is
    refused at once (the ones open go on), so that a destination or a new database connection
    can still open."""
    capacity = connection_capacity(limit)
    PROCESS.limit = capacity
    total = sum(max_connections)
    if total > capacity:
        log.warning(
            "the listeners' max_connections add up to %d, more than the %d connections the"
            " open-file limit %d leaves room for (the rest is kept for the store and"
            " destinations): connections beyond %d are refused; lower max_connections or raise"
            " the hard limit (LimitNOFILE= in the systemd unit, ulimit -Hn)",
            total,
            capacity,
            limit,
            capacity,
        )
