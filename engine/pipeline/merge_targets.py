"""Merge targets' queues: each approved merge's job applied to an archive directly (Orthanc).

A target is a queue like any destination's — in the store, in order, retried with back-off,
paused and resumed by ``crosswalk queue`` — whose work is a few REST calls instead of an MLLP
send. An archive that cannot be reached (or refuses the credentials) keeps the job queued and is
tried again; a job the archive cannot do (the study is not there) is set aside with the reason.
Each change made in an archive is recorded in the audit trail, the engine as the actor.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import Engine

from engine.audit import actions
from engine.audit.tables import Outcome
from engine.audit.trail import Trail, ref
from engine.leases.records import LeaseLost
from engine.merge_targets.job import ArchiveJob, JobError
from engine.merge_targets.orthanc import (
    ArchiveRefusal,
    ArchiveUnavailable,
    Moved,
    OrthancClient,
    move_study,
)
from engine.merge_targets.settings import MergeTargetSettings
from engine.pipeline.delivery import DeliveryService, QueueWorker
from engine.store.operations import DeliveryUpdate, QueuedDelivery
from engine.store.schema import DeliveryState
from engine.store.writer import StoreWriter

log = logging.getLogger(__name__)


class MergeTargetWorker(QueueWorker):
    """Works one merge target's queue: each job moves one study to the MPI patient."""

    def __init__(
        self,
        settings: MergeTargetSettings,
        writer: StoreWriter,
        store: Engine,
        trail: Trail | None = None,
    ) -> None:
        super().__init__(settings.name, 0, writer, store)
        self.settings = settings
        warn_insecure(settings)
        self.trail = trail
        self.errored = 0

    def fresh(self) -> MergeTargetWorker:
        return MergeTargetWorker(self.settings, self.writer, self.store, self.trail)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                delivery = await self._next()
                if delivery is None:
                    continue
                await self._resumed.wait()
                if self._stopping:
                    break
                await self._work(delivery)
            except asyncio.CancelledError:
                raise
            except LeaseLost:
                await self.parked()
            except Exception as error:
                # No values (PHI) in the log: the kind of error, and where.
                log.error(
                    "merge target %s: worker failed (%s); restarting it in 5s; at (values"
                    " omitted):\n%s",
                    self.name,
                    type(error).__name__,
                    "".join(traceback.format_tb(error.__traceback__)).rstrip(),
                )
                self._restart_from_store()
                await asyncio.sleep(5)

    async def _work(self, delivery: QueuedDelivery) -> None:
        """Apply the head of the queue until it is settled (done, or set aside)."""
        attempts = delivery.attempts
        backoff = 0.0
        while not self._stopping:
            await self._resumed.wait()
            attempts += 1
            settings = self.settings  # a reload may change them between tries
            self.check_lease()  # no change to the archive after another engine took the queue
            try:
                job = ArchiveJob.decode(delivery.payload)
                moved = await asyncio.to_thread(_apply, settings, job)
            except ArchiveUnavailable as error:
                backoff = min(settings.retry_max, backoff * 2 or settings.retry_initial)
                log.warning(
                    "merge target %s: job %d not done (the archive is unavailable); tried again"
                    " in %.1fs; `crosswalk queue status` says why",
                    self.name,
                    delivery.id,
                    backoff,
                )
                due = datetime.now(UTC) + timedelta(seconds=backoff)
                self.writer.submit(
                    DeliveryUpdate(
                        delivery.id,
                        DeliveryState.QUEUED,
                        attempts,
                        str(error),
                        None,
                        next_attempt_at=due,
                        fence=self.fence,
                    )
                )
                if await self._sleep(backoff):
                    backoff = 0.0
                continue
            except (ArchiveRefusal, JobError) as error:
                # The reason may name the study's values (the archive's words): it is stored
                # with the delivery, the log names only the job.
                log.error(
                    "merge target %s: job %d set aside; see `crosswalk queue status %s`",
                    self.name,
                    delivery.id,
                    self.name,
                )
                await self._settle(delivery, DeliveryState.ERRORED, attempts, str(error), None)
                await self._record(delivery, Outcome.REFUSED, "set aside: the archive cannot do it")
                return
            note = f"{moved.outcome}: Orthanc study {moved.study}, {moved.instances} instance(s)"
            await self._settle(delivery, DeliveryState.DELIVERED, attempts, "", note)
            if moved.outcome == "changed":
                await self._record(delivery, Outcome.OK, note, job.proposal_id)
            log.info("merge target %s: job %d %s", self.name, delivery.id, moved.outcome)
            return

    async def _settle(
        self, delivery: QueuedDelivery, state: str, attempts: int, error: str, note: str | None
    ) -> None:
        """Commit the job's outcome, then move on (a failed commit restarts from the store:
        the job is applied again, and finds it done)."""
        answer = note.encode() if note is not None else None
        await self.writer.run(
            DeliveryUpdate(delivery.id, state, attempts, error, answer, fence=self.fence)
        )
        self.items.popleft()
        if state == DeliveryState.DELIVERED:
            self.delivered += 1
        else:
            self.errored += 1

    async def _record(
        self, delivery: QueuedDelivery, outcome: str, detail: str, proposal: int | None = None
    ) -> None:
        """Record the change made in the archive (ids only); a trail that cannot be written
        is logged, and the queue goes on."""
        if self.trail is None:
            return
        objects = [ref("merge_target", self.name), ref("delivery", delivery.id)]
        if proposal is not None:
            objects.append(ref("proposal", proposal))
        try:
            await asyncio.to_thread(
                self.trail.record,
                actions.ARCHIVE_MODIFY,
                objects=objects,
                outcome=outcome,
                detail=detail,
            )
        except Exception as error:
            log.error(
                "merge target %s: the change could not be recorded in the audit trail: %s",
                self.name,
                type(error).__name__,
            )


def warn_insecure(settings: MergeTargetSettings) -> None:
    """Say so when a target's password would cross the network unencrypted, or its https
    certificate is not checked."""
    parts = urlsplit(settings.url)
    if parts.scheme == "http" and settings.username and not _loopback(parts.hostname or ""):
        log.error(
            "merge target %s: its password and the patients' data go to %s unencrypted (http);"
            " use https",
            settings.name,
            parts.hostname,
        )
    if settings.tls is not None and settings.tls.insecure_skip_verify:
        log.error(
            "merge target %s: TLS certificate verification is OFF (insecure_skip_verify)",
            settings.name,
        )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _apply(settings: MergeTargetSettings, job: ArchiveJob) -> Moved:
    if settings.kind != "orthanc":  # refused by the configuration's check; never queued
        raise ArchiveRefusal(f"merge target {settings.name!r}: kind {settings.kind} cannot apply")
    return move_study(OrthancClient(settings), job)


def run_merge_targets(
    delivery: DeliveryService,
    targets: Mapping[str, MergeTargetSettings],
    writer: StoreWriter,
    store: Engine,
    trail: Trail | None,
) -> None:
    """Start a worker for each new target and give changed ones their new settings. A target
    removed from the configuration keeps working what it has queued until the engine restarts
    (its jobs are approvals already made)."""
    for name, settings in targets.items():
        workers = delivery.configured((name, 0))
        for worker in workers:
            if isinstance(worker, MergeTargetWorker):
                if worker.settings != settings:
                    warn_insecure(settings)
                worker.settings = settings
        if not workers:
            delivery.add(MergeTargetWorker(settings, writer, store, trail))
