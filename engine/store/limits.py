"""How much of the stored work the engine holds in memory at once: bounded by count and bytes.

Counts alone do not bound memory: 10,000 messages of 1 MB are 10 GB. Every in-memory window of
the engine (messages waiting to be routed, a destination's queue, a routing batch, a read from
the store) stops at whichever comes first, its count or its bytes, and takes at least one item
so that a single message larger than the budget still moves.
"""

from __future__ import annotations

from collections.abc import Iterable

MiB = 1024 * 1024

PENDING_MESSAGES = 10_000
PENDING_BYTES = 32 * MiB
"""Accepted messages held for routing; beyond either, they are read from the store."""
WINDOW_DELIVERIES = 10_000
WINDOW_BYTES = 16 * MiB
"""Deliveries a destination worker holds in memory; beyond either, it reads the store."""
READ_ROWS = 500
READ_BYTES = 8 * MiB
"""One read of messages or deliveries from the store."""
BATCH_BYTES = 4 * MiB
"""One routing batch, or one batch applied to the MPI, besides its count."""


def fitting(sizes: Iterable[int], count: int, max_bytes: int) -> int:
    """How many of the leading items (of these ``sizes``) fit in ``count`` items and
    ``max_bytes``; at least one when there is one.

    >>> fitting([3, 3, 3, 3], 10, 7), fitting([9, 1], 10, 7), fitting([1, 1, 1], 2, 100)
    (2, 1, 2)
    """
    taken = total = 0
    for size in sizes:
        if taken >= count or (taken and total + size > max_bytes):
            break
        taken += 1
        total += size
    return taken
