"""Learning from reviewers: how precision and recall move after N simulated decisions.

1. The reconciler benchmark's data (bench/orphans.py, with the truth) in a fresh store: the
   MPI, the orphaned studies, the orders; ``reconcile run``.
2. A reviewer decides proposals from the truth (approve when the proposed MRN is the study's,
   else reject): ``--pick random`` a seeded sample of the pending best candidates, ``--pick
   queue`` the first of `review next`'s queue (most probable first), ``--pick possible`` the
   possible band first (where an automatic strong band leaves reviewers). Decisions are written as
   the review leaves them (the proposal's status; no merge message is needed here).
3. For each cumulative count in ``--decisions``: ``reconcile run`` with learning off (the
   baseline, same decisions), then with learning on; each scored on the studies nobody
   decided (top-1 precision, recall, F1; the strong band's size and precision, the wrong
   proposals in it), printed side by side with the ratios on/off.

    python bench/learning.py --patients 100000 --orphans 2000 --decisions 200,1000
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reconcile import (
    Proposal,
    Scores,
    Truth,
    ensure_data,
    fresh_store,
    insert_orders,
    read_siblings,
    read_truth,
    score_export,
)
from sqlalchemy import Engine, update

from engine.mpi.importer import MpiImport
from engine.reconcile.learning import Learnt
from engine.reconcile.proposals import export_rows
from engine.reconcile.run import reconcile
from engine.reconcile.settings import ReconcilerSettings
from engine.reconcile.tables import Proposal as ProposalRow
from engine.reconcile.tables import ProposalStatus
from engine.store.database import open_store
from engine.studies.importer import StudyImport

_proposals = ProposalRow.__table__


def _open_proposals(store: Engine) -> list[dict[str, object]]:
    with store.connect() as connection:
        return list(export_rows(connection))


def add_lookalikes(data: Path, out: Path, truth: dict[str, Truth]) -> int:
    """A copy of ``data`` whose MPI also holds, for each study of a patient the MPI does not
    know, a namesake born one digit apart (same sex, no address or phone): a non-match the model
    rates highly, the kind of site-specific pattern reviewers keep rejecting. How many."""
    shutil.copytree(data, out)
    with (data / "studies.csv").open(newline="", encoding="utf-8") as file:
        studies = list(csv.DictReader(file))
    with (out / "mpi.csv").open("a", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        added = 0
        for row in studies:
            born = row["birth_date"]
            absent = (
                not truth[row["study_uid"]].mrn and "trauma" not in truth[row["study_uid"]].labels
            )
            if not (absent and row["family_name"] and row["given_name"] and len(born) == 10):
                continue
            day = int(born[-1])
            shifted = f"{born[:-1]}{day + 1 if day < 8 else day - 1}"
            mrn = 9_000_000 + added
            names = (row["family_name"], row["given_name"], "", shifted, row["sex"])
            writer.writerow((mrn, "GENHOSP", *names, "", "", "", "", ""))
            added += 1
    return added


def decide(
    store: Engine, truth: dict[str, Truth], wanted: int, pick: str, rng: random.Random
) -> tuple[int, int]:
    """Decide pending best candidates until ``wanted`` studies are decided; (approved,
    rejected) decided now."""
    rows = _open_proposals(store)
    decided = {r["study_uid"] for r in rows if r["status"] in ("approved", "rejected")}
    pending = [
        r
        for r in rows
        if r["status"] == "pending" and r["rank"] == 1 and r["study_uid"] not in decided
    ]
    rng.shuffle(pending)
    if pick == "queue":
        pending.sort(key=lambda r: (-float(str(r["probability"])), int(str(r["proposal_id"]))))
    elif pick == "possible":
        pending.sort(key=lambda r: r["band"] != "possible")
    chosen = pending[: max(0, wanted - len(decided))]
    approved = [r for r in chosen if truth[str(r["study_uid"])].mrn == r["mrn"]]
    rejected = [r for r in chosen if truth[str(r["study_uid"])].mrn != r["mrn"]]
    with store.begin() as connection:
        for status, group in (
            (ProposalStatus.APPROVED, approved),
            (ProposalStatus.REJECTED, rejected),
        ):
            ids = [r["proposal_id"] for r in group]
            if ids:
                connection.execute(
                    update(_proposals).where(_proposals.c.id.in_(ids)).values(status=status)
                )
    return len(approved), len(rejected)


Seen = dict[tuple[str, str], tuple[float, str]]
"""(study uid, MRN) → (probability, band) of the pending proposals scored."""


def evaluate(
    store: Engine, truth: dict[str, Truth], siblings: dict[str, tuple[str, str]]
) -> tuple[Scores, int, Seen]:
    """Scores of the pending proposals on the studies nobody decided; how many studies; the
    proposals."""
    rows = _open_proposals(store)
    decided = {r["study_uid"] for r in rows if r["status"] in ("approved", "rejected")}
    held_out = {uid: t for uid, t in truth.items() if uid not in decided}
    proposals = [
        Proposal(str(r["study_uid"]), str(r["mrn"]), str(r["band"]), int(str(r["rank"])))
        for r in rows
        if r["status"] == "pending" and r["study_uid"] in held_out
    ]
    seen = {
        (str(r["study_uid"]), str(r["mrn"])): (float(str(r["probability"])), str(r["band"]))
        for r in rows
        if r["status"] == "pending" and r["study_uid"] in held_out
    }
    return score_export(held_out, siblings, proposals), len(held_out), seen


def moved(off: Seen, on: Seen) -> str:
    """How many held-out proposals learning changed: probability, band, proposed at all."""
    both = off.keys() & on.keys()
    changed = [abs(on[k][0] - off[k][0]) for k in both if on[k][0] != off[k][0]]
    bands = sum(1 for k in both if on[k][1] != off[k][1])
    largest = max(changed, default=0.0)
    return (
        f"  learning moved {len(changed):,} of {len(both):,} held-out proposals (largest"
        f" {largest:.4f}), {bands:,} to another band; {len(on.keys() - off.keys()):,} new,"
        f" {len(off.keys() - on.keys()):,} no longer proposed"
    )


def _wrong_strong(scores: Scores) -> int:
    return (scores.strong or 0) - scores.strong_correct


def _line(name: str, off: float, on: float, digits: int = 4) -> str:
    ratio = f"{on / off:.4f}" if off else "—"
    return f"{name:28}{off:>12.{digits}f}{on:>12.{digits}f}{ratio:>10}"


def report(count: int, decisions: tuple[int, int], held: int, off: Scores, on: Scores) -> None:
    print(
        f"\nafter {count:,} decisions ({decisions[0]:,} approved, {decisions[1]:,} rejected);"
        f" scored on the {held:,} studies nobody decided"
    )
    print(f"{'':28}{'learning off':>12}{'on':>12}{'on/off':>10}")
    print(_line("precision (top 1)", off.precision, on.precision))
    print(_line("recall (top 1)", off.recall, on.recall))
    print(_line("F1", off.f1, on.f1))
    print(_line("strong-band precision", off.strong_precision or 0, on.strong_precision or 0))
    print(_line("strong proposals", off.strong or 0, on.strong or 0, 0))
    print(_line("wrong in strong band", _wrong_strong(off), _wrong_strong(on), 0))
    print(_line("twins in strong band", off.twins_strong or 0, on.twins_strong or 0, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--orphans", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--decisions", default="200,1000", help="cumulative counts, e.g. 200,1000")
    parser.add_argument("--pick", choices=("random", "queue", "possible"), default="random")
    parser.add_argument(
        "--prior-weight", type=float, default=ReconcilerSettings().learning_prior_weight
    )
    parser.add_argument(
        "--lookalikes",
        action="store_true",
        help="add a namesake born one digit apart to the MPI for each absent patient's study",
    )
    parser.add_argument("--db", help="database URL (default: an SQLite file in a temp folder)")
    parser.add_argument("--data", type=Path, help="folder for the generated data (kept)")
    args = parser.parse_args()
    counts = [int(n) for n in args.decisions.split(",")]
    on = ReconcilerSettings(learning_prior_weight=args.prior_weight)
    off = dataclasses.replace(on, learning=False)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        data = args.data or folder / "data"
        ensure_data(data, args.patients, args.orphans, args.seed)
        truth, siblings = read_truth(data), read_siblings(data)
        if args.lookalikes:
            count = add_lookalikes(data, folder / "lookalikes", truth)
            data = folder / "lookalikes"
            print(f"{count:,} look-alike namesakes added to the MPI")
        with fresh_store(args.db, folder) as url:
            store = open_store(url)
            try:
                start = time.perf_counter()
                MpiImport(store, data / "mpi.csv").run()
                StudyImport(store, data / "studies.csv").run()
                insert_orders(url, data / "orders.csv")
                print(f"loaded in {time.perf_counter() - start:.1f}s")
                start = time.perf_counter()
                reconcile(store, on)
                first, held, _ = evaluate(store, truth, siblings)
                print(f"first run {time.perf_counter() - start:.1f}s; before any decision:")
                report(0, (0, 0), held, first, first)
                made = [0, 0]
                for count in counts:
                    approved, rejected = decide(store, truth, count, args.pick, rng)
                    made = [made[0] + approved, made[1] + rejected]
                    started = time.perf_counter()
                    reconcile(store, off)
                    seconds_off = time.perf_counter() - started
                    baseline, held, before = evaluate(store, truth, siblings)
                    started = time.perf_counter()
                    learnt_run = reconcile(store, on)
                    seconds_on = time.perf_counter() - started
                    learnt, _, after = evaluate(store, truth, siblings)
                    report(count, (made[0], made[1]), held, baseline, learnt)
                    print(moved(before, after))
                    print(
                        f"  reconcile run: {seconds_off:.1f}s learning off, {seconds_on:.1f}s on"
                        f" ({seconds_on / seconds_off:.2f}x)"
                    )
                    parameters = learnt_run.parameters
                    changes = Learnt.from_dict(parameters.learning if parameters else None)
                    if changes is not None:
                        print(
                            f"  strong threshold {changes.strong_before:g} ->"
                            f" {changes.strong_after:.4f}; {len(changes.patterns):,} patterns"
                            f" decided; prior weight {changes.prior_weight:g}"
                        )
            finally:
                store.dispose()


if __name__ == "__main__":
    main()
