"""Filter conditions: each operator, type patterns, all/any/not, wildcards, explanations."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from engine.config.loader import load_config
from engine.hl7v2.message import Message
from engine.routes.conditions import parse_moment
from tests.support import config_folder

MESSAGE = Message.parse(
    "MSH|^~\\&|EPIC|GENHOSP|PACS|RAD|20261123||ADT^A08^ADT_A01|C1|P|2.5.1\r"
    "EVN|A08|20261120101500\r"
    "PID|1||100234^^^GENHOSP^MR~TR99001^^^GENHOSP^TR||SMITH^JOHN||19800304|M\r"
    "PV1|1|O\r"
    "OBX|1|NM|WT||82\r"
    "OBX|2|NM|HT||180\r"
)


def condition(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    routes = f"routes:\n  r:\n    source: ehr\n    filter: {text}\n    destinations: [pacs]\n"
    return load_config(config_folder(tmp_path, routes), {}).routes["r"].filter


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ("{type: ADT}", True),
        ("{type: ADT^A08}", True),
        ("{type: ADT^A0*}", True),
        ("{type: 'ADT^A08^ADT_A01'}", True),
        ("{type: [ORM^O01, ADT^A08]}", True),
        ("{type: ORM^O01}", False),
        ("{type: ADT^A01}", False),
        ("{field: PV1-2, equals: O}", True),
        ("{field: PV1-2, equals: I}", False),
        ("{field: PV1-2, in: [I, O, E]}", True),
        ("{field: PID-8, in: [F, U]}", False),
        ("{field: PID-3.1, starts_with: '100'}", True),
        ("{field: 'PID-3[*].1', starts_with: TR}", True),
        ("{field: PID-3.1, starts_with: TR}", False),
        ("{field: PID-5.1, regex: '^SM.TH$'}", True),
        ("{field: PID-5.1, regex: '^JONES'}", False),
        ("{field: PID-7, exists: true}", True),
        ("{field: PID-29, exists: true}", False),
        ("{field: PID-29, exists: false}", True),
        ("{field: PID-29, empty: true}", True),
        ("{field: PID-7, empty: true}", False),
        ("{field: PID-7, before: 1990-01-01}", True),
        ("{field: PID-7, after: 19900101}", False),
        ("{field: EVN-2, after: 2026-11-20T10:00}", True),
        ("{field: PID-5.1, before: 2000-01-01}", False),  # not a date: never true
        ("{field: OBX-5, greater_than: 100}", False),
        ("{field: 'OBX[*]-5', greater_than: 100}", True),
        ("{field: 'OBX[2]-5', at_least: 180}", True),
        ("{field: OBX-5, less_than: 82}", False),
        ("{field: OBX-5, at_most: 82}", True),
        ("{segment: PV1, exists: true}", True),
        ("{segment: ZDS}", False),
        ("{segment: ZDS, exists: false}", True),
        ("{all: [{type: ADT}, {field: PV1-2, equals: O}]}", True),
        ("{all: [{type: ADT}, {field: PV1-2, equals: I}]}", False),
        ("{any: [{type: ORM}, {field: PV1-2, equals: O}]}", True),
        ("{any: [{type: ORM}, {field: PV1-2, equals: I}]}", False),
        ("{not: {type: ORM}}", True),
        ("[{type: ADT}, {field: PID-8, equals: M}]", True),
        ("{field: PID-8, equals: 'NO'}", False),  # YAML 1.1's NO stays text
    ],
)
def test_conditions(tmp_path: Path, text: str, holds: bool) -> None:
    assert condition(tmp_path, text).test(MESSAGE) is holds


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("{type: ORM^O01}", "type ORM^O01: MSH-9 is ADT^A08^ADT_A01"),
        ("{field: PV1-2, in: [I, E]}", "PV1-2 in [I, E]: it is 'O'"),
        ("{field: PID-29, exists: true}", "PID-29 exists true: it is empty"),
        ("{segment: ZDS}", "segment ZDS is missing"),
        ("{all: [{type: ADT}, {field: PID-8, equals: F}]}", "PID-8 equals 'F': it is 'M'"),
        ("{not: {type: ADT}}", "not (type ADT): it holds"),
    ],
)
def test_a_failed_condition_says_why(tmp_path: Path, text: str, words: str) -> None:
    assert words in condition(tmp_path, text).explain(MESSAGE)


def test_relative_dates() -> None:
    now = datetime(2026, 11, 23, 14, 30)
    assert parse_moment("now", now) == now
    assert parse_moment("today", now) == datetime(2026, 11, 23)
    assert parse_moment("-30d", now) == datetime(2026, 10, 24, 14, 30)
    assert parse_moment("today-1d", now) == datetime(2026, 11, 22)
    assert parse_moment("+2h", now) == datetime(2026, 11, 23, 16, 30)
    assert parse_moment("2026-01-01") == datetime(2026, 1, 1)
    assert parse_moment("20260101") == datetime(2026, 1, 1)
