"""``crosswalk mpi``: load an MPI export, show a patient, search patients.

These commands display patient data (PHI) on purpose; the engine's logs never do.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.text import Text
from sqlalchemy import Engine

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
    fail,
    local_time,
    open_store_or_fail,
    print_report,
    run_import,
    shown_date,
)
from engine.cli.tables import TEXT, WORDS, Column, Fitted, fit
from engine.csv_import.rows import RowError
from engine.mpi.demographics import date_column
from engine.mpi.importer import MpiImport, event_time_of
from engine.mpi.queries import PatientView, identifiers_of, patients_with_identifier, search, view
from engine.mpi.tables import Patient

app = typer.Typer(help="The master patient index: import, show, search.", no_args_is_help=True)

Format = Annotated[Literal["table", "json"], typer.Option("--format", help="Output format.")]


@app.command("import")
def import_mpi(
    file: Annotated[Path, typer.Argument(help="CSV export with a header line.", exists=True)],
    strict: Strict = False,
    issuer: Issuer = "",
    as_of: Annotated[
        str | None,
        typer.Option(
            help="When the export was taken (2026-11-23T06:00, local time); default: the"
            " file's modification time. ADT updates older than this do not override it."
        ),
    ] = None,
    encoding: Encoding = "utf-8",
    db: DbOption = None,
) -> None:
    """Load (or refresh) the MPI from an export: rows are upserted by (issuer, mrn).

    A bad row is reported with its line and reason and skipped; the exit code is then 1.
    """
    when = None
    if as_of:
        try:
            when = event_time_of(datetime.fromisoformat(as_of))
        except ValueError:
            fail(f"--as-of {as_of!r} is not a date/time such as 2026-11-23T06:00")
    store = open_store_or_fail(db)
    job = MpiImport(
        store,
        file,
        as_of=when,
        issuer=issuer,
        encoding=encoding,
        command=" ".join(["crosswalk", *sys.argv[1:]])[:200],
    )
    wanted = recorded({"issuer": issuer, "as_of": as_of, "strict": strict, "encoding": encoding})
    with audited(store, actions.MPI_IMPORT, objects=[ref("file", file)], criteria=wanted) as audit:
        report = run_import(job, file, strict, encoding)
        audit.done(imported(report))
        print_report(file, report)


def _view_json(found: PatientView) -> dict[str, object]:
    p = found.patient
    return {
        "id": p.id,
        "merged_into": p.merged_into,
        "family_name": p.family_name,
        "given_name": p.given_name,
        "middle_name": p.middle_name,
        "birth_date": p.birth_date,
        "sex": p.sex,
        "street": p.street,
        "city": p.city,
        "state": p.state,
        "postal_code": p.postal_code,
        "phone": p.phone,
        "identifiers": [
            {"value": i.shown_value, "authority": i.authority, "type": i.type_code}
            for i in found.identifiers
        ],
        "other_names": [
            {
                "kind": n.kind,
                "family": n.family_name,
                "given": n.given_name,
                "middle": n.middle_name,
            }
            for n in found.names
        ],
        "merged_in": [m.id for m in found.merged_in],
        "orders": [
            {"accession": o.accession, "placer": o.placer_number, "control": o.order_control}
            for o in found.orders
        ],
        "history": [
            {
                "recorded_at": e.recorded_at.isoformat(),
                "kind": e.kind,
                "event_time": e.event_time,
                "message_id": e.message_id,
                "command": e.command,
                "detail": e.detail,
            }
            for e in found.events
        ],
    }


def _print_view(found: PatientView) -> None:
    p = found.patient
    name = " ".join(part for part in (p.given_name, p.middle_name, p.family_name) if part)
    title = Text.assemble((f"Patient {p.id}", "bold"), f"  {name or '(no name)'}")
    if p.merged_into is not None:
        title.append(f"  merged into patient {p.merged_into}", style="bold yellow")
    console.print(title)
    address = ", ".join(part for part in (p.street, p.city, p.state, p.postal_code) if part)
    console.print(
        f"born {shown_date(p.birth_date)}, sex {p.sex or '-'}; address {address or '-'};"
        f" phone {p.phone or '-'}",
        soft_wrap=True,
    )
    notes: list[Fitted] = []

    def show(columns: tuple[Column, ...], rows: list[tuple[str, ...]], title: str) -> None:
        fitted = fit(console, columns, rows, title=title, title_justify="left", show_edge=False)
        console.print(fitted.table)
        notes.append(fitted)

    show(
        _IDENTIFIER_COLUMNS,
        [
            (i.shown_value, i.authority or "-", i.type_code or "-", str(i.merged_from or ""))
            for i in found.identifiers
        ],
        "identifiers",
    )
    if found.names:
        show(
            _NAME_COLUMNS,
            [(n.kind, n.family_name, n.given_name, n.middle_name) for n in found.names],
            "other names",
        )
    if found.merged_in:
        console.print(
            "merged into this patient: " + ", ".join(f"patient {m.id}" for m in found.merged_in)
        )
    if found.orders:
        show(
            _ORDER_COLUMNS,
            [
                (
                    o.accession,
                    o.placer_number,
                    o.filler_number,
                    o.procedure_code,
                    o.order_control,
                    o.event_time[:14],
                )
                for o in found.orders
            ],
            "orders",
        )
    show(
        _HISTORY_COLUMNS,
        [
            (
                local_time(e.recorded_at),
                e.kind,
                e.event_time[:14],
                f"message {e.message_id}" if e.message_id else e.command or "-",
                e.detail,
            )
            for e in found.events
        ],
        "history",
    )
    dropped = sorted({header for fitted in notes for header in fitted.dropped})
    if dropped:
        console.print(
            f"(left out to fit the terminal: {', '.join(dropped)}; --format json has all)"
        )


_IDENTIFIER_COLUMNS = (
    Column("value"),
    Column("authority"),
    Column("type"),
    Column("came with a merge from", WORDS),
)
_NAME_COLUMNS = (
    Column("kind"),
    Column("family", WORDS),
    Column("given", WORDS),
    Column("middle", WORDS),
)
_ORDER_COLUMNS = (
    Column("accession"),
    Column("placer", drop=2),
    Column("filler", drop=1),
    Column("procedure", drop=3),
    Column("control"),
    Column("event time"),
)
_HISTORY_COLUMNS = (
    Column("recorded", WORDS),
    Column("event"),
    Column("event time", drop=1),
    Column("cause", TEXT),
    Column("detail", TEXT),
)


@app.command("show")
def show(
    mrn: Annotated[str, typer.Argument(help="An identifier of the patient (MRN).")],
    issuer: Annotated[
        str | None, typer.Option(help="Its assigning authority, when several share the value.")
    ] = None,
    output: Format = "table",
    db: DbOption = None,
) -> None:
    """Everything the MPI knows about a patient: identifiers, names, orders, history."""
    store = open_store_or_fail(db)
    # The identifier asked for is PHI: recorded as given; the patients shown are the objects.
    wanted = recorded({"identifier": mrn, "issuer": issuer}, private=("identifier",))
    with audited(store, actions.MPI_SHOW, criteria=wanted) as audit:
        found = [view(store, pid) for pid in patients_with_identifier(store, mrn, issuer)]
        views = [v for v in found if v is not None]
        audit.add("patient", *(v.patient.id for v in views))
        if not views:
            audit.refuse("no such patient")
            fail(f"no patient has the identifier {mrn}" + (f" of {issuer}" if issuer else ""), 1)
        if output == "json":
            console.print_json(json.dumps([_view_json(v) for v in views]))
            return
        for index, one in enumerate(views):
            if index:
                console.rule()
            _print_view(one)


def _name_parts(name: str) -> tuple[str, str]:
    for separator in ("^", ","):
        if separator in name:
            family, given = name.split(separator, 1)
            return family.strip(), given.strip().split(separator)[0].strip()
    return name.strip(), ""


@app.command("search")
def search_patients(
    name: Annotated[
        str | None,
        typer.Option(
            help="Family name, or FAMILY^GIVEN / 'FAMILY, GIVEN'; prefixes, any case;"
            " earlier names and aliases count."
        ),
    ] = None,
    birth_date: Annotated[
        str | None, typer.Option(help="Birth date, YYYY-MM-DD or YYYYMMDD.")
    ] = None,
    include_merged: Annotated[
        bool, typer.Option(help="Also list patients merged into others.")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many patients.")] = 50,
    output: Format = "table",
    db: DbOption = None,
) -> None:
    """Find patients by name and birth date."""
    if not name and not birth_date:
        fail("give --name, --birth-date or both")
    family, given = _name_parts(name or "")
    try:
        born = date_column({"birth_date": birth_date or ""}, "birth_date")
    except RowError as error:
        fail(f"--birth-date {error}".replace("birth_date: ", ""))
    store = open_store_or_fail(db)
    wanted = recorded(
        {
            "name": name,
            "birth_date": birth_date,
            "include_merged": include_merged,
            "limit": limit,
        },
        private=("name", "birth_date"),
    )
    with audited(store, actions.MPI_SEARCH, criteria=wanted) as audit:
        patients = search(
            store,
            family=family or None,
            given=given or None,
            birth_date=born or None,
            include_merged=include_merged,
            limit=limit,
        )
        audit.add("patient", *(p.id for p in patients))
        _print_patients(store, patients, limit, output)


def _print_patients(store: Engine, patients: Sequence[Patient], limit: int, output: str) -> None:
    ids = identifiers_of(store, [p.id for p in patients])
    if output == "json":
        console.print_json(
            json.dumps(
                [
                    {
                        "id": p.id,
                        "family_name": p.family_name,
                        "given_name": p.given_name,
                        "birth_date": p.birth_date,
                        "sex": p.sex,
                        "merged_into": p.merged_into,
                        "identifiers": [f"{v}^^^{a}" if a else v for v, a in ids.get(p.id, [])],
                    }
                    for p in patients
                ]
            )
        )
        return
    if not patients:
        console.print("no patients match")
        return
    rows = []
    for p in patients:
        label = ", ".join(part for part in (p.family_name, p.given_name) if part)
        if p.middle_name:
            label += f" {p.middle_name}"
        if p.merged_into is not None:
            label += f" (merged into {p.merged_into})"
        rows.append(
            (
                str(p.id),
                label,
                shown_date(p.birth_date),
                p.sex or "-",
                " ".join(f"{v}^^^{a}" if a else v for v, a in ids.get(p.id, [])),
                p.city,
            )
        )
    fitted = fit(console, _PATIENT_COLUMNS, rows, show_edge=False, header_style="bold")
    console.print(fitted.table)
    if fitted.dropped:
        console.print(fitted.note("widen the terminal or use --format json"))
    if len(patients) == limit:
        console.print(f"(the first {limit}; narrow the search or raise --limit)")


_PATIENT_COLUMNS = (
    Column("id"),
    Column("name", WORDS),
    Column("born"),
    Column("sex"),
    Column("identifiers", WORDS),
    Column("city", WORDS, drop=1),
)
