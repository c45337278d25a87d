"""`crosswalk routes check | schema | test`, and the shipped routes on the shipped samples."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import yaml

from engine.config.loader import load_config
from engine.hl7v2.charset import codec_for
from engine.hl7v2.check import examine
from engine.hl7v2.fieldpath import FieldPath
from engine.hl7v2.message_file import read_message_file
from engine.routes.router import Router
from tests.support import ROOT, cli_env, config_folder, crosswalk


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        crosswalk(*args), capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=60
    )


def test_check_accepts_the_shipped_routes() -> None:
    result = run("routes", "check")
    assert result.returncode == 0, result.stderr
    assert "OK — 8 file(s), 1 listener(s), 1 destination(s), 4 route(s)" in result.stdout


def test_check_lists_every_problem_and_fails(tmp_path: Path) -> None:
    folder = config_folder(
        tmp_path,
        "routes:\n  r:\n    source: nope\n    steps:\n      - sett: {}\n    destinations: [x]\n",
    )
    result = run("routes", "check", str(folder))
    assert result.returncode == 1
    assert f"{folder / 'routes.yaml'}:5:9: unknown step 'sett'" in result.stderr
    assert "1 problem(s)" in result.stderr  # binding stops before cross-checks of a broken file


def test_the_schema_is_valid_and_accepts_the_shipped_files() -> None:
    result = run("routes", "schema")
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted((ROOT / "routes").glob("*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path, [e.message for e in errors])
    bad = {"routes": {"r": {"source": "ehr", "destinations": ["pacs"], "stepz": []}}}
    assert list(validator.iter_errors(bad))


def test_routes_test_shows_matches_filters_and_field_changes() -> None:
    result = run(
        "routes", "test", "orders-to-pacs", "samples/orm_o01_new.hl7", "samples/oru_r01_report.hl7"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "samples/orm_o01_new.hl7:1  GH2026031200011  ORM^O01  matched"
    assert "  → pacs: 2 change(s)" in lines
    assert "      PID-3[2]: `E445566^^^EPI^PI` → (removed)" in lines
    assert "      ORC-18: (none) → `GENHOSP_CT1`" in lines
    assert any(
        line.startswith(
            "samples/oru_r01_report.hl7:1  GH2026031200015  ORU^R01^ORU_R01  filtered:"
            " type ORM^O01 or OMI^O23: MSH-9 is ORU^R01^ORU_R01"
        )
        for line in lines
    )


def test_routes_test_exits_1_when_a_transform_fails(tmp_path: Path) -> None:
    text = (ROOT / "samples" / "orm_o01_new.hl7").read_text()
    no_accession = tmp_path / "no_accession.hl7"
    no_accession.write_text(text.replace("ACC2026000123", ""))
    result = run("routes", "test", "orders-to-pacs", str(no_accession))
    assert result.returncode == 1
    assert "ERROR" in result.stdout and "the order has no accession number" in result.stdout


def test_routes_test_of_an_unknown_route() -> None:
    result = run("routes", "test", "nope", "samples/orm_o01_new.hl7")
    assert result.returncode == 2
    assert (
        "no route 'nope'; routes are: adt-to-pacs, merges-to-pacs, mpi-feed, orders-to-pacs"
        in result.stderr
    )


def _shipped() -> tuple[Router, list[tuple[str, bytes, str]]]:
    router = Router(load_config(ROOT / "routes", {}))
    messages = []
    for path in sorted((ROOT / "samples").glob("*.hl7")):
        for message in read_message_file(path).messages:
            charset = examine(message.payload).charset
            messages.append((f"{path.name}:{message.line}", message.payload, charset))
    return router, messages


def test_shipped_routes_send_every_adt_and_order_sample_to_the_pacs() -> None:
    router, messages = _shipped()
    for where, payload, charset in messages:
        routing = router.route(payload, charset, "ehr")
        header = examine(payload).header
        assert header is not None
        if header.message_code in ("ADT", "ORM", "OMI"):
            assert routing.status == "routed", (where, routing.reason)
            by_destination = {out.destination: out for out in routing.outbound}
            assert set(by_destination) == {"pacs", "mpi"}, where  # the MPI is kept from the feed
            out = by_destination["pacs"]
            text = out.payload.decode(codec_for(charset) or "utf-8")
            ids = out.message.values(FieldPath.parse("PID-3[*].4"))
            assert ids == ["GENHOSP"], (where, ids)
            assert "\rNK1|" not in text and "\rAL1|" not in text and "\rIN1|" not in text
        else:
            assert routing.status == "filtered", where


def test_shipped_order_route_maps_modality_and_station() -> None:
    router, messages = _shipped()
    table = {
        row["code"]: row
        for row in csv.DictReader(
            line
            for line in (ROOT / "mappings" / "procedure_codes.csv").open()
            if not line.startswith("#")
        )
    }
    checked = 0
    for where, payload, charset in messages:
        header = examine(payload).header
        assert header is not None
        if header.message_code not in ("ORM", "OMI"):
            continue
        (out,) = [
            o.message
            for o in router.route(payload, charset, "ehr").outbound
            if o.destination == "pacs"
        ]
        row = table[out.value(FieldPath.parse("OBR-4.1"))]
        modality, station = (
            ("OBR-24", "ORC-18") if header.message_code == "ORM" else ("IPC-5.1", "IPC-9")
        )
        assert out.value(FieldPath.parse(modality)) == row["modality"], where
        assert out.value(FieldPath.parse(station)) == row["station_ae"], where
        checked += 1
    assert checked >= 8


def test_shipped_order_route_rejects_an_order_without_accession() -> None:
    router, _ = _shipped()
    text = (ROOT / "samples" / "omi_o23_order.hl7").read_text().replace("\n", "\r")
    routing = router.route(text.replace("ACC2026000131", "").encode(), "UNICODE UTF-8", "ehr")
    assert routing.status == "errored"
    assert "the order has no accession number" in routing.reason


def test_the_shipped_orm_to_omi_template(tmp_path: Path) -> None:
    """A 2.3.1 ORM^O01 in, a 2.5.1 OMI^O23 with IPC out (the template in routes/templates)."""
    template = (ROOT / "routes" / "templates" / "orm_to_omi.hl7.j2").read_text()
    routes = (
        "routes:\n  omi:\n    source: ehr\n    filter: {type: ORM^O01}\n    steps:\n"
        "      - message_template: templates/orm_to_omi.hl7.j2\n    destinations: [pacs]\n"
    )
    folder = config_folder(
        tmp_path,
        routes,
        extra={"templates/orm_to_omi.hl7.j2": template},
        mappings={"procedure_codes.csv": (ROOT / "mappings" / "procedure_codes.csv").read_text()},
    )
    router = Router(load_config(folder, {}))
    payload = (ROOT / "samples" / "orm_o01_new.hl7").read_bytes().replace(b"\n", b"\r")
    (out,) = router.route(payload, "UNICODE UTF-8", "ehr").outbound
    message = out.message
    assert [s.id for s in message.segments] == ["MSH", "PID", "PV1", "ORC", "TQ1", "OBR", "IPC"]

    def value(path: str) -> str:
        return message.value(FieldPath.parse(path))

    assert value("MSH-9") == "OMI^O23^OMI_O23" and value("MSH-12") == "2.5.1"
    assert value("MSH-10") == "GH2026031200011"
    assert value("PID-3[2].4") == "EPI" and value("PID-5.1") == "SMITH"
    assert value("TQ1-7") == "20260312100000"
    assert value("OBR-4.1") == "CTCHEST"
    assert value("IPC-1") == "ACC2026000123" and value("IPC-2") == "RP2026000123"
    assert value("IPC-3") == "1.2.840.113619.2.55.3.2831164355.123.1700000000.1"
    assert value("IPC-5") == "CT" and value("IPC-9") == "GENHOSP_CT1"


def test_check_takes_the_folder_as_an_argument_or_as_config(tmp_path: Path) -> None:
    folder = config_folder(tmp_path, "routes:\n  r:\n    source: ehr\n    destinations: [pacs]\n")
    for args in ((str(folder),), ("--config", str(folder)), (str(folder), "--config", str(folder))):
        result = run("routes", "check", *args)
        assert result.returncode == 0, result.stderr
        assert f"{folder}: OK — 2 file(s), 1 listener(s), 1 destination(s), 1 route(s)" in (
            result.stdout
        )
    both = run("routes", "check", str(folder), "--config", "routes")
    assert both.returncode == 2
    assert f"two configuration folders given: {folder} and --config routes" in both.stderr


def test_check_reports_every_kind_of_problem_in_one_run(tmp_path: Path) -> None:
    """A misspelt key used to hide the unknown destination, the missing table and the bad
    filter until it was fixed; now one run names them all."""
    routes = (
        "routes:\n"
        "  typo:\n    source: ehr\n    destinatons: [pacs]\n"
        "  nowhere:\n    source: ehr\n    filter: {type: OMI^O32}\n    destinations: [archive]\n"
        "  tables:\n    source: ehr\n"
        "    steps:\n      - map: {field: OBR-4.1, table: nope, key: a, value: b}\n"
        "    destinations: [pacs]\n"
    )
    folder = config_folder(tmp_path, routes)
    file = folder / "routes.yaml"
    result = run("routes", "check", "--config", str(folder))
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    problems = [
        f"{file}:4:5: unknown key 'destinatons' in route 'typo'",
        f"{file}:3:5: route 'typo' is missing required key 'destinations'",
        f"{file}:8:20: route 'nowhere': unknown destination 'archive'",
        f"{file}:12:14: route 'tables': {tmp_path / 'mappings' / 'nope.csv'}: no such mapping",
    ]
    assert [line[: len(start)] for line, start in zip(lines, problems, strict=False)] == problems
    assert lines[4:] == [
        f"warning: {file}:7:20: route 'nowhere': filter: type OMI^O32 can match no message: HL7"
        " v2 sends OMI only with trigger event O23, not O32; hint: O32 is sent as BRT^O32; local"
        " trigger events begin with Z",
        f"error: 4 problem(s) in {folder}",
    ]


def test_a_copied_configuration_folder_finds_the_projects_mappings(tmp_path: Path) -> None:
    """Copied away from its `mappings/`, a configuration still finds the project's (the current
    folder's) and says so; with none anywhere, it says where it looked."""
    copy = tmp_path / "elsewhere" / "routes"
    copy.parent.mkdir()
    shutil.copytree(ROOT / "routes", copy)

    def check(cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            crosswalk("routes", "check", "--config", str(copy)),
            capture_output=True,
            text=True,
            env=cli_env(),
            cwd=cwd,
            timeout=60,
        )

    found = check(ROOT)
    assert found.returncode == 0, found.stderr
    assert f"mapping tables from {ROOT / 'mappings'} (in the current folder)" in found.stdout
    lost = check(tmp_path)
    assert lost.returncode == 1
    assert (
        f"a step uses mapping tables and 7 more: no mappings folder: looked in"
        f" {tmp_path / 'elsewhere' / 'mappings'} (beside the configuration folder) and"
        f" {tmp_path / 'mappings'} (in the current folder); create one or set $CROSSWALK_MAPPINGS"
    ) in lost.stderr
    assert "error: 1 problem(s)" in lost.stderr


def test_check_and_test_warn_of_a_filter_no_message_can_pass(tmp_path: Path) -> None:
    routes = "routes:\n  orders:\n    source: ehr\n    filter: {type: [OMI^O32]}\n"
    folder = config_folder(tmp_path, routes + "    destinations: [pacs]\n")
    checked = run("routes", "check", str(folder))
    assert checked.returncode == 0, checked.stderr
    warning = f"warning: {folder / 'routes.yaml'}:4:21: route 'orders': filter: type OMI^O32"
    assert checked.stderr.startswith(warning)
    assert "1 route(s)" in checked.stdout and "; 1 warning(s)" in checked.stdout
    tested = run("routes", "test", "orders", "samples/omi_o23_order.hl7", "--config", str(folder))
    assert tested.stderr.startswith(warning)
    assert "filtered: type OMI^O32: MSH-9 is OMI^O23" in tested.stdout
