"""Hot reload: an edited route or mapping is checked, then swapped in; a broken edit is not."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine.hl7v2.ack import read_ack
from engine.testing import FakeReceiver, Peer, free_port, wait_for_port
from tests.support import adt, cli_env, config_folder, crosswalk, destination_yaml, running_pipeline

ROUTE = """routes:
  all:
    source: ehr
    steps:
      - set: {{field: PV1-3, value: {value}}}
      - map: {{field: PV1-2, table: classes, key: code, value: name}}
    destinations: [pacs]
"""
TABLE = "code,name\nO,{name}\n"


def last_pv1(pacs: FakeReceiver) -> list[str]:
    text = pacs.texts[-1]
    segment = next(s for s in text.split("\r") if s.startswith("PV1"))
    return segment.split("|")


def exchange_and_wait(peer: Peer, pacs: FakeReceiver, control_id: str) -> list[str]:
    assert read_ack(peer.exchange(adt(control_id))).code == "AA"
    assert pacs.wait_for(len(pacs.received) + 1)
    deadline = time.monotonic() + 10
    while pacs.control_ids()[-1] != control_id and time.monotonic() < deadline:
        time.sleep(0.02)
    return last_pv1(pacs)


def wait_for_reload(engine, count: int) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while engine.server.watcher.reloads + engine.server.watcher.failures < count:
        assert time.monotonic() < deadline, "no reload happened"
        time.sleep(0.05)


def test_an_edited_route_and_table_apply_without_a_restart(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pacs = FakeReceiver()
    routes = ROUTE.format(value="ONE")
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "classes.csv").write_text(TABLE.format(name="OUTPATIENT"))
    with (
        running_pipeline(db_url, tmp_path, pacs.port, routes=routes) as engine,
        Peer(engine.port()) as peer,
    ):
        assert exchange_and_wait(peer, pacs, "H1")[2:4] == ["OUTPATIENT", "ONE"]

        (tmp_path / "routes" / "routes.yaml").write_text(ROUTE.format(value="TWO"))
        wait_for_reload(engine, 1)
        assert exchange_and_wait(peer, pacs, "H2")[2:4] == ["OUTPATIENT", "TWO"]

        (tmp_path / "mappings" / "classes.csv").write_text(TABLE.format(name="AMBULANT"))
        wait_for_reload(engine, 2)
        assert exchange_and_wait(peer, pacs, "H3")[2:4] == ["AMBULANT", "TWO"]

        with caplog.at_level(logging.ERROR):
            broken = ROUTE.format(value="THREE").replace("value: name", "valu: name")
            (tmp_path / "routes" / "routes.yaml").write_text(broken)
            wait_for_reload(engine, 3)
        assert engine.server.watcher.failures == 1
        assert "configuration NOT reloaded" in caplog.text
        assert "routes.yaml:6:" in caplog.text and "unknown key 'valu'" in caplog.text
        # The previous configuration is still running, on the same connection.
        assert exchange_and_wait(peer, pacs, "H4")[2:4] == ["AMBULANT", "TWO"]
    pacs.stop()


def test_sighup_reloads(db_url: str, tmp_path: Path) -> None:
    pacs = FakeReceiver()
    port = free_port()
    endpoints = destination_yaml(pacs.port).replace("ehr: {port: 0}", f"ehr: {{port: {port}}}")
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "classes.csv").write_text(TABLE.format(name="OUTPATIENT"))
    folder = config_folder(tmp_path, ROUTE.format(value="ONE"), endpoints=endpoints)
    env = cli_env(CROSSWALK_RELOAD_INTERVAL="3600")  # no polling: only SIGHUP reloads
    log = tmp_path / "engine.log"
    with log.open("wb") as out:
        engine = subprocess.Popen(
            crosswalk("serve", "--db", db_url, "--config", str(folder)),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_for_port(port, engine)
            with Peer(port) as peer:
                assert exchange_and_wait(peer, pacs, "G1")[3] == "ONE"
                (folder / "routes.yaml").write_text(ROUTE.format(value="TWO"))
                engine.send_signal(signal.SIGHUP)
                deadline = time.monotonic() + 10
                while "configuration reloaded" not in log.read_text():
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                assert exchange_and_wait(peer, pacs, "G2")[3] == "TWO"
        finally:
            engine.send_signal(signal.SIGTERM)
            assert engine.wait(30) == 0
    pacs.stop()
