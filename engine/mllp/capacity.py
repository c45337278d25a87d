"""How many MLLP connections the process may hold. Each one is a file descriptor: past the
open-file limit accept() fails and new connections wait unanswered in the kernel's backlog,
and the store, a destination or the routing process could not open one either. Listeners
share one capacity, so the engine refuses a connection it cannot hold instead."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ConnectionCapacity:
    """Connections open in this process across every listener, and how many it may hold
    (None: no limit of its own beyond each listener's max_connections)."""

    limit: int | None = None
    open: int = 0

    def full(self) -> bool:
        return self.limit is not None and self.open >= self.limit


PROCESS = ConnectionCapacity()
"""The process's capacity: `serve` sets its limit from the open-file limit at start."""
