"""One row of docs/performance.md's "faults survived" table, printed by a fault test (run it
with ``-s`` to see it): what was sent, answered, stored, delivered, repeated and lost."""

from __future__ import annotations

from collections.abc import Sequence


def print_fault_row(
    scenario: str,
    codes: Sequence[str],
    stored: Sequence[str],
    accepted: Sequence[str],
    received: Sequence[str],
) -> int:
    """Print the row; returns how many accepted (AA) messages never reached the PACS.

    ``codes``: every answer the sender got (resends included); ``stored``: control ids stored
    as accepted; ``accepted``: control ids answered AA; ``received``: what the PACS received.
    """
    lost = len(set(accepted) - set(received))
    figures = [
        len(codes),
        sum(1 for code in codes if code == "AA"),
        sum(1 for code in codes if code in ("AE", "AR", "CE", "CR")),
        len(set(stored)),
        len(set(received) & set(accepted)),
        len(received) - len(set(received)),
        lost,
    ]
    print(f"\nFAULTS | {scenario} | " + " | ".join(f"{n:,}" for n in figures) + " |")
    return lost
