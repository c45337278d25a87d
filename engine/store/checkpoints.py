"""SQLite WAL checkpoints off the ACK path.

In WAL mode SQLite copies the log back into the database (a checkpoint) from inside the commit
that takes the log past ``wal_autocheckpoint`` pages (1,000): that commit, and the ACK waiting
for it, pays for copying every page since the last one and an fsync of the database file:
milliseconds, once every ~50 received messages with the shipped routes, which is most of the ACK
latencies above 2 ms at a steady 500 msg/s. Here a thread with a connection of its own copies
the log shortly after each commit (a PASSIVE checkpoint never blocks the writer), so that when
the writer's own checkpoint comes due there is little left to copy: a few pages and the fsync.
The writer keeps that automatic checkpoint: it is what lets SQLite start the log again from
its beginning (a log that only grows makes every commit's fsync dearer).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from sqlalchemy import Engine

log = logging.getLogger(__name__)

INTERVAL = 0.01
"""Seconds between two checkpoints of this thread, at most one per commit."""
DISK_SHARE = 0.25
"""At most this share of the time goes to checkpoints (each fsyncs the database file): on a
slow disk they are spaced out, so the writer's own fsyncs keep most of it."""


def pause_after(took: float, interval: float = INTERVAL) -> float:
    """Seconds to wait after a checkpoint that took ``took``: ``interval``, or longer so that
    checkpoints take at most ``DISK_SHARE`` of the time."""
    return max(interval, took * (1 - DISK_SHARE) / DISK_SHARE)


class Checkpointer:
    """Copies the WAL into the database in the background, after commits."""

    def __init__(self, engine: Engine, interval: float = INTERVAL) -> None:
        self._engine = engine
        self._interval = interval
        self._committed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0

    @staticmethod
    def wanted(engine: Engine) -> bool:
        """Whether ``engine`` is an SQLite file (a memory database has no log to copy)."""
        database = engine.url.database or ""
        return engine.dialect.name == "sqlite" and database not in ("", ":memory:")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wal checkpoints", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        """A commit added to the log (called by the writer after every commit: cheap)."""
        # Setting a set Event still takes its lock and notifies; the thread clears it once a
        # checkpoint, so most commits find it set and skip that.
        if not self._committed.is_set():
            self._committed.set()

    def stop(self) -> None:
        self._stop.set()
        self._committed.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        connection = None
        try:
            connection = self._engine.raw_connection()
            pause = self._interval
            while not self._stop.is_set():
                self._committed.wait()
                if self._stop.wait(pause):
                    break
                self._committed.clear()
                started = time.monotonic()
                cursor = connection.cursor()
                try:
                    cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    cursor.fetchall()
                finally:
                    cursor.close()
                self.checkpoints += 1
                pause = pause_after(time.monotonic() - started, self._interval)
        except Exception as error:  # the writer's own checkpoints go on without this thread
            log.warning("background WAL checkpoints stopped: %s", type(error).__name__)
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()
