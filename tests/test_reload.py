"""Hot reload: an edited route or mapping is checked, then swapped in; a broken edit is not."""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import pytest

from engine.hl7v2.ack import read_ack
from engine.testing import FakeReceiver, Peer, free_port
from tests.support import (
    Pipeline,
    adt,
    cli_env,
    config_folder,
    destination_yaml,
    running_pipeline,
    serving,
)

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


def test_an_edit_made_while_the_engine_starts_is_applied(db_url: str, tmp_path: Path) -> None:
    """The watcher compares against the files the configuration was read from, not against
    the files as they are when it starts watching (seconds later, after the store and the
    listeners): an edit in between is applied, not taken as the starting point."""
    pacs = FakeReceiver()
    folder = config_folder(
        tmp_path, ROUTE.format(value="ONE"), endpoints=destination_yaml(pacs.port)
    )
    (tmp_path / "mappings" / "classes.csv").write_text(TABLE.format(name="OUTPATIENT"))
    engine = Pipeline(db_url, folder)
    (folder / "routes.yaml").write_text(ROUTE.format(value="SECOND"))
    engine.start()
    try:
        wait_for_reload(engine, 1)
        with Peer(engine.port()) as peer:
            assert exchange_and_wait(peer, pacs, "E1")[2:4] == ["OUTPATIENT", "SECOND"]
    finally:
        engine.stop()
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
    args = ["--db", db_url, "--config", str(folder)]
    with serving(args, port, log, env) as engine, Peer(port) as peer:
        assert exchange_and_wait(peer, pacs, "G1")[3] == "ONE"
        (folder / "routes.yaml").write_text(ROUTE.format(value="TWO"))
        engine.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "configuration reloaded" not in log.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert exchange_and_wait(peer, pacs, "G2")[3] == "TWO"
    assert engine.returncode == 0
    pacs.stop()


def test_a_filter_no_message_can_pass_is_logged_at_start_and_on_reload(
    db_url: str, tmp_path: Path
) -> None:
    """The engine starts (the filter is allowed), but says which filter can match no HL7
    message, with its file and line; a reload that brings one says so too."""
    port = free_port()
    endpoints = destination_yaml(9).replace("ehr: {port: 0}", f"ehr: {{port: {port}}}")
    routes = "routes:\n  orders:\n    source: ehr\n    filter: {type: [%s]}\n"
    routes += "    destinations: [pacs]\n"
    folder = config_folder(tmp_path, routes % "OMI^O32", endpoints=endpoints)
    log = tmp_path / "engine.log"
    env = cli_env(CROSSWALK_RELOAD_INTERVAL="0.2")
    with serving(["--db", db_url, "--config", str(folder)], port, log, env) as engine:
        started = log.read_text()
        assert (
            f"WARNING engine.pipeline.reload: configuration: {folder / 'routes.yaml'}:4:21:"
            " route 'orders': filter: type OMI^O32 can match no message" in started
        )
        (folder / "routes.yaml").write_text(routes % "OMI^O23, ORM^O23")
        deadline = time.monotonic() + 10
        while "type ORM^O23 can match no message" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert "configuration reloaded" in log.read_text()
    assert engine.returncode == 0
