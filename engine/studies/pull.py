"""Pulling the list of studies from a PACS into the study index: the windows of study dates,
the pull state, the saving; the archive is asked by the C-FIND client (``cfind.py``) or the
QIDO-RS client (``qido.py``).

A pull asks the archive for its studies window by window of study dates (``window_days``), from
where the previous pull of that archive and protocol got to (the newest study date it saw,
kept in ``pull_state``) up to today and beyond. The start is inclusive: the same day may have
gained studies since, and seeing a study again is harmless (the index upserts by UID). Answers
are streamed into the index in batches; each batch is its own transaction, and the pull state
moves on only after a whole window is saved, so an interrupted pull resumes where it stopped.

Nothing logged here at INFO or above carries patient data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, select

from engine.store.database import for_writing
from engine.store.schema import table_of
from engine.studies.cfind import DicomQuery
from engine.studies.flags import IN_THE_FUTURE, date_problem, study_flags
from engine.studies.index import SaveCounts, StudyRecord, save_studies
from engine.studies.placeholders import Placeholders
from engine.studies.qido import QidoQuery
from engine.studies.query import Protocol, StudyQuery, date_range
from engine.studies.settings import ArchiveSettings
from engine.studies.tables import PullState

__all__ = [
    "PullResult",
    "date_windows",
    "open_query",
    "pull_studies",
    "read_pull_state",
    "write_pull_state",
]

log = logging.getLogger(__name__)


@dataclass
class PullResult:
    """What one pull of one archive by one protocol did."""

    archive: str
    protocol: Protocol
    since: str
    """First study date asked for (YYYYMMDD); '' when every study was asked for."""
    counts: SaveCounts = field(default_factory=SaveCounts)
    queries: int = 0
    oldest: str = ""
    newest: str = ""
    """Oldest and newest study dates among the studies received ('' if none had one)."""
    skipped: int = 0
    """Answers without a usable Study Instance UID, or with values that could not be read."""
    flagged: int = 0
    """Studies received with implausible values (kept, flagged: :mod:`engine.studies.flags`)."""
    last_study_date: str = ""
    """Where the next incremental pull starts."""


def date_windows(start: str, today: date, days: int) -> list[tuple[str, str]]:
    """Study date windows from ``start`` (YYYYMMDD, '' = from the beginning) on.

    The last window is open-ended, so studies dated after today (a clock off at a modality)
    are not missed; without a start there is one window, which matches studies with no date too.

    >>> date_windows("20240101", date(2024, 2, 15), 31)
    [('20240101', '20240131'), ('20240201', '')]
    """
    if not start:
        return [("", "")]
    windows = []
    low = datetime.strptime(start, "%Y%m%d").date()
    while low + timedelta(days=days - 1) < today:
        high = low + timedelta(days=days - 1)
        windows.append((low.strftime("%Y%m%d"), high.strftime("%Y%m%d")))
        low = high + timedelta(days=1)
    windows.append((low.strftime("%Y%m%d"), ""))
    return windows


def open_query(archive: ArchiveSettings, protocol: Protocol) -> StudyQuery:
    """The query for ``protocol`` on ``archive`` (use it as a context manager)."""
    return DicomQuery(archive) if protocol == "dicom" else QidoQuery(archive)


def read_pull_state(engine: Engine, archive: str, protocol: str) -> str:
    """The newest study date an earlier pull saw ('' if none)."""
    with engine.connect() as connection:
        found = connection.execute(
            select(PullState.last_study_date).where(
                PullState.archive == archive, PullState.protocol == protocol
            )
        ).scalar()
    return found or ""


def write_pull_state(engine: Engine, archive: str, protocol: str, last_study_date: str) -> None:
    with for_writing(engine).begin() as connection:
        state = table_of(PullState)
        values = {"last_study_date": last_study_date, "pulled_at": datetime.now(UTC)}
        done = connection.execute(
            state.update()
            .where(state.c.archive == archive, state.c.protocol == protocol)
            .values(**values)
        )
        if done.rowcount == 0:
            connection.execute(state.insert().values(archive=archive, protocol=protocol, **values))


def pull_studies(
    engine: Engine,
    archive: ArchiveSettings,
    protocol: Protocol,
    *,
    since: str | None = None,
    full: bool = False,
    today: date | None = None,
    batch_size: int = 500,
    reconciler: Placeholders | None = None,
) -> PullResult:
    """Copy ``archive``'s studies into the index by ``protocol``; raise :class:`PullError`.

    The first study date asked for is ``since`` (YYYYMMDD) if given; else, unless ``full``,
    the newest study date the previous pull saw; else the archive's ``first_study_date``.
    Studies with implausible values are kept and counted (``reconciler``: its settings name
    the placeholders flagged).
    """
    day = today or date.today()
    previous = read_pull_state(engine, archive.name, protocol)
    if since is not None:
        start = since
    elif not full and previous:
        start = previous
    else:
        start = archive.start_date
    result = PullResult(archive.name, protocol, start, last_study_date=previous)
    source = f"archive:{archive.name}/{protocol}"
    # A mistyped future date must not become where every later pull starts.
    ceiling = day.strftime("%Y%m%d")

    def tracked(records: Iterator[StudyRecord]) -> Iterator[StudyRecord]:
        for record in records:
            if study_flags(record, reconciler, today=day):
                result.flagged += 1
            # Only a calendar date can say where the next pull starts (a future one: today).
            if record.study_date and date_problem(record.study_date, day) in ("", IN_THE_FUTURE):
                result.oldest = min(result.oldest or record.study_date, record.study_date)
                result.newest = max(result.newest, record.study_date)
            yield record

    with open_query(archive, protocol) as query:
        for low, high in date_windows(start, day, archive.window_days):
            shown = date_range(low, high) or "any date"
            log.info("archive %s (%s): asking for studies dated %s", archive.name, protocol, shown)
            result.queries += 1
            result.counts.add(
                save_studies(engine, tracked(query.find(low, high)), source, batch_size=batch_size)
            )
            reached = min(result.newest, ceiling)
            if reached > result.last_study_date:
                write_pull_state(engine, archive.name, protocol, reached)
                result.last_study_date = reached
        result.skipped = query.records_skipped
    write_pull_state(engine, archive.name, protocol, result.last_study_date)
    if result.skipped:
        log.warning(
            "archive %s (%s): %d answer(s) skipped (no usable Study Instance UID or unreadable)",
            archive.name,
            protocol,
            result.skipped,
        )
    log.info(
        "archive %s (%s): %d created, %d updated, %d unchanged; %d with flagged values",
        archive.name,
        protocol,
        result.counts.created,
        result.counts.updated,
        result.counts.unchanged,
        result.flagged,
    )
    return result
