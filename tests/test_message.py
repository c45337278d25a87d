"""The lazy message model: paths, reads, escaped writes, segment edits; vs python-hl7."""

from __future__ import annotations

from pathlib import Path

import hl7 as python_hl7
import pytest

from engine.hl7v2.charset import codec_for
from engine.hl7v2.check import examine
from engine.hl7v2.fieldpath import ALL, FieldPath, PathError
from engine.hl7v2.message import Message, MessageError
from engine.hl7v2.message_file import read_message_file
from tests.support import ROOT

TEXT = (
    "MSH|^~\\&|EPIC|GENHOSP|PACS|RAD|20261123||ADT^A08^ADT_A01|C1|P|2.5.1\r"
    "PID|1||100234^^^GENHOSP^MR~E445566^^^EPI^PI||SMITH^JOHN^Q||19800304|M|||"
    "12 MAIN ST^^SPRINGFIELD^IL^62701||(217)555-0100\r"
    "OBX|1|TX|NOTE||SMITH \\T\\ SONS\r"
    "OBX|2|TX|NOTE||SECOND\r"
)


def p(text: str) -> FieldPath:
    return FieldPath.parse(text)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("MSH-1", "|"),
        ("MSH-2", "^~\\&"),
        ("MSH-9", "ADT^A08^ADT_A01"),
        ("MSH-9.2", "A08"),
        ("PID-3", "100234^^^GENHOSP^MR~E445566^^^EPI^PI"),
        ("PID-3.1", "100234"),
        ("PID-3[2].1", "E445566"),
        ("PID-3[2].4", "EPI"),
        ("PID-3[3].1", ""),
        ("PID-5.2", "JOHN"),
        ("PID-5.9", ""),
        ("PID-7", "19800304"),
        ("PID-11.3", "SPRINGFIELD"),
        ("PID-99", ""),
        ("OBX-5", "SMITH & SONS"),
        ("OBX[2]-5", "SECOND"),
        ("OBX[3]-5", ""),
        ("ZZZ-1", ""),
    ],
)
def test_reading_by_path(path: str, value: str) -> None:
    assert Message.parse(TEXT).value(p(path)) == value


def test_wildcards_read_every_occurrence_and_repetition() -> None:
    message = Message.parse(TEXT)
    assert message.values(p("OBX[*]-5")) == ["SMITH & SONS", "SECOND"]
    assert message.values(p("PID-3[*].4")) == ["GENHOSP", "EPI"]


def test_an_untouched_message_is_written_back_exactly() -> None:
    message = Message.parse(TEXT)
    message.value(p("PID-5.1"))  # reading splits fields but must not change the text
    assert message.to_text() == TEXT


def test_lf_and_crlf_segment_ends_and_blank_lines_are_normalised() -> None:
    sloppy = TEXT.replace("\r", "\r\n") + "\r\n\r\n"
    assert Message.parse(sloppy).to_text() == TEXT
    assert Message.parse(TEXT.replace("\r", "\n")).to_text() == TEXT


@pytest.mark.parametrize(
    ("path", "value", "segment"),
    [
        ("PID-3.4", "HOSP", "PID|1||100234^^^HOSP^MR~E445566^^^EPI^PI"),
        ("PID-3[2].1", "X9", "PID|1||100234^^^GENHOSP^MR~X9^^^EPI^PI"),
        ("PID-3[3].1", "NEW", "PID|1||100234^^^GENHOSP^MR~E445566^^^EPI^PI~NEW"),
        ("PID-3[*].4", "ALL", "PID|1||100234^^^ALL^MR~E445566^^^ALL^PI"),
        ("PID-5", "O'BRIEN", "PID|1||100234^^^GENHOSP^MR~E445566^^^EPI^PI||O'BRIEN"),
        ("PID-5.1.2", "SUB", "PID|1||100234^^^GENHOSP^MR~E445566^^^EPI^PI||SMITH&SUB^JOHN^Q"),
        ("PID-30", "Y", "PID|1||100234"),
    ],
)
def test_writing_by_path(path: str, value: str, segment: str) -> None:
    message = Message.parse(TEXT)
    message.set(p(path), value)
    written = message.to_text().split("\r")[1]
    assert written.startswith(segment)
    assert message.value(p(path.replace("[*]", "[1]"))) == value


def test_every_write_escapes_delimiters_so_a_value_never_splits_a_field() -> None:
    message = Message.parse(TEXT)
    message.set(p("PID-5.1"), "SMITH|JONES^JR~X\\Y&Z")
    pid = message.to_text().split("\r")[1]
    assert "SMITH\\F\\JONES\\S\\JR\\R\\X\\E\\Y\\T\\Z^JOHN^Q" in pid
    assert message.value(p("PID-5.1")) == "SMITH|JONES^JR~X\\Y&Z"
    assert message.value(p("PID-7")) == "19800304"  # nothing shifted
    assert python_hl7.parse(message.to_text())["PID.F7"] == "19800304"


def test_set_raw_keeps_structure_for_copies() -> None:
    message = Message.parse(TEXT)
    message.set_raw(p("OBX-5"), message.value(p("PID-5")))
    assert message.value(p("OBX-5.2")) == "JOHN"


def test_clear_empties_a_component_and_removes_a_repetition() -> None:
    message = Message.parse(TEXT)
    message.clear(p("PID-5.3"))
    message.clear(p("PID-3[1]"))
    assert message.value(p("PID-5")) == "SMITH^JOHN"
    assert message.value(p("PID-3")) == "E445566^^^EPI^PI"


def test_segment_edits() -> None:
    message = Message.parse(TEXT)
    assert message.delete_segments(["OBX", "MSH"]) == 2
    zds = message.insert_segment("ZDS", after="PID")
    zds.set_field(1, "1.2.3^100^Application^DICOM")
    assert [s.id for s in message.segments] == ["MSH", "PID", "ZDS"]
    assert message.rename_segments("ZDS", "ZD1") == 1
    assert message.to_text().endswith("\rZD1|1.2.3^100^Application^DICOM\r")
    with pytest.raises(MessageError, match="no OBR segment"):
        message.insert_segment("ZZZ", after="OBR")


def test_writing_a_missing_segment_or_the_delimiters_is_an_error() -> None:
    message = Message.parse(TEXT)
    with pytest.raises(MessageError, match="no ORC segment"):
        message.set(p("ORC-1"), "NW")
    with pytest.raises(MessageError, match="delimiters"):
        message.set(p("MSH-2"), "x")


def test_messages_with_other_delimiters() -> None:
    message = Message.parse("MSH^~|\\&^SEND^FAC^RCV^FAC^20120918^^ADT~A24^C1^T^2.4\rPID^1^^11~X\r")
    assert message.value(p("MSH-9.2")) == "A24"
    assert message.value(p("PID-3.2")) == "X"
    message.set(p("PID-3.2"), "a^b")
    assert "PID^1^^11~a\\F\\b" in message.to_text()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("PID.3", "use '-' between segment and field"),
        ("pid-3", "upper case"),
        ("PID", "field number is missing"),
        ("PID-0", "start at 1"),
        ("PID-3[0]", "start at 1"),
        ("MSH-2.1", "delimiters"),
        ("hello", "is not a field path"),
    ],
)
def test_bad_paths_explain_themselves(text: str, words: str) -> None:
    with pytest.raises(PathError, match=words):
        FieldPath.parse(text)


def test_paths_print_as_written() -> None:
    for text in ("PID-3", "PID-3.1", "PID-3[2].4.1", "OBX[*]-5", "PID-3[*].4"):
        assert str(FieldPath.parse(text)) == text
    assert FieldPath.parse("OBX[*]-5").occurrence == ALL


def _reference_messages() -> list[tuple[str, str]]:
    paths = sorted((ROOT / "samples").glob("*.hl7"))
    corpus = ROOT.parent / "shared" / "corpus"
    if corpus.is_dir():
        paths += sorted(p for p in corpus.rglob("*") if p.suffix in (".hl7", ".txt"))
    found = []
    for path in paths:
        for message in read_message_file(path).messages:
            exam = examine(message.payload)
            if exam.problem is None:
                text = message.payload.decode(codec_for(exam.charset) or "utf-8")
                found.append((f"{Path(path).name}:{message.line}", text))
    return found


def test_every_leaf_agrees_with_python_hl7() -> None:
    """Differential test: each component and subcomponent of every sample and corpus message."""
    checked = 0
    for where, text in _reference_messages():
        ours = Message.parse(text)
        theirs = python_hl7.parse(text.replace("\n", "\r").replace("\r\r", "\r").strip("\r"))
        seen: dict[str, int] = {}
        for segment in theirs:
            name = str(segment[0])
            if len(name) != 3:
                continue  # python-hl7 keeps junk lines (a sender's stray CR) as segments
            seen[name] = seen.get(name, 0) + 1
            occurrence = seen[name]
            for position in range(1, len(segment)):
                if name == "MSH" and position <= 2:
                    continue
                field = segment[position]
                for r, repetition in enumerate(field, start=1):
                    if isinstance(repetition, str):
                        expected = theirs.unescape(repetition)
                        got = ours.value(FieldPath(name, position, occurrence, r))
                        assert got == expected, f"{where} {name}[{occurrence}]-{position}"
                        checked += 1
                        continue
                    for c, component in enumerate(repetition, start=1):
                        if isinstance(component, str):
                            got = ours.value(FieldPath(name, position, occurrence, r, c))
                            assert got == theirs.unescape(component), (
                                f"{where} {name}[{occurrence}]-{position}[{r}].{c}"
                            )
                            checked += 1
                            continue
                        for s, sub in enumerate(component, start=1):
                            got = ours.value(FieldPath(name, position, occurrence, r, c, s))
                            assert got == theirs.unescape(sub), (
                                f"{where} {name}[{occurrence}]-{position}[{r}].{c}.{s}"
                            )
                            checked += 1
    assert checked > 1000
