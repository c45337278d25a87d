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
