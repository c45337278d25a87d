"""Console benchmark: how fast the busiest pages answer on a large store.

A fresh SQLite store with --proposals pending proposals (one per orphaned study, candidates
among --proposals/2 patients, nine pieces of evidence each) and --messages stored ADT messages
(~500 bytes, over 60 days). The console app runs in process (Starlette's TestClient: the
rendering, the store's queries and the audit record each page writes, without a socket), logged
in as an admin; each page is asked for --repeat times and its p50/p95 printed, beside the login
page (a template and a cookie, no store query) as the baseline measured in the same run.

Targets (issue 17): the worklist and a proposal page <= 200 ms p95, a message search <= 500 ms.

    python bench/console.py [--proposals 100000] [--messages 1000000] [--repeat 50] [--db FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, func, insert, select
from starlette.testclient import TestClient

from engine.config.loader import load_config
from engine.console.app import build_app
from engine.console.server import console_for
from engine.mpi.tables import Patient, PatientIdentifier
from engine.reconcile.tables import Proposal, ReconcileRun
from engine.store import text_index
from engine.store.database import open_store
from engine.store.schema import Message, table_of
from engine.studies.tables import Study
from engine.users.accounts import Role, add_user

PASSWORD = "bench password 1"
FAMILIES = ["SMITH", "JONES", "NGUYEN", "GARCIA", "KOWALSKI", "BRENNAN", "OKAFOR", "LINDQVIST"]
GIVENS = ["WILLIAM", "TERESA", "PATRICK", "AMARA", "JOHN", "MEI", "OLGA", "SAMUEL"]
FIELDS = ["family_name", "given_name", "birth_date", "sex", "identifier", "address", "phone"]
CONFIG = """
listeners:
  ehr: {port: 0}
destinations:
  pacs: {host: 127.0.0.1, port: 9}
routes:
  merges:
    source: review
    filter: {type: [ADT^A40]}
    destinations: [pacs]
console:
  require_mfa: false
"""


def chunked(rows: list[dict[str, object]], size: int = 20000):  # type: ignore[no-untyped-def]
    for first in range(0, len(rows), size):
        yield rows[first : first + size]


def build_review(store: Engine, proposals: int, rng: random.Random) -> None:
    now = datetime.now(UTC)
    patients = max(proposals // 2, 1)
    with store.begin() as connection:
        connection.execute(
            insert(table_of(Patient)),
            [
                {
                    "id": n,
                    "family_name": rng.choice(FAMILIES),
                    "given_name": rng.choice(GIVENS),
                    "birth_date": f"19{rng.randint(30, 99)}0{rng.randint(1, 9)}15",
                    "sex": rng.choice("MF"),
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(1, patients + 1)
            ],
        )
        connection.execute(
            insert(table_of(PatientIdentifier)),
            [
                {
                    "patient_id": n,
                    "value": f"{100000 + n}",
                    "authority": "GENHOSP",
                    "type_code": "MR",
                }
                for n in range(1, patients + 1)
            ],
        )
        run_id = connection.execute(
            insert(table_of(ReconcileRun)).values(started_at=now, status="finished")
        ).inserted_primary_key[0]
    studies, rows = [], []
    for n in range(1, proposals + 1):
        uid = f"1.2.840.9.{n}"
        studies.append(
            {
                "study_uid": uid,
                "accession": f"A{n}",
                "patient_id": f"X{n}",
                "issuer": "OTHERSITE",
                "study_date": f"2025{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                "modality": rng.choice(["CT", "MR", "CR", "US"]),
                "family_name": rng.choice(FAMILIES),
                "given_name": rng.choice(GIVENS),
                "birth_date": "19580314",
                "sex": rng.choice("MF"),
                "first_seen": now,
                "last_seen": now,
            }
        )
        evidence = [{"field": "prior", "level": "", "weight": -2.5}] + [
            {"field": f, "level": "exact", "weight": round(rng.uniform(-2, 6), 3)} for f in FIELDS
        ]
        probability = rng.random()
        rows.append(
            {
                "study_uid": uid,
                "patient_id": rng.randint(1, patients),
                "probability": probability,
                "match_weight": sum(float(e["weight"]) for e in evidence),  # type: ignore[arg-type]
                "band": "strong"
                if probability > 0.9
                else "likely"
                if probability > 0.5
                else "possible",
                "rank": 1,
                "status": "pending",
                "evidence": json.dumps(evidence),
                "run_id": run_id,
                "created_at": now,
                "updated_at": now,
            }
        )
    with store.begin() as connection:
        for part in chunked(studies):
            connection.execute(insert(table_of(Study)), part)
        for part in chunked(rows):
            connection.execute(insert(table_of(Proposal)), part)


def adt(n: int) -> bytes:
    return (
        f"MSH|^~\\&|EPIC|GENHOSP|PACS|RADIOLOGY|20261123101500||ADT^A08^ADT_A01|C{n}|P|2.5.1\r"
        f"EVN|A08|20261123101500\rPID|1||{100000 + n % 50000}^^^GENHOSP^MR||"
        f"{FAMILIES[n % 8]}^{GIVENS[n % 7]}^Q||19800304|F|||1 MAIN ST^^SPRINGFIELD^IL^62701\r"
        f"PV1|1|O|RAD^^^GENHOSP||||1234^WELBY^MARCUS|||||||||||V{n}\r"
    ).encode()


def build_messages(store: Engine, count: int) -> None:
    start = datetime.now(UTC) - timedelta(days=60)
    step = timedelta(days=59) / max(count, 1)
    table = table_of(Message)
    for first in range(0, count, 20000):
        batch = []
        for n in range(first, min(count, first + 20000)):
            raw = adt(n)
            batch.append(
                {
                    "received_at": start + step * n,
                    "listener": "ehr",
                    "peer": "127.0.0.1",
                    "raw": raw,
                    "size": len(raw),
                    "charset": "",
                    "sending_application": "EPIC",
                    "sending_facility": "GENHOSP",
                    "receiving_application": "PACS",
                    "receiving_facility": "RADIOLOGY",
                    "message_datetime": "20261123101500",
                    "message_type": "ADT^A08^ADT_A01",
                    "message_code": "ADT",
                    "trigger_event": "A08",
                    "control_id": f"C{n}",
                    "dedup_key": f"EPIC|C{n}",
                    "processing_id": "P",
                    "version_id": "2.5.1",
                    "status": "routed",
                    "status_reason": "",
                    "ack_code": "AA",
                    "ack": b"",
                }
            )
        with store.begin() as connection:
            connection.execute(insert(table), batch)


def timed(client: TestClient, path: str, repeat: int) -> dict[str, float]:
    seconds = []
    for _ in range(repeat):
        began = time.perf_counter()
        answer = client.get(path)
        seconds.append(time.perf_counter() - began)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    seconds.sort()
    return {
        "p50": statistics.median(seconds) * 1000,
        "p95": seconds[min(len(seconds) - 1, int(len(seconds) * 0.95))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--db", type=Path, help="reuse (or make) this SQLite file")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="console-bench-"))
    (folder / "crosswalk.yaml").write_text(CONFIG)
    path = args.db or folder / "crosswalk.db"
    fresh = not path.exists()
    store = open_store(f"sqlite:///{path}")
    with store.begin() as connection:  # "before" is always the scan, measured in this run
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {text_index.TABLE}")
    rng = random.Random(17)
    if fresh:
        began = time.perf_counter()
        build_review(store, args.proposals, rng)
        build_messages(store, args.messages)
        add_user(store, "bench", Role.ADMIN, PASSWORD)
        print(f"built in {time.perf_counter() - began:.0f}s")
    with store.connect() as connection:
        proposals = connection.execute(select(func.count()).select_from(Proposal)).scalar()
        messages = connection.execute(select(func.max(Message.id))).scalar() or 0
    print(
        f"store: {proposals:,} proposals, {messages:,} messages"
        f" ({path.stat().st_size / 2**20:,.0f} MiB)"
    )
    config = load_config(folder, {})
    client = TestClient(
        build_app(console_for(store, config)), base_url="http://127.0.0.1", follow_redirects=False
    )
    page = client.get("/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    login = client.post("/login", data={"name": "bench", "password": PASSWORD, "csrf": csrf})
    assert login.headers.get("location") == "/", "the benchmark's user could not log in"
    ids = rng.sample(range(1, proposals + 1), args.repeat)
    day = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%d")
    next_day = (datetime.now(UTC) - timedelta(days=29)).strftime("%Y-%m-%d")
    pages = {
        "baseline: login page (no store)": ["/login"],
        "worklist (100 most probable pending)": ["/review"],
        "worklist filtered (band, modality, dates)": [
            "/review?band=possible&modality=CT&from=2025-03-01&to=2025-06-30"
        ],
        "proposal page (random)": [f"/review/{i}" for i in ids],
        "messages: newest 50": ["/messages"],
        "messages: by control id": [f"/messages?control_id=C{rng.randrange(messages)}"],
        "messages: type + status + last day": [
            "/messages?type=ADT^A08&status=routed&since="
            + (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%d")
        ],
        "messages: text found often (a name)": ["/messages?text=KOWALSKI"],
        "messages: text found once (last 7 days, default)": [f"/messages?text=V{messages - 7}"],
        "messages: text found once (all 60 days)": [
            f"/messages?text=V{messages - 7}&since=2000-01-01"
        ],
        "messages: text found in an old message only": [f"/messages?text=V{70}&since=2000-01-01"],
        "messages: text found nowhere (all 60 days)": [
            "/messages?text=NO SUCH TEXT&since=2000-01-01"
        ],
        "messages: text found often (all 60 days)": ["/messages?text=KOWALSKI&since=2000-01-01"],
        "messages: text in every message (all 60 days)": [
            "/messages?text=MAIN ST&since=2000-01-01"
        ],
        "messages: text (a name) on one day 30 days ago": [
            f"/messages?text=KOWALSKI&since={day}&until={next_day}"
        ],
        "messages: text in every message + errored": ["/messages?text=MAIN ST&status=errored"],
    }
    anonymous = TestClient(build_app(console_for(store, config)), base_url="http://127.0.0.1")
    print(f"{'page':50} {'p50 ms':>8} {'p95 ms':>8} {'p95 / baseline':>15}")
    base = measure(pages, client, anonymous, args.repeat)
    began = time.perf_counter()
    indexed = text_index.catch_up(store)
    print(
        f"text index: {indexed:,} messages indexed in {time.perf_counter() - began:.0f}s"
        f" ({path.stat().st_size / 2**20:,.0f} MiB store)"
    )
    again = {f"{name} [index]": paths for name, paths in pages.items() if "text" in name}
    measure(again, client, anonymous, args.repeat, base)


def measure(
    pages: dict[str, list[str]],
    client: TestClient,
    anonymous: TestClient,
    repeat_: int,
    base: float | None = None,
) -> float:
    """Print each page's p50 and p95 and the p95's ratio to the first page's (the baseline)."""
    for name, paths in pages.items():
        seconds: list[dict[str, float]] = []
        repeat = max(repeat_ // len(paths), 1)
        for path_ in paths:
            seconds.append(timed(anonymous if path_ == "/login" else client, path_, repeat))
        p50 = statistics.median(s["p50"] for s in seconds)
        p95 = sorted(s["p95"] for s in seconds)[int(len(seconds) * 0.95) if len(seconds) > 1 else 0]
        if len(paths) > 1:  # one request each: p95 over all of them
            singles = sorted(s["p50"] for s in seconds)
            p95 = singles[min(len(singles) - 1, int(len(singles) * 0.95))]
        base = base or p95
        print(f"{name:50} {p50:8.1f} {p95:8.1f} {p95 / base:14.1f}x")
    return base or 0.0


if __name__ == "__main__":
    main()
