"""Transform steps, each through the real YAML loader and router."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from engine.config.loader import load_config
from engine.hl7v2.ack import read_ack
from engine.hl7v2.fieldpath import FieldPath
from engine.hl7v2.message import Message
from engine.routes.router import Router
from engine.settings import ConfigError
from engine.store.database import open_store
from engine.testing import Peer
from tests.support import Pipeline, config_folder, stored_messages

ADT = (
    "MSH|^~\\&|EPIC|GENHOSP|PACS|RAD|20261123||ADT^A08^ADT_A01|C1|P|2.5.1\r"
    "EVN|A08|20261120101500\r"
    "PID|1||100234^^^GH^MR~E445566^^^EPI^PI~123-45-6789^^^SSA^SS||  smith ^john  ||"
    "04/03/1980|M|||12 MAIN ST^^SPRINGFIELD||(217) 555-0100\r"
    "NK1|1|SMITH^JANE\r"
    "PV1|1|O\r"
    "OBR|1|PL1|FL1|CTCHEST^CT CHEST^LOCAL\r"
)
TABLES = {
    "authorities.csv": "local_code,pacs_authority\nGH,GENHOSP\nGENHOSP,GENHOSP\nEPI,EPI\n",
    "procedures.csv": "code,modality,station\nCTCHEST,CT,GH_CT1\nmrknee,MR,GH_MR1\n",
}


def run(tmp_path: Path, steps: str, message: str = ADT, extra: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    body = textwrap.indent(textwrap.dedent(steps).strip(), "      ")
    routes = f"routes:\n  r:\n    source: ehr\n    steps:\n{body}\n    destinations: [pacs]\n"
    config = load_config(config_folder(tmp_path, routes, mappings=TABLES, extra=extra), {})
    router = Router(config)
    return router.run_route(config.routes["r"], Message.parse(message), "utf-8")


def output(tmp_path: Path, steps: str, message: str = ADT, **kw: object) -> Message:
    routing = run(tmp_path, steps, message, **kw)  # type: ignore[arg-type]
    assert routing.status == "routed", routing.reason
    (out,) = routing.outbound
    return Message.parse(out.payload.decode("utf-8"))


def value(message: Message, path: str) -> str:
    return message.value(FieldPath.parse(path))


def error(tmp_path: Path, steps: str, message: str = ADT) -> str:
    routing = run(tmp_path, steps, message)
    assert routing.status == "errored"
    assert not routing.outbound
    return routing.reason


def test_set_a_value_is_escaped(tmp_path: Path) -> None:
    out = output(tmp_path, "- set: {field: PV1-3, value: 'RAD|ROOM^1'}")
    assert value(out, "PV1-3") == "RAD|ROOM^1"
    assert "PV1|1|O|RAD\\F\\ROOM\\S\\1" in out.to_text()


def test_set_with_a_template(tmp_path: Path) -> None:
    step = (
        "- set: {field: PID-18, template: \"{{ field('PID-3.1') }}-{{ field('MSH-10') | lower }}\"}"
    )
    out = output(tmp_path, step)
    assert value(out, "PID-18") == "100234-c1"


def test_set_needs_value_or_template(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="exactly one of value or template"):
        run(tmp_path, "- set: {field: PV1-3}")


def test_copy_keeps_structure_and_move_clears_the_source(tmp_path: Path) -> None:
    out = output(
        tmp_path,
        """
        - copy: {from: PID-5, to: NK1-2}
        - move: {from: PID-13, to: PID-14}
    """,
    )
    assert value(out, "NK1-2.2") == "john  "
    assert value(out, "PID-14") == "(217) 555-0100" and value(out, "PID-13") == ""


def test_clear_fields_and_remove_a_repetition(tmp_path: Path) -> None:
    out = output(tmp_path, "- clear: [PID-11, 'PID-3[3]']")
    assert value(out, "PID-11") == ""
    assert out.values(FieldPath.parse("PID-3[*].1")) == ["100234", "E445566"]


def test_delete_insert_and_rename_segments(tmp_path: Path) -> None:
    out = output(
        tmp_path,
        """
        - delete_segments: [NK1, EVN]
        - insert_segment:
            segment: ZDS
            after: OBR
            values: {'1.1': "1.2.3.{{ field('OBR-2') }}", '1.2': '100', '1.3': Application}
        - rename_segment: {from: ZDS, to: ZD1}
    """,
    )
    assert [s.id for s in out.segments] == ["MSH", "PID", "PV1", "OBR", "ZD1"]
    assert value(out, "ZD1-1") == "1.2.3.PL1^100^Application"


def test_insert_after_a_missing_segment_is_an_error(tmp_path: Path) -> None:
    assert "no ORC segment" in error(tmp_path, "- insert_segment: {segment: ZDS, after: ORC}")


@pytest.mark.parametrize(
    ("on_miss", "code", "expected"),
    [("keep", "XRAY", "XRAY"), ("default", "XRAY", "OT"), ("keep", "CTCHEST", "CT")],
)
def test_map_through_a_table(tmp_path: Path, on_miss: str, code: str, expected: str) -> None:
    message = ADT.replace("CTCHEST", code)
    out = output(
        tmp_path,
        f"- map: {{field: OBR-4.1, table: procedures, key: code, value: modality, to: OBR-24,"
        f" on_miss: {on_miss}, default: OT}}",
        message,
    )
    assert value(out, "OBR-24") == expected
    assert value(out, "OBR-4.1") == code


def test_map_on_miss_reject_errors_the_message(tmp_path: Path) -> None:
    reason = error(
        tmp_path,
        "- map: {field: OBR-4.1, table: procedures, key: code, value: modality, on_miss: reject}",
        ADT.replace("CTCHEST", "XRAY"),
    )
    assert "OBR-4.1 'XRAY' is not in column code of table procedures" in reason


def test_map_every_repetition_and_ignore_case(tmp_path: Path) -> None:
    out = output(
        tmp_path,
        """
        - map: {field: 'PID-3[*].4', table: authorities, key: local_code, value: pacs_authority}
        - map: {field: OBR-4.1, table: procedures, key: code, value: station, to: OBR-21,
                ignore_case: true}
    """,
        ADT.replace("CTCHEST", "MRKNEE"),
    )
    assert out.values(FieldPath.parse("PID-3[*].4")) == ["GENHOSP", "EPI", "SSA"]
    assert value(out, "OBR-21") == "GH_MR1"


@pytest.mark.parametrize(
    ("style", "path", "expected"),
    [
        ("name", "PID-5.1", "SMITH"),
        ("upper", "PID-5.2", "JOHN  "),
        ("trim", "PID-5.2", "john"),
        ("digits", "PID-13", "2175550100"),
        ("lower", "MSH-3", "epic"),
    ],
)
def test_normalise(tmp_path: Path, style: str, path: str, expected: str) -> None:
    out = output(tmp_path, f"- normalise: {{fields: [{path}], to: {style}}}")
    assert value(out, path) == expected


def test_normalise_ascii_and_dates(tmp_path: Path) -> None:
    message = ADT.replace("  smith ", "MÜLLER-ßAUER")
    out = output(
        tmp_path,
        """
        - normalise: {fields: [PID-5.1], to: ascii}
        - normalise: {fields: [PID-7], to: date, date_formats: ['%d/%m/%Y']}
    """,
        message,
    )
    assert value(out, "PID-5.1") == "MULLER-SSAUER"
    assert value(out, "PID-7") == "19800304"


def test_normalise_a_date_in_no_known_format_errors(tmp_path: Path) -> None:
    reason = error(tmp_path, "- normalise: {fields: [PID-7], to: date, date_formats: ['%Y-%m-%d']}")
    assert "PID-7 '04/03/1980' is not a date in %Y-%m-%d" in reason


def test_identifiers_rewrite_and_keep(tmp_path: Path) -> None:
    out = output(
        tmp_path,
        """
        - identifiers:
            rewrite_authority: {table: authorities, key: local_code, value: pacs_authority}
            keep_authorities: [GENHOSP]
    """,
    )
    assert value(out, "PID-3") == "100234^^^GENHOSP^MR"


def test_identifiers_with_none_left_reject_or_keep_all(tmp_path: Path) -> None:
    assert "PID-3 has no identifier from NOPE" in error(
        tmp_path, "- identifiers: {keep_authorities: [NOPE]}"
    )
    out = output(tmp_path, "- identifiers: {keep_authorities: [NOPE], when_none_left: keep_all}")
    assert len(out.values(FieldPath.parse("PID-3[*].1"))) == 3


def test_reject_with_a_condition(tmp_path: Path) -> None:
    steps = """
        - reject:
            reason: the order has no accession number
            when: {field: OBR-18, empty: true}
    """
    assert "the order has no accession number" in error(tmp_path, steps)
    out = output(tmp_path, steps, ADT.replace("CT CHEST^LOCAL", "CT CHEST^LOCAL||||||||||||||ACC1"))
    assert value(out, "OBR-18") == "ACC1"


def test_when_skips_a_step(tmp_path: Path) -> None:
    out = output(tmp_path, "- set: {field: PV1-2, value: I, when: {field: PV1-2, equals: E}}")
    assert value(out, "PV1-2") == "O"


def test_message_template_builds_a_whole_message(tmp_path: Path) -> None:
    template = "\n".join(
        [
            "MSH|^~\\&|CW|GENHOSP|PACS|RAD|{{ now() }}||OMI^O23^OMI_O23"
            "|{{ field('MSH-10') }}|P|2.5.1",
            "PID|1||{{ raw('PID-3') }}||{{ field('PID-5.1') | trim | upper }}"
            "^{{ field('PID-5.2') | trim }}",
            "ORC|NW|{{ field('OBR-2') }}",
            "OBR|1|{{ field('OBR-2') }}|{{ field('OBR-3') }}|{{ raw('OBR-4') }}",
            "IPC|ACC-{{ field('OBR-3') }}|||||"
            "{{ lookup('procedures', 'code', field('OBR-4.1'), 'modality') }}|x{{ '|' }}y",
        ]
    )
    out = output(
        tmp_path, "- message_template: templates/omi.j2", extra={"templates/omi.j2": template}
    )
    assert [s.id for s in out.segments] == ["MSH", "PID", "ORC", "OBR", "IPC"]
    assert value(out, "MSH-9") == "OMI^O23^OMI_O23" and value(out, "MSH-10") == "C1"
    assert value(out, "PID-3[2].4") == "EPI"
    assert value(out, "PID-5") == "SMITH^john"
    assert value(out, "IPC-6") == "CT"
    assert value(out, "IPC-7") == "x|y"  # template output is escaped: no field split


def test_a_template_error_at_run_time_errors_the_message(tmp_path: Path) -> None:
    template = "{{ lookup('procedures', 'code', 'NOPE', 'modality') }}"
    reason = error(tmp_path, f'- set: {{field: PV1-3, template: "{template}"}}')
    assert "'NOPE' is not in column code of table procedures" in reason


def test_templates_run_in_a_sandbox(tmp_path: Path) -> None:
    reason = error(tmp_path, "- set: {field: PV1-3, template: \"{{ ''.__class__.__mro__ }}\"}")
    assert "unsafe" in reason


def test_per_destination_steps_and_fan_out(tmp_path: Path) -> None:
    routes = """routes:
  r:
    source: ehr
    steps:
      - set: {field: PV1-3, value: SHARED}
    destinations:
      - pacs
      - destination: archive
        steps:
          - set: {field: PV1-3, value: ARCHIVE}
      - drop
"""
    endpoints = (
        "listeners:\n  ehr: {port: 0}\ndestinations:\n  pacs: {host: h, port: 1}\n"
        "  archive: {host: h, port: 2}\n"
    )
    config = load_config(config_folder(tmp_path, routes, endpoints=endpoints), {})
    routing = Router(config).route(ADT.encode(), "UNICODE UTF-8", "ehr")
    assert routing.status == "routed"
    results = {o.destination: value(o.message, "PV1-3") for o in routing.outbound}
    assert results == {"pacs": "SHARED", "archive": "ARCHIVE"}
    assert "dropped by r" in routing.reason


def test_a_route_without_steps_sends_the_message_as_received_beside_one_that_changes_it(
    tmp_path: Path,
) -> None:
    """A route without steps reads the parsed message itself (no copy): the routes before
    and after it that change the message change their own copies, never its payload."""
    routes = """
routes:
  before:
    source: ehr
    steps:
      - set: {field: PV1-3, value: BEFORE}
    destinations: [pacs]
  plain:
    source: ehr
    destinations: [archive]
  after:
    source: ehr
    steps:
      - set: {field: PV1-3, value: AFTER}
    destinations:
      - destination: pacs
        steps:
          - set: {field: PV1-2, value: I}
"""
    endpoints = (
        "listeners:\n  ehr: {port: 0}\ndestinations:\n  pacs: {host: h, port: 1}\n"
        "  archive: {host: h, port: 2}\n"
    )
    config = load_config(config_folder(tmp_path, routes, endpoints=endpoints), {})
    routing = Router(config).route(ADT.encode(), "UNICODE UTF-8", "ehr")
    sent = {o.route: o for o in routing.outbound}
    assert sent["plain"].payload == ADT.encode()
    assert (value(sent["before"].message, "PV1-3"), value(sent["after"].message, "PV1-3")) == (
        "BEFORE",
        "AFTER",
    )
    assert value(sent["after"].message, "PV1-2") == "I"
    assert value(sent["plain"].message, "PV1-3") == ""


def test_a_value_the_charset_cannot_hold_errors_the_message(tmp_path: Path) -> None:
    routes = (
        "routes:\n  r:\n    source: ehr\n    steps:\n"
        "      - set: {field: PV1-3, value: 'Ü'}\n    destinations: [pacs]\n"
    )
    config = load_config(config_folder(tmp_path, routes), {})
    ascii_message = ADT.replace("|2.5.1", "|2.5.1||||||ASCII")
    routing = Router(config).route(ascii_message.encode(), "ASCII", "ehr")
    assert routing.status == "errored"
    assert "cannot be written in the message's character set" in routing.reason


SECRET = "code,value\nX,TOPSECRET\n"


def secret_outside_the_mappings(tmp_path: Path) -> Path:
    """A CSV file next to (not in) the mappings folder, and the folder itself."""
    (tmp_path / "mappings").mkdir(exist_ok=True)
    secret = tmp_path / "secret.csv"
    secret.write_text(SECRET, encoding="utf-8")
    return secret


@pytest.mark.parametrize(
    ("table", "shown"),
    [
        ("ABSOLUTE", "'/"),  # a long name is shortened in the reason
        ("'../secret'", "'../secret'"),
        ("'../secret.csv'", "'../secret.csv'"),
        ("'sub/procedures'", "'sub/procedures'"),
        ("'.hidden'", "'.hidden'"),
        ("field('PID-3.1')", "'../secret'"),  # a name read from the message
    ],
    ids=["absolute", "parent", "parent-csv", "subfolder", "leading-dot", "from-the-message"],
)
def test_lookup_reads_only_tables_of_the_mappings_folder(
    tmp_path: Path, table: str, shown: str
) -> None:
    secret = secret_outside_the_mappings(tmp_path)
    table = table.replace("ABSOLUTE", repr(str(secret)))
    template = f"{{{{ lookup({table}, 'code', 'X', 'value') }}}}"
    message = ADT.replace("100234^^^GH^MR", "../secret^^^GH^MR")
    routing = run(tmp_path, f'- set: {{field: PV1-3, template: "{template}"}}', message)
    assert routing.status == "errored" and not routing.outbound
    assert f"table {shown}" in routing.reason and "not a table name" in routing.reason
    assert "TOPSECRET" not in routing.reason


def test_a_table_that_links_outside_the_mappings_folder_is_refused(tmp_path: Path) -> None:
    secret = secret_outside_the_mappings(tmp_path)
    (tmp_path / "mappings" / "leak.csv").symlink_to(secret)
    (tmp_path / "mappings" / "alias.csv").symlink_to("procedures.csv")  # inside: fine
    template = "{{ lookup('leak', 'code', 'X', 'value') }}"
    reason = error(tmp_path, f'- set: {{field: PV1-3, template: "{template}"}}')
    assert "table 'leak': its file is a link to outside the mappings folder" in reason
    assert str(secret) not in reason and "TOPSECRET" not in reason
    template = "{{ lookup('alias', 'code', 'CTCHEST', 'modality') }}"
    out = output(tmp_path, f'- set: {{field: PV1-3, template: "{template}"}}')
    assert value(out, "PV1-3") == "CT"


@pytest.mark.parametrize("table", ["procedures", "procedures.csv"])
def test_lookup_by_a_plain_name_still_works(tmp_path: Path, table: str) -> None:
    template = f"{{{{ lookup('{table}', 'code', field('OBR-4.1'), 'modality') }}}}"
    out = output(tmp_path, f'- set: {{field: PV1-3, template: "{template}"}}')
    assert value(out, "PV1-3") == "CT"


@pytest.mark.parametrize(
    "step",
    [
        "- map: {field: OBR-4.1, table: ../secret, key: code, value: value}",
        "- identifiers: {field: PID-3, rewrite_authority:"
        " {table: ../secret, key: code, value: value}}",
    ],
    ids=["map", "identifiers"],
)
def test_a_step_naming_a_table_outside_the_folder_fails_the_check(
    tmp_path: Path, step: str
) -> None:
    secret_outside_the_mappings(tmp_path)
    with pytest.raises(ConfigError) as caught:
        run(tmp_path, step)
    assert "table '../secret': not a table name" in str(caught.value)


def test_the_engine_errors_such_a_message_and_goes_on(db_url: str, tmp_path: Path) -> None:
    """Through a running engine: the message naming a table outside the folder is errored with
    the reason, the engine keeps routing."""
    secret_outside_the_mappings(tmp_path)
    template = "{{ lookup(field('PID-3.1'), 'code', 'X', 'modality', 'none') }}"
    routes = (
        "routes:\n  r:\n    source: ehr\n    steps:\n"
        f'      - set: {{field: PV1-3, template: "{template}"}}\n'
        "    destinations: [pacs]\n"
    )
    engine = Pipeline(db_url, config_folder(tmp_path, routes, mappings=TABLES))
    engine.start()
    try:
        peer = Peer(engine.port())
        bad = ADT.replace("100234^^^GH^MR", "../secret^^^GH^MR")
        good = ADT.replace("|C1|", "|C2|").replace("100234^^^GH^MR", "procedures^^^GH^MR")
        for payload in (bad, good):
            assert read_ack(peer.exchange(payload.encode())).code == "AA"
        peer.close()
        store = open_store(db_url)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            stored = stored_messages(store)
            if [m.status for m in stored] == ["errored", "routed"]:
                break
            time.sleep(0.05)
        assert [m.status for m in stored] == ["errored", "routed"]
        assert "table '../secret': not a table name" in stored[0].status_reason
        store.dispose()
    finally:
        engine.stop()
