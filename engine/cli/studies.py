"""``crosswalk studies``: the index of the PACS' studies — import, pull, orphans.

These commands display patient data (PHI) on purpose; the engine's logs never do.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal

import typer

from engine.audit import actions
from engine.audit.trail import criteria as recorded
from engine.audit.trail import ref
from engine.cli.auditing import audited, imported
from engine.cli.common import (
    DbOption,
    Encoding,
    Issuer,
    Strict,
    console,
    errors,
    load_config_or_fail,
    open_store_or_fail,
    print_report,
    run_import,
    shown_date,
)
from engine.cli.pull import pull
from engine.cli.tables import WORDS, Column, fit
from engine.config.model import EngineConfig
from engine.csv_import.rows import RowProblem
from engine.mpi.queries import medical_record_numbers
from engine.studies.flags import Flag
from engine.studies.importer import StudyImport
from engine.studies.orphans import (
    NAME_SIMILARITY,
    FieldConflict,
    Orphan,
    StudySummary,
    WrongPatient,
    classify,
)

app = typer.Typer(
    help="The index of the PACS' studies: import, pull, orphans.", no_args_is_help=True
)
DEFAULT_CONFIG = Path("routes")
ConfigOption = Annotated[
    Path,
    typer.Option(
        help="Configuration folder (its `reconciler:` section names the placeholder names and"
        " birth dates that are flagged; defaults when the folder does not exist)."
    ),
]


def _config(config: Path) -> EngineConfig:
    if config == DEFAULT_CONFIG and not config.exists():
        return EngineConfig.default()
    return load_config_or_fail(config)


@app.command("import")
def import_studies(
    file: Annotated[Path, typer.Argument(help="CSV export with a header line.", exists=True)],
    strict: Strict = False,
    issuer: Issuer = "",
    encoding: Encoding = "utf-8",
    config: ConfigOption = DEFAULT_CONFIG,
    db: DbOption = None,
) -> None:
    """Load a list of the PACS' studies (CSV) into the index: upserted by study_uid.

    The patient data stays as the PACS recorded it: an implausible value (a birth date that is
    no calendar date, a placeholder name) is kept, flagged and counted, not refused. Only a row
    without a Study Instance UID, or one that cannot be read, is reported with its line and
    reason and skipped; the exit code is then 1.
    """
    engine_config = _config(config)
    store = open_store_or_fail(db)

    def note(found: RowProblem) -> None:
        errors.print(f"{found.describe(file)} (kept)", markup=False, soft_wrap=True)

    job = StudyImport(
        store, file, issuer=issuer, encoding=encoding, settings=engine_config.reconciler
    )
    job.on_note = note
    wanted = recorded({"issuer": issuer, "strict": strict, "encoding": encoding})
    with audited(
        store,
        actions.STUDIES_IMPORT,
        objects=[ref("file", file)],
        criteria=wanted,
        config=engine_config,
    ) as audit:
        report = run_import(job, file, strict, encoding)
        audit.done(imported(report))
        print_report(file, report)


app.command("pull")(pull)


def _who(study: StudySummary) -> str:
    name = ", ".join(part for part in (study.family_name, study.given_name) if part)
    return f"{name or '(no name)'}  {shown_date(study.birth_date)}  {study.sex or '-'}"


def _ident(study: StudySummary) -> str:
    return f"{study.patient_id}^^^{study.issuer}" if study.issuer else study.patient_id or "-"


def _flags(flags: tuple[Flag, ...]) -> list[str]:
    return [str(flag) for flag in flags]


@app.command("orphans")
def orphans(
    assume_issuer: Annotated[
        str,
        typer.Option(
            help="Assigning authority of studies whose PACS recorded no issuer (default: match"
            " the id under any authority when exactly one patient holds it)."
        ),
    ] = "",
    name_similarity: Annotated[
        float,
        typer.Option(
            min=0.5,
            max=1.0,
            help="Jaro-Winkler similarity from which names count as the same (wrong-patient"
            " check).",
        ),
    ] = NAME_SIMILARITY,
    show: Annotated[
        Literal["all", "orphans", "wrong-patient"],
        typer.Option(help="Which list to print."),
    ] = "all",
    output: Annotated[
        Literal["table", "csv", "json"], typer.Option("--format", help="Output format.")
    ] = "table",
    limit: Annotated[int, typer.Option(help="At most this many of each list (0: all).")] = 0,
    config: ConfigOption = DEFAULT_CONFIG,
    db: DbOption = None,
) -> None:
    """Orphaned studies, and (listed separately) possible wrong-patient studies.

    Orphans: the patient id is no live MPI identifier. Wrong-patient: the id is live, but the
    name, birth date or sex the PACS recorded conflict with that patient. Each study shows its
    flags: the values the PACS recorded that cannot be right.
    """
    engine_config = _config(config)
    store = open_store_or_fail(db)
    wanted = recorded(
        {
            "assume_issuer": assume_issuer,
            "name_similarity": name_similarity,
            "show": show,
            "limit": limit,
        }
    )
    with audited(store, actions.STUDIES_ORPHANS, criteria=wanted, config=engine_config) as audit:
        found_orphans: list[Orphan] = []
        wrong: list[WrongPatient] = []
        counts = {"orphans": 0, "wrong-patient": 0}
        for item in classify(
            store,
            assume_issuer=assume_issuer,
            name_similarity=name_similarity,
            settings=engine_config.reconciler,
        ):
            kind = "orphans" if isinstance(item, Orphan) else "wrong-patient"
            counts[kind] += 1
            if show in ("all", kind) and (not limit or counts[kind] <= limit):
                (found_orphans if isinstance(item, Orphan) else wrong).append(item)  # type: ignore[arg-type]
        audit.detail = (
            f"{len(found_orphans)} orphaned and {len(wrong)} possible wrong-patient studies shown"
        )
        patients = [o.survivor for o in found_orphans if o.survivor] + [w.patient_id for w in wrong]
        with store.connect() as connection:
            mrns = {
                patient: f"{mrn}^^^{authority}" if authority else mrn
                for patient, (mrn, authority) in medical_record_numbers(
                    connection, patients
                ).items()
            }
        _print_orphans(found_orphans, wrong, counts, show, output, limit, mrns)


def _why(orphan: Orphan, mrns: dict[int, str]) -> str:
    """The reason, and for the id of a merged patient the MRN of the patient it is now."""
    if not orphan.survivor:
        return orphan.reason
    return f"{orphan.reason} (now {mrns.get(orphan.survivor) or f'patient {orphan.survivor}'})"


def _conflict(conflict: FieldConflict) -> str:
    """``birth_date: PACS '1939-10-08' ≠ MPI '1968-02-14'``: dates shown as everywhere else."""
    pacs, mpi = conflict.pacs, conflict.mpi
    if conflict.field == "birth_date":
        pacs, mpi = shown_date(pacs, ""), shown_date(mpi, "")
    return f"{conflict.field}: PACS {pacs!r} ≠ MPI {mpi!r}"


_ORPHAN_COLUMNS = (
    Column("study date"),
    Column("mod", drop=2),
    Column("accession"),
    Column("patient id"),
    Column("as recorded", WORDS),
    Column("why", WORDS, drop=3),
    Column("flags", WORDS, drop=1),
)
_WRONG_COLUMNS = (
    Column("study date"),
    Column("mod", drop=3),
    Column("accession"),
    Column("patient id"),
    Column("MPI patient", drop=2),
    Column("conflicts", WORDS),
    Column("flags", WORDS, drop=1),
)


def _print_orphans(
    found_orphans: list[Orphan],
    wrong: list[WrongPatient],
    counts: dict[str, int],
    show: str,
    output: str,
    limit: int,
    mrns: dict[int, str],
) -> None:
    """The lists as tables, CSV or JSON; ``mrns``: the MRN of each MPI patient named."""
    if output == "json":
        console.print_json(
            json.dumps(
                {
                    "orphans": [
                        dict(
                            asdict(o.study),
                            reason=o.reason,
                            survivor=o.survivor,
                            survivor_mrn=mrns.get(o.survivor, "") if o.survivor else "",
                            flags=_flags(o.flags),
                        )
                        for o in found_orphans
                    ],
                    "wrong_patient": [
                        dict(
                            asdict(w.study),
                            mpi_patient=w.patient_id,
                            mpi_mrn=mrns.get(w.patient_id, ""),
                            conflicts=[asdict(c) for c in w.conflicts],
                            flags=_flags(w.flags),
                        )
                        for w in wrong
                    ],
                }
            )
        )
        return
    if output == "csv":
        writer = csv.writer(sys.stdout)
        header = ["list", *StudySummary.__slots__, "reason", "mpi_patient", "mpi_mrn", "flags"]
        writer.writerow(header)
        for o in found_orphans:
            flags = "; ".join(_flags(o.flags))
            survivor = mrns.get(o.survivor, "") if o.survivor else ""
            writer.writerow(
                ["orphan", *asdict(o.study).values(), o.reason, o.survivor or "", survivor, flags]
            )
        for w in wrong:
            reason = "; ".join(f"{c.field}: PACS {c.pacs!r}, MPI {c.mpi!r}" for c in w.conflicts)
            flags = "; ".join(_flags(w.flags))
            mrn = mrns.get(w.patient_id, "")
            writer.writerow(
                ["wrong-patient", *asdict(w.study).values(), reason, w.patient_id, mrn, flags]
            )
        return
    notes = []
    if show in ("all", "orphans"):
        fitted = fit(
            console,
            _ORPHAN_COLUMNS,
            (
                (
                    shown_date(o.study.study_date),
                    o.study.modality,
                    o.study.accession,
                    _ident(o.study),
                    _who(o.study),
                    o.reason
                    + (
                        f" (now {mrns.get(o.survivor) or f'patient {o.survivor}'})"
                        if o.survivor
                        else ""
                    ),
                    "\n".join(_flags(o.flags)),
                )
                for o in found_orphans
            ),
            title=f"orphaned studies: {counts['orphans']}",
            title_justify="left",
            show_edge=False,
        )
        console.print(fitted.table)
        notes.append(fitted)
    if show in ("all", "wrong-patient"):
        fitted = fit(
            console,
            _WRONG_COLUMNS,
            (
                (
                    shown_date(w.study.study_date),
                    w.study.modality,
                    w.study.accession,
                    _ident(w.study),
                    mrns.get(w.patient_id) or f"patient {w.patient_id}",
                    "\n".join(_conflict(c) for c in w.conflicts),
                    "\n".join(_flags(w.flags)),
                )
                for w in wrong
            ),
            title=f"possible wrong-patient studies: {counts['wrong-patient']}",
            title_justify="left",
            show_edge=False,
        )
        console.print(fitted.table)
        notes.append(fitted)
    dropped = sorted({header for fitted in notes for header in fitted.dropped})
    if dropped:
        console.print(
            f"(left out to fit the terminal: {', '.join(dropped)}; widen the terminal or use"
            " --format csv)"
        )
    shown = sum(len(x) for x in (found_orphans, wrong))
    if limit and shown < sum(counts.values()):
        console.print(f"(the first {limit} of each list; --limit 0 shows all)")
