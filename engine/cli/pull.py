"""``crosswalk studies pull``: copy the list of studies of a PACS into the study index."""

from __future__ import annotations

import dataclasses
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from engine.audit import actions
from engine.cli.auditing import audited
from engine.cli.common import (
    DbOption,
    InsecureSkipVerify,
    TlsCa,
    TlsCert,
    TlsKey,
    TlsMinVersion,
    TlsServerName,
    client_tls_or_fail,
    console,
    errors,
    fail,
    load_config_or_fail,
    open_store_or_fail,
    shown_date,
)
from engine.studies.pull import PullResult, pull_studies
from engine.studies.query import PROTOCOLS, PullError
from engine.studies.settings import ArchiveSettings, parse_study_date


class ProtocolChoice(StrEnum):
    dicom = "dicom"
    dicomweb = "dicomweb"
    both = "both"


def _choose(
    archives: dict[str, ArchiveSettings], name: str | None, config: Path
) -> ArchiveSettings:
    if name is not None:
        if name not in archives:
            fail(f"no archive {name!r} in {config}; archives are: {', '.join(archives) or 'none'}")
        return archives[name]
    if not archives:
        fail(f"no archives are configured in {config}; add an `archives:` section")
    if len(archives) > 1:
        fail(f"{len(archives)} archives are configured; name one of: {', '.join(archives)}")
    return next(iter(archives.values()))


def _summary(result: PullResult) -> str:
    counts = result.counts
    asked = f"from {shown_date(result.since, '')}" if result.since else "of any date"
    text = (
        f"{result.archive} ({result.protocol}): studies {asked}, {result.queries} query(ies):"
        f" {counts.created} created, {counts.updated} updated, {counts.unchanged} unchanged"
    )
    if result.oldest == result.newest != "":
        text += f"; study date {shown_date(result.oldest, '')}"
    elif result.oldest:
        text += f"; study dates {shown_date(result.oldest, '')} to {shown_date(result.newest, '')}"
    if result.flagged:
        text += f"; {result.flagged} with flagged values (kept)"
    if result.skipped:
        text += f"; {result.skipped} answer(s) skipped"
    if result.last_study_date:
        text += f"; next pull starts at {shown_date(result.last_study_date, '')}"
    return text


def pull(
    archive: Annotated[
        str | None,
        typer.Argument(
            help="The archive, by its name under `archives:` (optional if only one).",
            metavar="ARCHIVE",
            show_default=False,
        ),
    ] = None,
    config: Annotated[Path, typer.Option(help="Configuration folder.")] = Path("routes"),
    db: DbOption = None,
    protocol: Annotated[
        ProtocolChoice | None,
        typer.Option(
            help="Query by DICOM C-FIND, DICOMweb QIDO-RS, or both (default: what the archive"
            " has; both when it has both).",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Ask for studies dated from this day (YYYY-MM-DD) instead of from where the"
            " last pull got to.",
            metavar="YYYY-MM-DD",
            show_default=False,
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Ask again for every study (from the archive's first_study_date)."
        ),
    ] = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    tls_min_version: TlsMinVersion = "1.2",
    insecure_skip_verify: InsecureSkipVerify = False,
) -> None:
    """Copy the studies of ARCHIVE (a PACS) into the study index, by C-FIND and/or QIDO-RS.

    Incremental: each pull starts at the newest study date the previous one saw (that day
    included), per archive and protocol.
    """
    if since is not None and full:
        fail("--since and --full cannot be combined")
    start = None
    if since is not None:
        start = parse_study_date(since)
        if start is None:
            fail(f"--since {since!r} is not a date (YYYY-MM-DD)")
    engine_config = load_config_or_fail(config)
    settings = _choose(engine_config.archives, archive, config)
    tls = client_tls_or_fail(
        tls_ca, tls_cert, tls_key, tls_server_name, tls_min_version, insecure_skip_verify
    )
    if tls is not None:  # the options stand for the archive's `tls:` section
        settings = dataclasses.replace(settings, tls=tls)
    configured = settings.protocols
    wanted = configured if protocol in (None, ProtocolChoice.both) else (protocol.value,)
    if protocol is ProtocolChoice.both:
        wanted = PROTOCOLS
    missing = [p for p in wanted if p not in configured]
    if missing:
        key = {"dicom": "dicom_host", "dicomweb": "dicomweb_url"}
        fail(
            f"archive {settings.name!r} has no {' or '.join(key[p] for p in missing)};"
            f" it can be queried by: {', '.join(configured)}"
        )
    protocols = [p for p in PROTOCOLS if p in wanted]
    engine = open_store_or_fail(db)
    # pynetdicom logs each association step; the reason of a failure is in our error message.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    failed = 0
    criteria = {"archive": settings.name, "protocol": ",".join(protocols)}
    try:
        with audited(engine, actions.STUDIES_PULL, criteria=criteria, config=engine_config):
            for name in protocols:
                try:
                    result = pull_studies(
                        engine,
                        settings,
                        name,
                        since=start,
                        full=full,
                        reconciler=engine_config.reconciler,
                    )
                except PullError as error:
                    errors.print(f"[bold red]error:[/] {error}", markup=True, soft_wrap=True)
                    failed += 1
                    continue
                console.print(_summary(result), markup=False, soft_wrap=True)
    finally:
        engine.dispose()
    if failed:
        fail(
            f"{failed} of {len(protocols)} pull(s) failed; the studies saved before the error"
            " are kept, and the next pull starts where this one got to",
            1,
        )
