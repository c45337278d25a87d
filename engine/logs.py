"""Logging set-up. Nothing logged at INFO or above may carry PHI: log control ids and row ids."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str | None = None) -> None:
    """Log to stderr at ``level`` (else ``$CROSSWALK_LOG_LEVEL``, else INFO)."""
    chosen = (level or os.environ.get("CROSSWALK_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen)
    # SQLAlchemy echoes parameters (message contents) at INFO: keep it quiet.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
