"""Review benchmark: how quickly a reviewer's commands answer and approvals are recorded.

1. The reconciler benchmark's data (bench/orphans.py), imported into a fresh store, and
   `crosswalk reconcile run`, so that the proposals are real.
2. The commands as a reviewer runs them (subprocesses, wall time with Python's start-up):
   `review list --limit 50`, `review show ID`, beside `review --help` (Python's start-up and
   the imports, the floor of any command).
3. In-process: the upkeep every review command starts with (follow merges, close resolved
   studies) with nothing to do and after 100 merges and 100 resolved studies; `approve` of
   ``--approve`` proposals one by one with the shipped routes (merge message, routing, queued
   delivery, audit, one transaction each), against a baseline measured in the same run: the
   same number of bare transactions that insert a message, a delivery and an audit row.

    python bench/review.py [--patients 100000] [--orphans 2000] [--approve 500] [--db URL]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpi import run_child
from reconcile import check_empty, ensure_data, fresh_store, insert_orders
from sqlalchemy import Engine, insert, select, update

from engine.config.loader import load_config
from engine.mpi.tables import Patient, PatientIdentifier
from engine.reconcile.tables import Proposal, ProposalStatus
from engine.review.decisions import approve
from engine.review.tables import ReviewDecision
from engine.review.upkeep import refresh
from engine.store.database import for_writing, open_store
from engine.store.schema import Delivery, Message
from engine.studies.tables import Study

ROOT = Path(__file__).resolve().parent.parent


def load(url: str, data: Path) -> None:
    env = dict(os.environ, CROSSWALK_LOG_LEVEL="WARNING", COLUMNS="200")
    python = [sys.executable, "-m", "engine"]
    for what, name in (("mpi", "mpi.csv"), ("studies", "studies.csv")):
        seconds, _, _ = run_child([*python, what, "import", str(data / name), "--db", url], env)
        print(f"crosswalk {what} import: {seconds:.1f}s")
    insert_orders(url, data / "orders.csv")
    seconds, _, out = run_child([*python, "reconcile", "run", "--db", url], env)
    print(out.strip().splitlines()[-1])
    print(f"crosswalk reconcile run: {seconds:.1f}s")


def command_seconds(url: str, *args: str) -> float:
    env = dict(os.environ, CROSSWALK_LOG_LEVEL="WARNING", COLUMNS="160")
    command = [sys.executable, "-m", "engine", "review", *args, "--db", url]
    command += ["--config", str(ROOT / "routes")]
    seconds, _, _ = run_child(command, env)
    return seconds


def timed(action: object, *args: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = action(*args)  # type: ignore[operator]
    return time.perf_counter() - start, result


def pending(store: Engine, limit: int, *, with_patient_id: bool = False) -> list[int]:
    """Pending proposals, most probable first (of studies with a patient id: approvable)."""
    query = select(Proposal.id).where(Proposal.status == ProposalStatus.PENDING)
    if with_patient_id:
        query = query.join(Study, Study.study_uid == Proposal.study_uid).where(
            Study.patient_id != ""
        )
    with store.connect() as connection:
        return list(
            connection.execute(
                query.order_by(Proposal.probability.desc(), Proposal.id).limit(limit)
            ).scalars()
        )


def disturb(store: Engine, count: int) -> None:
    """Merge ``count`` candidates into other patients and register ``count`` study ids."""
    ids = pending(store, 2 * count)
    with for_writing(store).begin() as connection:
        rows = connection.execute(
            select(Proposal.patient_id, Proposal.study_uid).where(Proposal.id.in_(ids))
        ).all()
        survivor = connection.execute(select(Patient.id).order_by(Patient.id).limit(1)).scalar()
        for patient_id, _ in rows[:count]:
            connection.execute(
                update(Patient).where(Patient.id == patient_id).values(merged_into=survivor)
            )
        for patient_id, uid in rows[count:]:
            study = connection.execute(
                select(Study.patient_id, Study.issuer).where(Study.study_uid == uid)
            ).first()
            if study is not None and study.patient_id:
                connection.execute(
                    insert(PatientIdentifier).values(
                        patient_id=patient_id, value=study.patient_id, authority=study.issuer
                    )
                )


def baseline(store: Engine, count: int) -> list[float]:
    """Per transaction: insert a message, a delivery and an audit row, nothing else."""
    times = []
    proposal = pending(store, 1)[0]
    now = datetime.now(UTC)
    raw = b"MSH|^~\\&|CROSSWALK||PACS||20261202||ADT^A40^ADT_A39|B|P|2.5.1\r" + b"X" * 300
    for number in range(count):
        start = time.perf_counter()
        with for_writing(store).begin() as connection:
            message_id = connection.execute(
                insert(Message)
                .values(
                    received_at=now,
                    listener="bench",
                    peer="bench",
                    raw=raw,
                    size=len(raw),
                    status="routed",
                    control_id=f"B{number}",
                )
                .returning(Message.id)
            ).scalar_one()
            connection.execute(
                insert(Delivery).values(
                    message_id=message_id,
                    route="bench",
                    destination="bench",
                    payload=raw,
                    state="delivered",
                    created_at=now,
                )
            )
            connection.execute(
                insert(ReviewDecision).values(
                    proposal_id=proposal,
                    study_uid="bench",
                    patient_id=0,
                    action="bench",
                    previous_status="pending",
                    reviewer="bench",
                    decided_at=now,
                    snapshot="{}",
                )
            )
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--orphans", type=int, default=2_000)
    parser.add_argument("--approve", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--db", help="database URL (default: an SQLite file in a temp folder)")
    parser.add_argument("--data", type=Path, help="folder for the generated data (kept)")
    args = parser.parse_args()
    config = load_config(ROOT / "routes", {})
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        data = args.data or folder / "data"
        ensure_data(data, args.patients, args.orphans, args.seed)
        with fresh_store(args.db, folder) as url:
            check_empty(url)
            load(url, data)
            store = open_store(url)
            open_count = len(pending(store, 10**9))
            print(f"\n{open_count:,} pending proposals")
            first = pending(store, 1)[0]
            listed = command_seconds(url, "list", "--limit", "50")
            shown = command_seconds(url, "show", str(first))
            env = dict(os.environ, COLUMNS="160")
            start_up, _, _ = run_child([sys.executable, "-m", "engine", "review", "--help"], env)
            print(
                f"review list --limit 50: {listed:.2f}s wall; review show: {shown:.2f}s wall;"
                f" baseline `review --help` (start-up and imports): {start_up:.2f}s"
            )
            idle, _ = timed(refresh, store, config.review.mrn_authority)
            print(f"upkeep with nothing to do: {idle * 1000:.0f} ms")
            disturb(store, 100)
            busy, done = timed(refresh, store, config.review.mrn_authority)
            print(
                f"upkeep after 100 merges and 100 resolved studies: {busy * 1000:.0f} ms"
                f" ({done.followed} followed, {done.closed} closed)"  # type: ignore[attr-defined]
            )
            chosen = pending(store, args.approve, with_patient_id=True)
            times = []
            for proposal_id in chosen:
                seconds, _ = timed(approve, store, config, proposal_id, "bench")
                times.append(seconds)
            floor = baseline(store, len(chosen))
            ours, bare = sum(times), sum(floor)
            print(
                f"approve: {len(chosen)} in {ours:.2f}s = {len(chosen) / ours:,.0f}/s"
                f" (p50 {statistics.median(times) * 1000:.1f} ms,"
                f" p99 {percentile(times, 0.99) * 1000:.1f} ms)"
            )
            print(
                f"baseline (bare message + delivery + audit insert): {len(floor) / bare:,.0f}/s"
                f" (p50 {statistics.median(floor) * 1000:.1f} ms); approve costs"
                f" {ours / bare:.1f}x the baseline"
            )
            store.dispose()


if __name__ == "__main__":
    main()
