"""Logging set-up. Nothing logged at INFO or above may carry PHI: log control ids and row ids.

Two formats: text (one line per record, ``FORMAT``) and JSON (one object per line, the same
fields: ``time``, ``level``, ``logger``, ``message``, and ``exception`` when there is one), for
log shippers that parse JSON.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str | None = None, log_format: str | None = None) -> None:
    """Log to stderr at ``level`` (else ``$CROSSWALK_LOG_LEVEL``, else INFO), as ``log_format``
    (``text`` or ``json``; else ``$CROSSWALK_LOG_FORMAT``, else text)."""
    chosen = (level or os.environ.get("CROSSWALK_LOG_LEVEL") or "INFO").upper()
    shape = (log_format or os.environ.get("CROSSWALK_LOG_FORMAT") or "text").lower()
    if shape not in FORMATS:
        raise ValueError(f"log format {shape!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if shape == "json" else logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen)
    # SQLAlchemy echoes parameters (message contents) at INFO: keep it quiet.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
