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
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import importlib.util
import io
import json
import os
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpi import run_child
from orphans import ISSUER, JUNIOR, TWIN, generate
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.engine import make_url

from engine.mpi.tables import Order, Patient, PatientIdentifier
from engine.store.database import for_writing, open_store
from engine.store.fastsql import in_values

STRONG_PRECISION = 0.995
TOP1_RECALL = 0.95
WALL_SECONDS = 60
RSS_MIB = 2048
SPLINK_THRESHOLD = 0.5
SPLINK_FLOOR = 0.001
"""Splink's candidates are kept from this probability, for its best threshold in hindsight."""
SCALE = (1_000_000, 10_000)
"""The size the wall-time and memory targets are for."""
ABSENT_LABELS = {"absent", "trauma"}
"""Scenarios whose truth is 'no MPI patient': right means proposing nobody."""


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
        for proposal in strong:
            if (expected := truth.get(proposal.study_uid)) is None:
                continue
            if proposal.rank == 1:
                scores.strong += 1
                scores.strong_correct += proposal.mrn == expected.mrn
            scores.twins_strong += _trap(TWIN, expected, proposal.mrn, siblings)
            scores.juniors_strong += _trap(JUNIOR, expected, proposal.mrn, siblings)
    return scores


def score_export(
    truth: dict[str, Truth], siblings: dict[str, tuple[str, str]], proposals: list[Proposal]
) -> Scores:
    top = {p.study_uid: p.mrn for p in proposals if p.rank == 1}
    return score(truth, top, siblings, [p for p in proposals if p.band == "strong"])


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


def _ratio(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _share(counts: Counter[str], outcome: str) -> str:
    total = sum(counts.values())
    return f"{100 * counts[outcome] / total:5.1f}%" if total else "—"


Column = tuple[str, Scores, tuple[float, int]]
"""A contender: name, scores, (wall seconds, peak RSS MiB)."""


def report(columns: list[Column], scale: tuple[int, int]) -> bool:
    """Print the comparison (ours first) and the targets; whether every target is met."""
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
        *((f"F1 better than {name}", ours.f1 > s.f1) for name, s, _ in columns[1:]),
        (f"reconcile run <= {WALL_SECONDS} s{scale_note}", cost[0] <= WALL_SECONDS),
        (f"peak RSS <= {RSS_MIB} MiB{scale_note}", cost[1] <= RSS_MIB),
    ]
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
    args = parser.parse_args()
    splink_missing = importlib.util.find_spec("splink") is None
    if splink_missing and not args.skip_splink:
        print("splink is not installed (pip install -e '.[bench]'): running without the baseline")
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        data = args.data or folder / "data"
        ensure_data(data, args.patients, args.orphans, args.seed)
        env = dict(os.environ, CROSSWALK_LOG_LEVEL="WARNING")
        python = [sys.executable, "-m", "engine"]
        with fresh_store(args.db, folder) as url:
            check_empty(url)
            for what, name in (("mpi", "mpi.csv"), ("studies", "studies.csv")):
                seconds, rss, out = run_child(
                    [*python, what, "import", str(data / name), "--db", url], env
                )
                print(out.strip())
                print(f"crosswalk {what} import: {seconds:.1f}s, peak RSS {rss} MiB")
            start = time.perf_counter()
            orders = insert_orders(url, data / "orders.csv")
            print(f"{orders:,} orders inserted in {time.perf_counter() - start:.1f}s")
            seconds, rss, out = run_child([*python, "reconcile", "run", "--db", url], env)
            print(out.strip())
            print(f"crosswalk reconcile run: {seconds:.1f}s, peak RSS {rss} MiB")
            _, _, export = run_child(
                [*python, "reconcile", "export", "--db", url, "--format", "csv"], env
            )
        truth, siblings = read_truth(data), read_siblings(data)
        ours = score_export(truth, siblings, read_export(export))
        columns: list[Column] = [("crosswalk", ours, (seconds, rss))]
        if not (args.skip_splink or splink_missing):
            columns += run_splink(data, truth, siblings)
        met = report(columns, (args.patients, args.orphans))
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
