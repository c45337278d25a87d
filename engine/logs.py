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
import time
from collections.abc import Hashable
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


class Throttled:
    """A line logged at most once per ``interval`` seconds per key: a flood (a store that is
    down, a sender of garbage) must not flood the log. The repeats in between are counted and
    told with the next line of that key."""

    KEYS_KEPT = 10_000

    def __init__(self, logger: logging.Logger, interval: float, level: int = logging.WARNING):
        self.logger = logger
        self.interval = interval
        self.level = level
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def log(self, key: Hashable, text: str, *args: object, now: float | None = None) -> bool:
        """Log ``text % args`` unless ``key`` was logged less than ``interval`` ago (then count
        it); True when logged. ``now``: a monotonic clock reading (default ``time.monotonic``)."""
        now = time.monotonic() if now is None else now
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if len(self._seen) >= self.KEYS_KEPT:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if last is not None and last[1]:
            text += " (and %d more like it in the last %.0fs)"
            args = (*args, last[1], now - last[0])
        self.logger.log(self.level, text, *args)
        return True


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
