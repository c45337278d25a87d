"""What the CLI commands share: consoles, the database option, failing with a clear message."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from sqlalchemy import Engine

from engine.config.loader import load_config
from engine.config.model import EngineConfig
from engine.csv_import.importer import CsvImport, ImportReport
from engine.csv_import.rows import CsvError, RowProblem
from engine.hl7v2.message_file import MessageFile, read_message_file
from engine.mllp.tls import ClientTLS
from engine.settings import ConfigError, Duration
from engine.store import crypto
from engine.store.database import StoreError, open_store
from engine.store.settings import StoreSettings

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database URL or SQLite file (default: $CROSSWALK_DB, else ./crosswalk.db).",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    errors.print(f"[bold red]error:[/] {message}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def parse_when(text: str) -> datetime:
    """A moment from ``2026-11-23``, ``2026-11-23T14:05`` (local time) or ``2h`` / ``30m`` ago."""
    stripped = text.strip()
    if stripped and stripped[-1] in "smhd" and stripped[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(Duration.parse(stripped)))
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date/time (2026-11-23, 2026-11-23T14:05) or an age (2h, 30m, 7d)"
        ) from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.astimezone().astimezone(UTC)


def write_records(
    records: list[dict[str, Any]], output: str, columns: Sequence[str], target: TextIO | None = None
) -> None:
    """``records`` on ``target`` (stdout): CSV with a header of ``columns``, or ``json``."""
    out = target or sys.stdout
    if output == "json":
        json.dump(records, out, indent=1, ensure_ascii=False, default=str)
        out.write("\n")
        return
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)


def shown_date(text: str, empty: str = "-") -> str:
    """A stored YYYYMMDD date as YYYY-MM-DD; anything else as it is, ``empty`` for nothing."""
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text or empty


def local_time(moment: datetime) -> str:
    """A stored (UTC) moment in the machine's local time, to the second."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def open_store_or_fail(db: str | None) -> Engine:
    """The store for ``--db``, or exit with the reason it cannot be opened. Encrypted content
    is read (and written) with the keys the configuration or ``$CROSSWALK_KEYS`` names."""
    if crypto.current_keyring() is None:
        use_keys(StoreSettings(encrypt_content=True))
    try:
        return open_store(db)
    except StoreError as error:
        fail(str(error))


def use_keys(settings: StoreSettings) -> None:
    """Read and write content with the keys ``settings`` name (none: clear content)."""
    try:
        crypto.configure(settings.keyring())
    except crypto.ContentError as error:
        fail(str(error))


def load_config_or_fail(folder: Path, *, code: int = 2, consequence: str = "") -> EngineConfig:
    """The configuration in ``folder``, or print every problem and exit with ``code``."""
    try:
        config = load_config(folder)
    except ConfigError as error:
        for problem in error.problems:
            errors.print(str(problem), markup=False, soft_wrap=True)
        fail(f"{len(error.problems)} problem(s) in {folder}{consequence}", code)
    use_keys(config.store)
    return config


def read_message_files_or_fail(paths: list[Path], consequence: str) -> list[MessageFile]:
    """The messages of ``paths``, or print what cannot be read (file:line) and exit 2."""
    batches = [read_message_file(path) for path in paths]
    problems = [problem for batch in batches for problem in batch.problems]
    if problems:
        for problem in problems:
            errors.print(problem, markup=False, soft_wrap=True)
        fail(consequence)
    return batches


@contextmanager
def file_progress(path: Path, verb: str) -> Iterator[Callable[[int], None]]:
    """A progress bar over the bytes of ``path`` (on stderr, when it is a terminal).

    Yields the function to call with how many bytes have been read so far.
    """
    columns = (
        TextColumn(f"{verb} {path.name}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=errors, disable=not errors.is_terminal) as progress:
        task = progress.add_task(verb, total=max(path.stat().st_size, 1))
        yield lambda done: progress.update(task, completed=done)


Strict = Annotated[
    bool, typer.Option(help="Check the whole file first; stop at the first bad row.")
]
Encoding = Annotated[str, typer.Option(help="The file's character set.")]
Issuer = Annotated[
    str, typer.Option(help="Assigning authority for rows whose issuer column is empty.")
]


def run_import(job: CsvImport[Any], file: Path, strict: bool, encoding: str) -> ImportReport:
    """Run a CSV import with progress and problems on the terminal (``--strict`` first checks)."""

    def problem(found: RowProblem) -> None:
        errors.print(found.describe(file), markup=False, soft_wrap=True)

    job.on_problem = problem
    try:
        if strict:
            with file_progress(file, "checking") as job.on_progress:
                first = job.check()
            if first is not None:
                problem(first)
                fail("--strict: nothing was imported", 1)
        with file_progress(file, "importing") as job.on_progress:
            report = job.run()
    except CsvError as error:
        fail(str(error))
    except LookupError:
        fail(f"unknown --encoding {encoding!r}")
    if report.unknown_columns:
        errors.print(f"ignored column(s): {', '.join(report.unknown_columns)}", markup=False)
    return report


def print_report(file: Path, report: ImportReport) -> None:
    """One line: how many rows did what; exit 1 when some were skipped (a row kept with
    flagged values is no error)."""
    flagged = ""
    if report.flagged:
        fields = ", ".join(f"{name}: {count}" for name, count in sorted(report.flags.items()))
        flagged = f"; {report.flagged} kept with flags ({fields})"
    console.print(
        f"{file}: {report.rows} row(s) imported: {report.created} created,"
        f" {report.updated} updated, {report.unchanged} unchanged"
        + (f", {report.stale} older than the MPI's data (not applied)" if report.stale else "")
        + flagged
        + f"; {report.skipped} bad row(s) skipped"
    )
    if report.skipped:
        raise typer.Exit(1)


# --- TLS options of the commands that connect out (send, studies pull) -----------------------

TlsCa = Annotated[
    Path | None,
    typer.Option(help="CA certificate(s) the server's certificate must chain to (implies TLS)."),
]
TlsCert = Annotated[
    Path | None, typer.Option(help="Client certificate, for mutual TLS (implies TLS).")
]
TlsKey = Annotated[Path | None, typer.Option(help="Its private key.")]
TlsServerName = Annotated[
    str | None, typer.Option(help="The name the server's certificate must carry.")
]
TlsMinVersion = Annotated[str, typer.Option(help="The lowest TLS version accepted: 1.2 or 1.3.")]
InsecureSkipVerify = Annotated[
    bool, typer.Option(help="Do not verify the server's certificate (tests only).")
]


def client_tls_or_fail(
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    server_name: str | None,
    min_version: str,
    insecure_skip_verify: bool,
    *,
    wanted: bool = False,
) -> ClientTLS | None:
    """The ``tls:`` a command's options describe (None when none is asked for), checked as the
    configuration's would be; each problem ends the command with one line."""
    if not (wanted or ca or cert or server_name or insecure_skip_verify):
        return None
    if min_version not in ("1.2", "1.3"):
        fail(f"--tls-min-version {min_version!r} is not one of 1.2, 1.3")
    options = ClientTLS(
        ca=ca,
        cert=cert,
        key=key,
        server_name=server_name,
        min_version=min_version,  # type: ignore[arg-type]  # checked above
        insecure_skip_verify=insecure_skip_verify,
    )
    problems = options.check()
    if problems:
        fail("; ".join(problem.message for problem in problems))
    if insecure_skip_verify:
        errors.print("[bold red]warning:[/] the server's certificate is not verified")
    return options
