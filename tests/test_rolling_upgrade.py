"""A rolling upgrade of two engines on one PostgreSQL, as docs/operations.md describes it: an
engine of the previous version (this repository just before its newest migration was added)
runs, an engine of this version starts beside it and migrates the store; the old engine goes on
taking, storing and acknowledging messages and sharing the leases; every message reaches the
PACS in order; once stopped, the old version is refused on the migrated store."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import time
from io import BytesIO
from pathlib import Path

import pytest
from sqlalchemy import text

from engine.hl7v2.ack import read_ack
from engine.leases.records import read_engines
from engine.store.database import open_store
from engine.testing import FakeReceiver, Peer
from tests.cluster import Engines
from tests.support import ROOT, adt, cli_env, config_folder, crosswalk, destination_yaml
from tests.test_delivery import wait_until

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)

ROUTES = "routes:\n  all:\n    source: ehr\n    destinations: [pacs]\n"
VERSIONS = "engine/store/migrations/versions"


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def _previous_version(into: Path) -> tuple[Path, str]:
    """The engine as it was just before the newest committed migration was added, and that
    migration's revision."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git history of this repository")
    committed = sorted(
        line for line in _git("ls-files", VERSIONS).splitlines() if Path(line).name[:4].isdigit()
    )
    added = _git("log", "--diff-filter=A", "--format=%H", "-1", "--", committed[-1])
    if not added:
        pytest.skip("no history of the migrations")
    archive = subprocess.run(
        ["git", "archive", f"{added}^", "engine"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    assert not (into / committed[-1]).exists()
    return into, Path(committed[-1]).name[:4]


def _send(port: int, prefix: str, count: int, start: int = 0) -> list[str]:
    """``count`` messages on one connection, each answered AA; their control ids."""
    sent = []
    with Peer(port, timeout=30) as peer:
        for n in range(start, start + count):
            control_id = f"{prefix}{n:03d}"
            pid = f"PID|1||{prefix}^^^GENHOSP^MR||DOE^{prefix}"
            assert read_ack(peer.exchange(adt(control_id, pid=pid))).code == "AA"
            sent.append(control_id)
    return sent


def test_an_old_engine_keeps_working_while_a_new_one_migrates_beside_it(
    db_url: str, tmp_path: Path
) -> None:
    old_code, newest = _previous_version(tmp_path / "previous")
    pacs = FakeReceiver()
    folder = config_folder(
        tmp_path,
        ROUTES,
        endpoints=destination_yaml(pacs.port, partition_by="PID-3.1", partitions=2),
    )
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    options = ("--lease-ttl", "2")
    try:
        with (
            Engines(folder, db_url, tmp_path / "old", *options, code=old_code) as old,
            Engines(folder, db_url, tmp_path / "new", *options) as new,
        ):
            (old_port,) = old.start(1)
            sent = {"O": _send(old_port, "O", 10)}
            (new_port,) = new.start(1)  # migrates the store the old engine is running on
            sent["O"] += _send(old_port, "O", 10, start=10)
            sent["N"] = _send(new_port, "N", 10)
            store = open_store(db_url)
            try:
                with store.connect() as connection:
                    version = connection.execute(text("SELECT version_num FROM alembic_version"))
                    assert version.scalar_one() == newest, "migrated beside the old engine"
                alive = {e.pid for e in read_engines(store) if e.alive}
                assert alive == {old.processes[0].pid, new.processes[0].pid}
                _delivered_in_order(pacs, sent)

                assert old.stop(0) == 0
                refused = subprocess.run(
                    crosswalk("serve", "--config", str(folder), "--db", db_url),
                    cwd=old_code,
                    env=cli_env(),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert refused.returncode != 0
                assert "newer migration than this Crosswalk knows" in refused.stderr
                sent["N"] += _send(new_port, "N", 10, start=10)
                _delivered_in_order(pacs, sent)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    engines = [e for e in read_engines(store) if e.alive]
                    if len(engines) == 1 and len(engines[0].leases) == 4:
                        break
                    time.sleep(0.2)
                assert [e.pid for e in engines] == [new.processes[0].pid]
                assert len(engines[0].leases) == 4  # routing, pacs#0, pacs#1, mpi
            finally:
                store.dispose()
    finally:
        pacs.stop()


def _delivered_in_order(pacs: FakeReceiver, sent: dict[str, list[str]]) -> None:
    every = {cid for ids in sent.values() for cid in ids}
    assert wait_until(lambda: every <= set(pacs.control_ids()), timeout=60)
    received = pacs.control_ids()
    for prefix, ids in sent.items():
        first: list[str] = []
        for cid in received:
            if cid.startswith(prefix) and cid not in first:
                first.append(cid)
        assert first == ids
