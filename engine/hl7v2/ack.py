"""HL7 acknowledgements: which ones a message asks for, and building them.

Original mode (MSH-15 and MSH-16 empty): one application ACK, MSA-1 AA, AE or AR.
Enhanced mode (either valued): an accept ACK (CA, CE, CR) governed by MSH-15, then, once the
message was accepted, an application ACK (AA) governed by MSH-16. Both use table 0155 (AL always,
NE never, ER on error only, SU on success only). A refused message whose sender asked for no
accept ACK but for an application ACK on error gets AE or AR as its application ACK.

HL7 makes both fields required in enhanced mode and says nothing of one left empty; an empty
one counts as ``AL``. For MSH-16 this is HL7's own equivalence (v2.8.2, chapter 2): original
mode is enhanced mode with MSH-15 ``NE`` and MSH-16 ``AL``, so a sender writing ``NE`` and
nothing else gets what an original-mode sender gets.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from engine.hl7v2.errors import Problem
from engine.hl7v2.escaping import escape, unescape
from engine.hl7v2.header import (
    DEFAULT_DELIMITERS,
    Delimiters,
    Header,
    HeaderError,
    parse_header,
    read_delimiters,
    segment_end,
    strip_preamble,
    version_tuple,
)


class Outcome(Enum):
    """What the receiver decided about a message."""

    ACCEPTED = "accepted"
    ERROR = "error"
    REJECTED = "rejected"


_ORIGINAL = {Outcome.ACCEPTED: "AA", Outcome.ERROR: "AE", Outcome.REJECTED: "AR"}
_ACCEPT = {Outcome.ACCEPTED: "CA", Outcome.ERROR: "CE", Outcome.REJECTED: "CR"}
POSITIVE_CODES = frozenset({"AA", "CA"})


def _wanted(condition: str, success: bool) -> bool:
    if condition == "NE":
        return False
    if condition == "ER":
        return not success
    if condition == "SU":
        return success
    return True  # AL, and any value outside table 0155: answering beats leaving a sender waiting


def ack_conditions(header: Header) -> tuple[str, str]:
    """MSH-15 and MSH-16 of an enhanced-mode message as they are followed: empty is ``AL``."""
    return header.accept_ack_type or "AL", header.application_ack_type or "AL"


def ack_codes(header: Header | None, outcome: Outcome) -> list[str]:
    """MSA-1 codes to send, in order, for ``outcome`` of a message with ``header``.

    >>> ack_codes(None, Outcome.REJECTED)
    ['AR']
    """
    if header is None or not header.enhanced_mode:
        return [_ORIGINAL[outcome]]
    success = outcome is Outcome.ACCEPTED
    accept, application = ack_conditions(header)
    codes = []
    if _wanted(accept, success):
        codes.append(_ACCEPT[outcome])
    if success:
        if _wanted(application, True):
            codes.append("AA")
    elif not codes and _wanted(application, False):
        # No accept ACK told the sender; the application ACK it asked for does (AE or AR).
        codes.append(_ORIGINAL[outcome])
    return codes


_ID_PREFIX = "CW" + base64.b32encode(os.urandom(5)).decode("ascii")[:6]
_id_counter = itertools.count(1)


def new_control_id() -> str:
    """A fresh MSH-10 for messages the engine originates: 20 characters, unique per process.

    A random prefix drawn at start-up keeps engines sharing a database (and restarts) apart.
    """
    return f"{_ID_PREFIX}{next(_id_counter) % 10**12:012d}"


_clock: tuple[int, str] = (0, "")


def hl7_timestamp(moment: datetime | None = None) -> str:
    """An HL7 DTM with seconds and UTC offset, e.g. ``20261123143000+0100``."""
    global _clock
    if moment is not None:
        return moment.strftime("%Y%m%d%H%M%S%z")
    second = int(time.time())
    if _clock[0] != second:  # formatting costs more than the rest of an ACK: once a second
        _clock = (second, datetime.fromtimestamp(second).astimezone().strftime("%Y%m%d%H%M%S%z"))
    return _clock[1]


def build_ack(
    header: Header | None,
    code: str,
    text: str = "",
    problem: Problem | None = None,
    *,
    control_id: str | None = None,
    now: datetime | None = None,
) -> str:
    """The acknowledgement message for ``header`` as text with CR segment ends.

    Sender and receiver are swapped, the inbound version and processing id are kept, MSA-2
    echoes MSH-10 and, for a problem, an ERR segment names the location and the table 0357 code
    in the form the inbound version expects (ERR-1 before v2.5, ERR-2/3/4/8 from v2.5).
    """
    d = header.delimiters if header else DEFAULT_DELIMITERS
    version = header.version if header else ""
    numbers = version_tuple(version) or (2, 5)
    trigger = header.trigger_event if header else ""
    if trigger and numbers >= (2, 3, 1):
        message_type = d.component.join(("ACK", trigger, "ACK"))
    elif trigger and numbers >= (2, 3):
        message_type = d.component.join(("ACK", trigger))
    else:
        message_type = "ACK"
    fields = [
        "MSH",
        d.encoding_characters,
        header[5] if header else "",
        header[6] if header else "",
        header[3] if header else "",
        header[4] if header else "",
        hl7_timestamp(now),
        "",
        message_type,
        control_id or new_control_id(),
        header[11] if header else "P",
        header[12] if header else "",
    ]
    if header and header.enhanced_mode and code[0] == "C":
        fields += ["", "", "NE", "NE"]
    if header and header[18]:
        fields += [""] * (17 - len(fields)) + [header[18]]
    segments = [d.field.join(fields)]
    msa = ["MSA", code, header.control_id if header else "", escape(text, d)]
    segments.append(d.field.join(msa).rstrip(d.field))
    if problem is not None:
        segments.append(_err_segment(problem, numbers, d))
    return "\r".join(segments) + "\r"


def _err_segment(problem: Problem, numbers: tuple[int, ...], d: Delimiters) -> str:
    loc = problem.location
    code = str(problem.code.value)
    label = escape(problem.code.text, d)
    if numbers < (2, 5):
        # ERR-1 (ELD): segment ^ sequence ^ field ^ code&text&HL70357
        where = [loc.segment, str(loc.sequence), str(loc.field or "")] if loc else ["", "", ""]
        eld = d.component.join([*where, d.subcomponent.join((code, label, "HL70357"))])
        return d.field.join(("ERR", eld))
    erl = ""
    if loc is not None:
        parts = [loc.segment, str(loc.sequence)]
        if loc.field is not None:
            parts += [str(loc.field), "1"]
            if loc.component is not None:
                parts.append(str(loc.component))
        erl = d.component.join(parts)
    cwe = d.component.join((code, label, "HL70357"))
    return d.field.join(("ERR", "", erl, cwe, "E", "", "", "", escape(problem.text, d)))


@dataclass(frozen=True, slots=True)
class AckReply:
    """What an acknowledgement says: MSA-1, MSA-2, MSA-3 and the first ERR, as text."""

    code: str
    control_id: str
    text: str
    error: str
    """The ERR condition in words, with the receiver's text (which may quote patient data)."""
    error_code: str = ""
    """The ERR condition's code and location only (``101 at PID-3``): what a log may say."""

    @property
    def positive(self) -> bool:
        return self.code in POSITIVE_CODES


def read_ack(payload: bytes) -> AckReply:
    """Read an ACK's MSA (and ERR) without a full parse; missing parts come back empty."""
    body = strip_preamble(payload)
    try:
        delimiters = read_delimiters(body)
    except HeaderError:
        return AckReply("", "", "not an HL7 acknowledgement", "")
    text = body.decode("utf-8", "replace")
    msa: list[str] = []
    err: list[str] = []
    for segment in re.split(r"\r\n|\r|\n", text):
        fields = segment.split(delimiters.field)
        if fields[0] == "MSA" and not msa:
            msa = fields
        elif fields[0] == "ERR" and not err:
            err = fields
    error = _describe_err(err, delimiters) if err else ""
    error_code = _describe_err(err, delimiters, with_text=False) if err else ""
    if not msa:
        return AckReply("", "", "no MSA segment in the answer", error, error_code)
    msa += [""] * (4 - len(msa))
    return AckReply(msa[1], msa[2], unescape(msa[3], delimiters), error, error_code)


def sent_control_id(payload: bytes) -> str:
    """MSH-10 of an outgoing message as its ACK's MSA-2 echoes it: as written (escapes kept),
    decoded as :func:`read_ack` decodes answers, so equal text means the same bytes."""
    body = strip_preamble(payload)
    try:
        delimiters = read_delimiters(body)
    except HeaderError:
        return ""
    msh = body[: segment_end(body)].decode("utf-8", "replace")
    return parse_header(msh, delimiters).control_id


def _describe_err(fields: list[str], d: Delimiters, *, with_text: bool = True) -> str:
    """An ERR segment in words: ``101 Required field missing at MSH-10`` (``101 at MSH-10``
    without the text)."""
    fields = fields + [""] * (4 - len(fields))
    if fields[3]:  # v2.5+: ERR-2 location, ERR-3 condition
        location = fields[2].split(d.repetition)[0].split(d.component)
        condition = fields[3].split(d.component)
    else:  # before v2.5: ERR-1 = segment ^ sequence ^ field ^ code&text
        parts = fields[1].split(d.repetition)[0].split(d.component)
        location = parts[:3]
        condition = (parts[3] if len(parts) > 3 else "").split(d.subcomponent)
    words = " ".join(unescape(part, d) for part in condition[: 2 if with_text else 1] if part)
    segment = location[0] if location else ""
    if segment:
        where = segment
        if len(location) > 2 and location[2]:
            where += f"-{location[2]}"
        words += f" at {where}"
    return words.strip()


def answer_in_words(ack: bytes) -> str:
    """A destination's answer in words: an HL7 ACK's code, text and error; or, for what is no
    HL7 message (the built-in ``mpi`` destination's note, ``MPI: created patient 12``), its
    text as it is."""
    if not strip_preamble(ack).startswith(b"MSH"):
        return ack.decode("utf-8", "replace").strip()
    reply = read_ack(ack)
    words = f"{reply.code} {reply.text}".strip()
    if reply.error and not reply.positive:
        words += f"; ERR {reply.error}"
    return words
