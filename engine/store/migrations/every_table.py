"""Every part's tables, registered in the store's metadata: what alembic compares the schema
with, and what key rotation walks. The parts' modules are imported here, and only here, by
name (the layers otherwise keep the store below them)."""

from engine.audit import tables as _audit_tables  # noqa: F401  (the audit trail)
from engine.leases import tables as _lease_tables  # noqa: F401  (who owns which work)
from engine.mpi import tables as _mpi_tables  # noqa: F401  (registers the MPI tables)
from engine.reconcile import tables as _reconcile_tables  # noqa: F401  (the reconciler tables)
from engine.review import tables as _review_tables  # noqa: F401  (the review audit trail)
from engine.studies import tables as _study_tables  # noqa: F401  (registers the study tables)
from engine.users import tables as _user_tables  # noqa: F401  (console users)
