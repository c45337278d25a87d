"""Atheris entry points, one per input path: ``python -m tools.fuzz.harness TARGET [ARGS]``.

Targets: ``framing`` (the MLLP decoder, whole and in pieces), ``answers`` (the header checks and
every ACK intake could send), ``message`` (the message model: parse, write out, read, write a
value), ``ack`` (reading a PACS's answer). Each asserts :mod:`tools.fuzz.invariants`; an
AssertionError or any other exception is a finding.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports(include=["engine", "tools"]):
    from engine.hl7v2.fieldpath import FieldPath
    from engine.hl7v2.header import Delimiters
    from tools.fuzz import invariants


def _split(data: bytes, size: int) -> tuple[bytes, atheris.FuzzedDataProvider]:
    """The input without its last ``size`` bytes, and those bytes as parameters (kept at the
    end so that seeds from real messages still start with MSH or VT)."""
    return data[:-size] if len(data) > size else data, atheris.FuzzedDataProvider(data[-size:])


def fuzz_framing(data: bytes) -> None:
    stream, provider = _split(data, 12)
    max_size = provider.ConsumeIntInRange(1, 96)
    cuts = provider.ConsumeIntListInRange(provider.ConsumeIntInRange(0, 5), 0, 4096)
    invariants.check_decoder(stream, cuts, max_size)


def fuzz_answers(data: bytes) -> None:
    payload = data.replace(b"\x0b", b"").replace(b"\x1c", b"")
    invariants.check_answers(payload)
    invariants.check_answers(payload, default_charset="8859/1", strict_segments=True)


def fuzz_message(data: bytes) -> None:
    text, provider = _split(data, 16)
    field = provider.ConsumeIntInRange(3, 30)
    repetition = provider.ConsumeIntInRange(1, 5)
    component = provider.ConsumeIntInRange(1, 12)
    value = provider.ConsumeBytes(13).decode("latin-1")
    message = invariants.check_message(text.decode("latin-1"))
    if message is None:
        return
    invariants.check_escaping(value, message.delimiters)
    ids = [s.id for s in message.segments if s.id.isalnum() and len(s.id) == 3]
    if ids and ids[-1].isupper():
        path = FieldPath(ids[-1], field, repetition=repetition, component=component)
        invariants.check_write_read(message, path, value)


def fuzz_ack(data: bytes) -> None:
    invariants.check_read_ack(data)
    invariants.check_escaping(data.decode("latin-1"), Delimiters())


TARGETS: dict[str, Callable[[bytes], None]] = {
    "framing": fuzz_framing,
    "answers": fuzz_answers,
    "message": fuzz_message,
    "ack": fuzz_ack,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tools.fuzz.harness {{{','.join(TARGETS)}}} [libFuzzer args]")
    target = TARGETS[sys.argv.pop(1)]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
