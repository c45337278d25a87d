"""`crosswalk status` and the admin endpoint with two engines on one PostgreSQL: any one
engine's status shows every engine (host and pid, the leases it holds, its listeners'
connections and messages), which engine sends each destination partition and routes, and an
engine that died as gone; /metrics says how many engines are alive and which leases each holds."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from engine.hl7v2.ack import read_ack
from engine.leases.records import read_leases
from engine.store.database import open_store
from engine.testing import FakeReceiver, Peer
from tests.cluster import Engines
from tests.support import adt, config_folder, destination_yaml, run_crosswalk
from tests.test_admin import samples

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

ROUTES = "routes:\n  all:\n    source: ehr\n    destinations: [pacs]\n"
WORK = {"routing", "queue:pacs#0", "queue:pacs#1", "queue:mpi#0"}


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as answer:
        document: dict[str, Any] = json.load(answer)
    return document


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return samples(answer.read().decode())


def _until(port: int, check: Any, timeout: float = 30) -> dict[str, Any]:
    """The first /status document that passes ``check`` (scrape_interval 0: read afresh)."""
    deadline = time.monotonic() + timeout
    while True:
        document = _status(port)
        if check(document) or time.monotonic() > deadline:
            return document
        time.sleep(0.2)


def _messages(engine: dict[str, Any]) -> int:
    return sum(item["messages"] for item in engine["listeners"])


def test_status_of_one_engine_shows_every_engine_and_who_owns_what(
    db_url: str, tmp_path: Path
) -> None:
    pacs = FakeReceiver()
    folder = config_folder(
        tmp_path,
        ROUTES,
        endpoints=destination_yaml(pacs.port, partition_by="PID-3.1", partitions=2),
        extra={"admin.yaml": "admin: {scrape_interval: 0s}\n"},
    )
    try:
        with Engines(folder, db_url, tmp_path, "--lease-ttl", "2", admin=True) as engines:
            ports = engines.start(2)
            pids = [p.pid for p in engines.processes]
            with Peer(ports[0]) as first, Peer(ports[1]) as second:
                for n in range(3):
                    assert read_ack(first.exchange(adt(f"A{n}"))).code == "AA"
                for n in range(5):
                    assert read_ack(second.exchange(adt(f"B{n}"))).code == "AA"
                admin = engines.admin_ports[0]

                def settled(document: dict[str, Any]) -> bool:
                    shown = document["engines"]
                    held = [lease for e in shown for lease in e["leases"]]
                    return (
                        [e["alive"] for e in shown] == [True, True]
                        and sorted(held) == sorted(WORK)
                        and sorted(_messages(e) for e in shown) == [3, 5]
                        and all(e["leases"] for e in shown)
                    )

                document = _until(admin, settled)
                assert settled(document), document["engines"]
                shown = {e["pid"]: e for e in document["engines"]}
                assert sorted(shown) == sorted(pids)
                assert shown[pids[0]]["this"] and not shown[pids[1]]["this"]
                assert _messages(shown[pids[1]]) == 5  # as the other engine wrote it
                assert [i["open_connections"] for i in shown[pids[1]]["listeners"]] == [1]
                assert shown[pids[1]]["admin"] == f"http://127.0.0.1:{engines.admin_ports[1]}"
                store = open_store(db_url)
                leases = {r.name: r.holder for r in read_leases(store) if not r.expired}
                store.dispose()
                owners = {
                    f"{q['destination']}#{q['partition']}": q["owner"] for q in document["queues"]
                }
                assert owners["pacs#0"] == leases["queue:pacs#0"]
                assert owners["pacs#1"] == leases["queue:pacs#1"]
                assert owners["mpi#0"] == leases["queue:mpi#0"]

                shown_text = run_crosswalk(
                    "status", "--url", f"http://127.0.0.1:{admin}", "--once", columns=200
                )
                assert shown_text.returncode == 0, shown_text.stderr
                out = shown_text.stdout
                names = {pid: f"{shown[pid]['host']}:{pid}" for pid in pids}
                assert "engines (on one PostgreSQL)" in out and "(this one)" in out
                router = next(p for p in pids if "routing" in shown[p]["leases"])
                assert f"routed by {names[router]}" in out
                for line in out.splitlines():
                    if line.lstrip().startswith("pacs/1"):
                        assert names[int(leases["queue:pacs#1"].split(":")[-2])] in line
                assert "A0" not in out and "B0" not in out and "DOE" not in out

                both = [_metrics(port) for port in engines.admin_ports]
                assert all(m[("crosswalk_engines_alive", ())] == 2 for m in both)
                for lease in WORK:
                    key = ("crosswalk_lease_held", (("lease", lease),))
                    assert sum(m[key] for m in both) == 1, lease

            os.kill(pids[1], signal.SIGKILL)
            document = _until(
                admin,
                lambda d: (
                    [e["alive"] for e in d["engines"]] == [True, False]
                    and sorted(d["engines"][0]["leases"]) == sorted(WORK)
                ),
            )
            assert [e["pid"] for e in document["engines"]] == pids
            assert [e["alive"] for e in document["engines"]] == [True, False]
            assert sorted(document["engines"][0]["leases"]) == sorted(WORK)
            gone = run_crosswalk(
                "status", "--url", f"http://127.0.0.1:{admin}", "--once", columns=200
            )
            line = next(x for x in gone.stdout.splitlines() if "GONE" in x)
            assert line.lstrip().startswith(f"{shown[pids[1]]['host']}:{pids[1]}")
    finally:
        pacs.stop()
