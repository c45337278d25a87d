"""The admin endpoint of a running engine: metrics, health, readiness, status, over HTTP and
HTTPS; `crosswalk status`; JSON logs."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from engine.hl7v2.ack import read_ack
from engine.testing import FakeReceiver, Peer, free_port
from tests.certificates import Authority
from tests.postgres_cluster import throwaway_postgres
from tests.support import (
    ALL_TO_PACS,
    Pipeline,
    adt,
    config_folder,
    destination_yaml,
    run_crosswalk,
    serving,
)


@contextmanager
def admin_pipeline(
    db_url: str, tmp_path: Path, pacs_port: int, admin: str = "admin: {port: 0}\n"
) -> Iterator[Pipeline]:
    folder = config_folder(tmp_path, ALL_TO_PACS, endpoints=destination_yaml(pacs_port))
    (folder / "admin.yaml").write_text(admin)
    pipeline = Pipeline(db_url, folder)
    pipeline.start()
    try:
        yield pipeline
    finally:
        pipeline.stop()


def admin_url(pipeline: Pipeline, scheme: str = "http") -> str:
    assert pipeline.server.admin is not None, "the admin endpoint did not start"
    return f"{scheme}://127.0.0.1:{pipeline.server.admin.port}"


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_count_what_the_engine_did_and_carry_no_patient_data(
    db_url: str, tmp_path: Path
) -> None:
    pacs = FakeReceiver()
    with admin_pipeline(db_url, tmp_path, pacs.port) as engine:
        with Peer(engine.port()) as peer:
            for control_id in ("MET1", "MET2", "MET3"):
                assert read_ack(peer.exchange(adt(control_id))).code == "AA"
            assert read_ack(peer.exchange(b"MSH|^~\\&|X\rPID|1\r")).code in ("AR", "AE")
        assert pacs.wait_for(3, timeout=30)
        url = admin_url(engine)
        deadline = time.monotonic() + 20
        while True:  # the store's counts are read at most every 5 s
            code, text = get(url + "/metrics")
            assert code == 200
            found = samples(text)
            delivered = found.get(
                ("crosswalk_deliveries_total", (("destination", "pacs"), ("outcome", "delivered")))
            )
            depth = found.get(
                ("crosswalk_queue_depth", (("destination", "pacs"), ("partition", "0")))
            )
            if delivered == 3 and depth == 0:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
    pacs.stop()
    received = (("ack", "AA"), ("listener", "ehr"), ("status", "received"))
    assert found[("crosswalk_messages_total", received)] == 3
    rejected = [
        value
        for (name, labels), value in found.items()
        if name == "crosswalk_messages_total" and ("status", "rejected") in labels
    ]
    assert rejected == [1]
    assert found[("crosswalk_ack_latency_seconds_count", (("listener", "ehr"),))] == 4
    assert found[("crosswalk_listener_up", (("listener", "ehr"),))] == 1
    assert found[("crosswalk_routed_messages_total", (("status", "routed"),))] == 3
    assert found[("crosswalk_commit_latency_seconds_count", ())] >= 4
    assert found[("crosswalk_store_readable", ())] == 1
    for phi in ("MET1", "DOE", "JOHN", "12345"):
        assert phi not in text


def test_health_and_readiness_follow_the_store(tmp_path: Path) -> None:
    """A PostgreSQL store that goes away: /readyz says so (503, the reason), /healthz stays
    200; the store comes back and the engine is ready again, without a restart."""
    with (
        throwaway_postgres() as server,
        admin_pipeline(server.url, tmp_path, free_port()) as engine,
    ):
        url = admin_url(engine)
        assert get(url + "/healthz") == (200, "ok\n")
        assert get(url + "/readyz") == (200, "ready\n")
        server.freeze()
        try:
            code, reasons = get(url + "/readyz")
            assert code == 503 and "store: no answer within 2s" in reasons
            assert get(url + "/healthz")[0] == 200
        finally:
            server.thaw()
        deadline = time.monotonic() + 20
        while get(url + "/readyz")[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_the_endpoint_speaks_tls_when_configured(db_url: str, tmp_path: Path) -> None:
    ca = Authority(tmp_path / "tls")
    issued = ca.issue("crosswalk")
    admin = f"admin:\n  port: 0\n  tls: {{cert: {issued.cert}, key: {issued.key}}}\n"
    with admin_pipeline(db_url, tmp_path, free_port(), admin=admin) as engine:
        trusted = ssl.create_default_context(cafile=str(ca.cert))
        assert get(admin_url(engine, "https") + "/healthz", trusted) == (200, "ok\n")
        with pytest.raises(urllib.error.URLError):
            get(admin_url(engine, "https") + "/healthz", ssl.create_default_context())
        port = engine.server.admin.port  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
            plain.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert b"crosswalk_" not in plain.recv(4096), "no metrics over plain HTTP"


def test_a_port_in_use_leaves_the_feeds_running(db_url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with admin_pipeline(db_url, tmp_path, free_port(), f"admin: {{port: {port}}}\n") as e:
            assert e.server.admin is None
            with Peer(e.port()) as peer:
                assert read_ack(peer.exchange(adt("FREE1"))).code == "AA"


def test_status_shows_the_running_engine_and_says_when_none_answers(
    db_url: str, tmp_path: Path
) -> None:
    pacs = FakeReceiver()
    with admin_pipeline(db_url, tmp_path, pacs.port) as engine:
        with Peer(engine.port()) as peer:
            assert read_ack(peer.exchange(adt("ST1"))).code == "AA"
        assert pacs.wait_for(1, timeout=30)
        url = admin_url(engine)
        code, body = get(url + "/status")
        document = json.loads(body)
        assert code == 200 and document["ready"] is True
        assert document["listeners"][0]["name"] == "ehr"
        assert document["listeners"][0]["messages"] == 1
        shown = run_crosswalk("status", "--url", url, "--once", columns=80)
    pacs.stop()
    assert shown.returncode == 0, shown.stderr
    assert "ready" in shown.stdout and "ehr" in shown.stdout and "pacs" in shown.stdout
    assert "ST1" not in shown.stdout
    gone = run_crosswalk("status", "--url", url, "--once")
    assert gone.returncode == 2
    assert "no engine answers at" in gone.stderr


def test_json_logs_are_one_object_a_line(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    args = ["--db", db_url, "--port", str(port), "--log-format", "json"]
    with serving(args, port, log, cwd=tmp_path) as process, Peer(port) as peer:
        assert read_ack(peer.exchange(adt("J1"))).code == "AA"
    assert process.returncode == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    assert any(e["message"] == "engine ready" for e in lines)


def test_an_unknown_log_format_is_refused(tmp_path: Path) -> None:
    refused = run_crosswalk("serve", "--db", str(tmp_path / "x.db"), "--log-format", "xml")
    assert refused.returncode == 2
    assert "log format 'xml' is not one of text, json" in refused.stderr


MONITORING = Path(__file__).resolve().parent.parent / "docs" / "monitoring"
ALERTS = MONITORING / "crosswalk-alerts.yml"
DASHBOARD = MONITORING / "crosswalk-dashboard.json"


def served_metric_names(db_url: str, tmp_path: Path) -> set[str]:
    """The metric families a running engine serves, after one message."""
    with admin_pipeline(db_url, tmp_path, free_port()) as engine:
        with Peer(engine.port()) as peer:
            assert read_ack(peer.exchange(adt("AL1"))).code == "AA"
        text = get(admin_url(engine) + "/metrics")[1]
    return {family.name for family in text_string_to_metric_families(text)}


def metrics_named(exprs: list[str]) -> set[str]:
    """The metric families the PromQL expressions name (a histogram's or counter's series
    by their family)."""
    return {
        re.sub(r"_(total|bucket|sum|count)$", "", name)
        for expr in exprs
        for name in re.findall(r"\bcrosswalk_\w+", expr)
    }


def promtool_checks(rules: Path) -> None:
    """``promtool check rules`` accepts the file (Debian's prometheus package; skipped where
    it is not installed)."""
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "rules", str(rules)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_sample_alert_rules_are_valid_and_name_metrics_the_engine_serves(
    db_url: str, tmp_path: Path
) -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert rules and all({"alert", "expr", "annotations"} <= set(rule) for rule in rules)
    promtool_checks(ALERTS)
    named = metrics_named([rule["expr"] for rule in rules])
    served = served_metric_names(db_url, tmp_path)
    assert named and named <= served, named - served


def dashboard_panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_the_grafana_dashboard_queries_metrics_the_engine_serves(
    db_url: str, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard_panels(dashboard) if p["type"] != "row"]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    assert panels and len(exprs) >= len(panels)
    assert len({p["id"] for p in dashboard_panels(dashboard)}) == len(
        list(dashboard_panels(dashboard))
    )
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= set(variables)
    # Grafana's variables made concrete, so that promtool parses each query as Prometheus would.
    concrete = [expr.replace("$__rate_interval", "5m").replace("$instance", ".*") for expr in exprs]
    assert not [e for e in concrete if "$" in e], "a variable the test does not know"
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "dashboard",
                        "rules": [
                            {"record": f"crosswalk_dashboard:query_{n}", "expr": expr}
                            for n, expr in enumerate(concrete)
                        ],
                    }
                ]
            }
        )
    )
    promtool_checks(rules)
    named = metrics_named([*exprs, variables["instance"]["definition"]])
    served = served_metric_names(db_url, tmp_path)
    assert named and named <= served, named - served
