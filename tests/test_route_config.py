"""Bad route configurations: one test per kind of problem, each reported at its position."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.loader import load_config
from engine.settings import ConfigError
from tests.support import ROOT, config_folder


def problems(folder: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(folder, {})
    return [str(p) for p in caught.value.problems]


def route_file(folder: Path) -> str:
    return str(folder / "routes.yaml")


def one_problem(tmp_path: Path, routes: str, **kw: object) -> tuple[str, str]:
    folder = config_folder(tmp_path, routes, **kw)  # type: ignore[arg-type]
    found = problems(folder)
    assert len(found) == 1, found
    return found[0], route_file(folder)


ROUTE = "routes:\n  r:\n    source: ehr\n    destinations: [pacs]\n"


def test_the_shipped_routes_are_sound() -> None:
    config = load_config(ROOT / "routes", {})
    assert set(config.routes) == {"adt-to-pacs", "merges-to-pacs", "mpi-feed", "orders-to-pacs"}


def test_unknown_key_in_a_route(tmp_path: Path) -> None:
    text, file = one_problem(tmp_path, ROUTE + "    destination: [pacs]\n")
    assert text.startswith(f"{file}:5:5: unknown key 'destination' in route 'r'")
    assert "did you mean 'destinations'?" in text


def test_unknown_key_in_a_step(tmp_path: Path) -> None:
    text, file = one_problem(tmp_path, ROUTE + "    steps:\n      - set: {field: PV1-2, valu: O}\n")
    assert text.startswith(f"{file}:6:29: unknown key 'valu' in step 'set'")
    assert "did you mean 'value'?" in text


def test_bad_field_path(tmp_path: Path) -> None:
    text, file = one_problem(tmp_path, ROUTE + "    steps:\n      - clear: [PID.3]\n")
    assert text.startswith(f"{file}:6:17:")
    assert "bad field path" in text and "use '-' between segment and field" in text


def test_bad_field_path_in_a_filter(tmp_path: Path) -> None:
    text, file = one_problem(tmp_path, ROUTE + "    filter: {field: pid-8, equals: M}\n")
    assert text.startswith(f"{file}:5:21:") and "upper case" in text


def test_unknown_listener(tmp_path: Path) -> None:
    text, file = one_problem(tmp_path, ROUTE.replace("source: ehr", "source: adt"))
    assert text.startswith(f"{file}:2:3: route 'r': unknown listener 'adt'")
    assert "sources are: ehr, review" in text


def test_unknown_destination(tmp_path: Path) -> None:
    text, file = one_problem(tmp_path, ROUTE.replace("[pacs]", "[pacs, archive]"))
    assert text.startswith(f"{file}:4:26: route 'r': unknown destination 'archive'")
    assert "destinations are: drop, mpi, pacs" in text


def test_missing_mapping_file(tmp_path: Path) -> None:
    steps = "    steps:\n      - map: {field: OBR-4.1, table: nope, key: a, value: b}\n"
    text, file = one_problem(tmp_path, ROUTE + steps)
    assert text.startswith(f"{file}:6:14: route 'r':")
    assert "nope.csv: no such mapping file" in text


def test_missing_mapping_column(tmp_path: Path) -> None:
    steps = "    steps:\n      - map: {field: OBR-4.1, table: t, key: code, value: modlity}\n"
    text, _ = one_problem(tmp_path, ROUTE + steps, mappings={"t.csv": "code,modality\nA,B\n"})
    assert "no column 'modlity'; the columns are code, modality" in text


def test_mapping_table_with_a_conflicting_key(tmp_path: Path) -> None:
    steps = "    steps:\n      - map: {field: OBR-4.1, table: t, key: code, value: modality}\n"
    text, _ = one_problem(
        tmp_path, ROUTE + steps, mappings={"t.csv": "code,modality\nA,CT\nB,MR\nA,US\n"}
    )
    assert "t.csv:4: code 'A' maps to 'US' here and to 'CT' at line 2" in text


def test_mapping_table_with_a_short_row(tmp_path: Path) -> None:
    steps = "    steps:\n      - map: {field: OBR-4.1, table: t, key: code, value: modality}\n"
    text, _ = one_problem(tmp_path, ROUTE + steps, mappings={"t.csv": "code,modality\nA\n"})
    assert "t.csv:2: 1 cells where the header has 2" in text


def test_template_syntax_error(tmp_path: Path) -> None:
    steps = "    steps:\n      - set: {field: PV1-3, template: \"{{ field('PV1-2') \"}\n"
    text, file = one_problem(tmp_path, ROUTE + steps)
    assert text.startswith(f"{file}:6:39:") and "template syntax error" in text


def test_message_template_file_missing(tmp_path: Path) -> None:
    text, _ = one_problem(tmp_path, ROUTE + "    steps:\n      - message_template: none.j2\n")
    assert "no such template file" in text


def test_duplicate_route_names_across_files(tmp_path: Path) -> None:
    folder = config_folder(tmp_path, ROUTE, extra={"more.yaml": ROUTE})
    (found,) = problems(folder)
    assert found.startswith(f"{folder / 'routes.yaml'}:2:3: route 'r' is already defined at")
    assert f"{folder / 'more.yaml'}:2:3" in found


def test_unknown_step(tmp_path: Path) -> None:
    text, file = one_problem(tmp_path, ROUTE + "    steps:\n      - sett: {field: PV1-2}\n")
    assert text.startswith(f"{file}:6:9: unknown step 'sett'") and "did you mean 'set'?" in text


def test_a_step_with_two_names(tmp_path: Path) -> None:
    steps = "    steps:\n      - set: {field: PV1-2, value: O}\n        clear: [PV1-3]\n"
    text, file = one_problem(tmp_path, ROUTE + steps)
    assert text.startswith(f"{file}:7:9: step 'set' has a second key 'clear'")


def test_unknown_operator(tmp_path: Path) -> None:
    text, _ = one_problem(tmp_path, ROUTE + "    filter: {field: PV1-2, equal: O}\n")
    assert "unknown operator 'equal'" in text and "did you mean 'equals'?" in text


def test_a_field_test_with_two_operators(tmp_path: Path) -> None:
    text, _ = one_problem(tmp_path, ROUTE + "    filter: {field: PV1-2, equals: O, in: [I]}\n")
    assert "needs exactly one operator, found 2" in text


def test_bad_message_type_pattern(tmp_path: Path) -> None:
    text, file = one_problem(tmp_path, ROUTE + "    filter: {type: 'ADT A08'}\n")
    assert text.startswith(f"{file}:5:20:") and "not a message type pattern" in text


def test_bad_regex_and_bad_date(tmp_path: Path) -> None:
    text, _ = one_problem(tmp_path, ROUTE + "    filter: {field: PV1-2, regex: '(['}\n")
    assert "not a valid regular expression" in text
    text, _ = one_problem(tmp_path, ROUTE + "    filter: {field: PID-7, before: yesterday}\n")
    assert "expected a date" in text


def test_a_route_without_destinations(tmp_path: Path) -> None:
    text, _ = one_problem(tmp_path, "routes:\n  r:\n    source: ehr\n    destinations: []\n")
    assert "needs at least one destination" in text


def test_a_reserved_destination_name(tmp_path: Path) -> None:
    endpoints = "listeners:\n  ehr: {port: 0}\ndestinations:\n  drop: {host: h, port: 1}\n"
    text, _ = one_problem(tmp_path, ROUTE.replace("pacs", "drop"), endpoints=endpoints)
    assert "destination name 'drop' is reserved" in text


def test_unquoted_brackets_in_flow_style_get_a_hint(tmp_path: Path) -> None:
    text, _ = one_problem(tmp_path, ROUTE + "    filter: {field: OBX[*]-5, exists: true}\n")
    assert "YAML syntax error" in text and "quote a field path" in text


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    routes = (
        "routes:\n  r:\n    source: ehr\n    filter: {field: PV1-2, equal: O}\n"
        "    steps:\n      - sett: {}\n      - clear: [PID.3]\n    destinations: [pacs]\n"
    )
    assert len(problems(config_folder(tmp_path, routes))) == 3


def test_problems_of_every_kind_are_reported_in_one_run(tmp_path: Path) -> None:
    """A key misspelt in one route does not hide an unknown destination, an unknown listener,
    a missing table or a bad listener elsewhere; a route naming a listener that has problems of
    its own is not told the listener is unknown."""
    endpoints = (
        "listeners:\n  ehr: {port: 0}\n  lab: {port: abc}\n"
        "destinations:\n  pacs: {host: 127.0.0.1, port: 9}\n"
    )
    routes = (
        "routes:\n"
        "  typo:\n    source: ehr\n    destinatons: [pacs]\n"
        "  nowhere:\n    source: ehr\n    destinations: [archive]\n"
        "  stranger:\n    source: adt\n    destinations: [pacs]\n"
        "  tables:\n    source: ehr\n"
        "    steps:\n      - map: {field: OBR-4.1, table: nope, key: a, value: b}\n"
        "    destinations: [pacs]\n"
        "  from-lab:\n    source: lab\n    destinations: [pacs]\n"
    )
    folder = config_folder(tmp_path, routes, endpoints=endpoints)
    found = problems(folder)
    file = route_file(folder)
    expected = [
        "listener 'lab': port: expected a whole number",
        f"{file}:4:5: unknown key 'destinatons' in route 'typo'",
        f"{file}:7:20: route 'nowhere': unknown destination 'archive'",
        f"{file}:8:3: route 'stranger': unknown listener 'adt'",
        f"{file}:14:14: route 'tables':",
    ]
    for start in expected:
        assert any(start in text for text in found), (start, found)
    assert not any("unknown listener 'lab'" in text for text in found)


def test_a_filter_on_a_message_type_hl7_does_not_define_is_a_warning(tmp_path: Path) -> None:
    """OMI^O32 (O32 is BRT's) or ADT^A19 (a query) can match no message: the configuration
    loads, with a warning naming the file and line; wildcards and local Z codes pass."""
    routes = (
        "routes:\n  r:\n    source: ehr\n"
        "    filter:\n      type: [OMI^O32, ADT^A0*, ZQA^Z01, ADT^Z99, OMI^O23^OMI_O23]\n"
        "    steps:\n      - set: {field: PV1-2, value: O, when: {type: ADT^A19}}\n"
        "      - set: {field: PV1-2, value: I, when: {not: {type: OXI}}}\n"
        "    destinations: [pacs]\n"
    )
    folder = config_folder(tmp_path, routes)
    config = load_config(folder, {})
    file = route_file(folder)
    assert [str(w) for w in config.warnings] == [
        f"{file}:5:14: route 'r': filter: type OMI^O32 can match no message: HL7 v2 sends OMI"
        " only with trigger event O23, not O32; hint: O32 is sent as BRT^O32; local trigger"
        " events begin with Z",
        f"{file}:7:52: step 'set': when: type ADT^A19 can match no message: HL7 v2 sends ADT"
        " only with trigger events A01 to A62 except A19, not A19; hint: A19 is sent as"
        " ADR^A19; local trigger events begin with Z",
        f"{file}:8:58: step 'set': when: type OXI can match no message: OXI is no HL7 v2"
        " message type (HL7 table 0076); hint: local message types begin with Z",
    ]


def test_mapping_tables_are_looked_for_beside_then_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A configuration folder copied elsewhere finds the project's tables; without any, the
    problem says where they were looked for."""
    steps = "    steps:\n      - map: {field: OBR-4.1, table: t, key: code, value: modality}\n"
    (tmp_path / "copy").mkdir()
    copy = config_folder(tmp_path / "copy", ROUTE + steps)
    (tmp_path / "copy" / "mappings").rmdir()
    project = tmp_path / "project"
    (project / "mappings").mkdir(parents=True)
    (project / "mappings" / "t.csv").write_text("code,modality\nA,CT\n")
    monkeypatch.chdir(project)
    assert load_config(copy, {}).mappings == project / "mappings"

    monkeypatch.chdir(tmp_path)
    (text,) = problems(copy)
    assert text.startswith(f"{route_file(copy)}:6:14: a step uses mapping tables:")
    assert (
        f"no mappings folder: looked in {tmp_path / 'copy' / 'mappings'} (beside the"
        f" configuration folder) and {tmp_path / 'mappings'} (in the current folder);"
        " create one or set $CROSSWALK_MAPPINGS"
    ) in text
    beside = tmp_path / "copy" / "mappings"
    beside.mkdir()
    (beside / "t.csv").write_text("code,modality\nA,MR\n")
    monkeypatch.chdir(project)
    assert load_config(copy, {}).mappings == beside  # beside the folder comes first
