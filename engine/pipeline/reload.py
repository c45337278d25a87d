"""Hot reload: an edited route, mapping or template file (or SIGHUP) swaps the configuration.

The new configuration is loaded and checked completely first; only a configuration without a
single problem replaces the running one, atomically (messages already routed keep their
deliveries). A broken edit leaves the previous configuration running and logs every problem with
its file and line. Connections and queues are not interrupted. Each reload, applied or refused,
is recorded in the audit trail with the engine as the actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from engine.audit import actions
from engine.audit.tables import Outcome
from engine.audit.trail import Trail, ref
from engine.pipeline.settings import LoadConfig, PipelineConfig
from engine.settings import ConfigError

log = logging.getLogger(__name__)

Snapshot = dict[str, tuple[int, int]]


def snapshot(folders: list[Path]) -> Snapshot:
    """Modification time and size of every file under ``folders``."""
    found: Snapshot = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                stat = path.stat()
                found[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return found


class ConfigWatcher:
    """Watches the configuration and mappings folders and reloads on change or request."""

    def __init__(
        self,
        folder: Path,
        mappings: Path,
        apply: Callable[[PipelineConfig], Awaitable[None]],
        load: LoadConfig,
        interval: float = 1.0,
        trail: Trail | None = None,
        baseline: Snapshot | None = None,
    ) -> None:
        self.folder = folder
        self.trail = trail
        """Where reloads are recorded (the engine's audit trail)."""
        self.load = load
        self.mappings = mappings
        self.apply = apply
        self.interval = interval
        self.reloads = 0
        self.failures = 0
        self._requested = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seen: Snapshot | None = baseline
        """The files as the running configuration was loaded from them: an edit made after
        the load and before ``start`` is a change like any other, not the starting point."""

    def start(self) -> None:
        if self._seen is None:
            self._seen = snapshot([self.folder, self.mappings])
        self._task = asyncio.get_running_loop().create_task(self._run(), name="config watcher")

    def request(self) -> None:
        """Reload now (SIGHUP)."""
        self._requested.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._requested.wait()
            requested = self._requested.is_set()
            self._requested.clear()
            current = await asyncio.to_thread(snapshot, [self.folder, self.mappings])
            if current == self._seen and not requested:
                continue
            self._seen = current
            await self.reload("SIGHUP" if requested else "file change")

    async def reload(self, trigger: str = "request") -> bool:
        """Load, check and (if sound) apply the configuration; True when it was applied.
        ``trigger`` (SIGHUP, file change) is recorded with it in the audit trail."""
        try:
            config = await asyncio.to_thread(self.load, self.folder)
            await self.apply(config)
        except ConfigError as error:
            self.failures += 1
            log.error(
                "configuration NOT reloaded, %d problem(s); the previous one keeps running:",
                len(error.problems),
            )
            for problem in error.problems:
                log.error("  %s", problem)
            await self._record(
                trigger,
                Outcome.REFUSED,
                f"{len(error.problems)} problem(s); the previous configuration keeps running",
            )
            return False
        self.reloads += 1
        log.info(
            "configuration reloaded: %d route(s), %d destination(s)",
            len(config.routes),
            len(config.destinations),
        )
        log_warnings(config)
        await self._record(
            trigger,
            Outcome.OK,
            f"{len(config.routes)} route(s), {len(config.destinations)} destination(s)",
        )
        return True

    async def _record(self, trigger: str, outcome: str, detail: str) -> None:
        """Record the reload (in a thread: a commit, and perhaps the syslog export); a trail
        that cannot be written is logged, and the engine goes on."""
        if self.trail is None:
            return
        try:
            await asyncio.to_thread(
                self.trail.record,
                actions.CONFIG_RELOAD,
                objects=[ref("config", self.folder)],
                criteria={"trigger": trigger},
                outcome=outcome,
                detail=detail,
            )
        except Exception as error:
            log.error(
                "the configuration reload could not be recorded in the audit trail: %s",
                type(error).__name__,
            )


def log_warnings(config: PipelineConfig) -> None:
    """Log the configuration's warnings (file, line and setting: no message content)."""
    for warning in config.warnings:
        log.warning("configuration: %s", warning)
