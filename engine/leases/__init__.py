"""Leases: which engine process owns which piece of work, when several share one PostgreSQL.

Each destination partition's queue, the MPI worker and the routing of stored messages is owned
by exactly one process at a time. Ownership is a row of ``leases`` (``tables``) with a holder,
an expiry on the database's clock and an epoch, the fencing token raised by every takeover
(``records``: acquiring, renewing, releasing, and the fence a write checks in its own
transaction). ``keeper`` runs the leases of one process: it renews them, takes free ones up to
its fair share, starts and stops the work each one guards, and stops that work before the lease
can expire, so that a holder that is paused or cut off never acts after another took over.
On SQLite (one engine per file) the keeper grants every lease at once, with no fence.
"""

__all__ = ["keeper", "records", "tables"]
