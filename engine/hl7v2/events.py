"""Which message types and trigger events HL7 v2 defines, to catch a filter no message can pass.

``MESSAGE_TYPES`` is HL7 table 0076 (message type, v2.1 to v2.9, withdrawn ones included: old
feeds still send them). ``TRIGGERS`` lists, for the message types a PACS feed carries and whose
events are settled, the trigger events each is sent with (HL7 table 0003 and the message
definitions of chapters 2-4, 7, 8 and 10); a type not in it is not checked further. Codes
beginning with ``Z`` are local by HL7's rule and always allowed.

>>> type_pattern_problem("OMI^O23") is None
True
>>> type_pattern_problem("OMI^O32")[0]
'HL7 v2 sends OMI only with trigger event O23, not O32'
"""

from __future__ import annotations

import fnmatch
import re

_TABLE_0076 = """
    ACK ADR ADT ARD ARQ BAR BPS BRP BRT BTS CCF CCI CCM CCQ CCR CCU CNQ CQU CRM CSU DBC DBU DEL
    DEO DER DFT DOC DPR DRC DRG DSR EAC EAN EAR EDR EHC ENC EQQ ERP ESR ESU INR INU LSR LSU MCF
    MDM MFD MFK MFN MFQ MFR NMD NMQ NMR OMB OMD OMG OMI OML OMN OMP OMQ OMS OPL OPR OPU ORA ORB
    ORD ORF ORG ORI ORL ORM ORN ORP ORR ORS ORU ORX OSM OSQ OSR OSU OUL PEX PGL PIN PMU PPG PPP
    PPR PPT PPV PRR PTR QBP QCK QCN QRF QRY QSB QSX QVR RAR RAS RCI RCL RDE RDR RDS RDY REF RER
    RGR RGV ROC ROR RPA RPI RPL RPR RQA RQC RQI RQP RRA RRD RRE RRG RRI RSP RTB SCN SDN SDR SIU
    SLN SLR SMD SPQ SQM SQR SRM SRR SSR SSU STC STI SUR TBR TCR TCU UDM VQQ VXQ VXR VXU VXX
"""
MESSAGE_TYPES = frozenset(_TABLE_0076.split())
"""HL7 table 0076: every message type of HL7 v2 (MSH-9.1)."""


def _numbered(prefix: str, first: int, last: int, *, skip: tuple[int, ...] = ()) -> frozenset[str]:
    return frozenset(f"{prefix}{n:02d}" for n in range(first, last + 1) if n not in skip)


TRIGGERS: dict[str, frozenset[str]] = {
    # Chapter 3, patient administration (A19 is a query: QRY^A19 / ADR^A19, never ADT).
    "ADT": _numbered("A", 1, 62, skip=(19,)),
    "ADR": frozenset({"A19"}),
    # Chapter 4, orders (v2.3.1 ORM/ORR, and the v2.4+ order messages with their responses).
    "ORM": frozenset({"O01"}),
    "ORR": frozenset({"O02"}),
    "OMD": frozenset({"O03"}),
    "ORD": frozenset({"O04"}),
    "OMS": frozenset({"O05"}),
    "ORS": frozenset({"O06"}),
    "OMN": frozenset({"O07"}),
    "ORN": frozenset({"O08"}),
    "OMP": frozenset({"O09"}),
    "ORP": frozenset({"O10"}),
    "RDS": frozenset({"O13"}),
    "RRD": frozenset({"O14"}),
    "RGV": frozenset({"O15"}),
    "RRG": frozenset({"O16"}),
    "RAS": frozenset({"O17"}),
    "RRA": frozenset({"O18"}),
    "OMG": frozenset({"O19"}),
    "ORG": frozenset({"O20"}),
    "OMI": frozenset({"O23"}),
    "ORI": frozenset({"O24"}),
    "OMB": frozenset({"O27"}),
    "ORB": frozenset({"O28"}),
    "BPS": frozenset({"O29"}),
    "BRP": frozenset({"O30"}),
    "BTS": frozenset({"O31"}),
    "BRT": frozenset({"O32"}),
    "OPL": frozenset({"O37"}),
    "OPR": frozenset({"O38"}),
    # Chapter 7, observations (results, point of care, alerts, waveforms) and lab automation.
    "ORU": frozenset({"R01", "R03", "R30", "R31", "R32", "R40", "R41", "W01"}),
    "OUL": frozenset({"R21", "R22", "R23", "R24"}),
    # Chapter 9, medical records: documents.
    "MDM": _numbered("T", 1, 11),
    # Chapter 10, scheduling.
    "SIU": _numbered("S", 12, 26),
    "SRM": _numbered("S", 1, 11),
    "SRR": _numbered("S", 1, 11),
    # Chapter 6, financial management.
    "BAR": frozenset({"P01", "P02", "P05", "P06", "P10", "P12"}),
    "DFT": frozenset({"P03", "P11"}),
    # Chapter 4A, immunisation.
    "VXQ": frozenset({"V01"}),
    "VXX": frozenset({"V02"}),
    "VXR": frozenset({"V03"}),
    "VXU": frozenset({"V04"}),
}
"""Trigger events (MSH-9.2) each of these message types is sent with; ACK takes any."""

_WILD = re.compile(r"[*?]")


def _local(code: str) -> bool:
    return code.upper().startswith("Z")


def _matches(pattern: str, codes: frozenset[str]) -> bool:
    return any(fnmatch.fnmatchcase(code, pattern) for code in codes)


def type_pattern_problem(pattern: str) -> tuple[str, str] | None:
    """Why no HL7 v2 message can match a filter's type pattern (``ADT^A08``, ``ORM``,
    ``ADT^A0*``), with a hint; None when some can, or when the pattern names a local (Z) code.

    Only MSH-9.1 and MSH-9.2 are judged; the message structure (MSH-9.3) is not.
    """
    parts = pattern.split("^")
    code = parts[0]
    trigger = parts[1] if len(parts) > 1 else ""
    if not code or _local(code) or (_WILD.search(code) and _matches(code, MESSAGE_TYPES)):
        return None
    if _WILD.search(code) or code not in MESSAGE_TYPES:
        what = (
            f"no HL7 v2 message type matches {code}"
            if _WILD.search(code)
            else (f"{code} is no HL7 v2 message type")
        )
        return f"{what} (HL7 table 0076)", "local message types begin with Z"
    allowed = TRIGGERS.get(code)
    if not trigger or allowed is None or _local(trigger) or _matches(trigger, allowed):
        return None
    senders = sorted(t for t, events in TRIGGERS.items() if _matches(trigger, events))
    event = "trigger event" if len(allowed) == 1 else "trigger events"
    hints = [f"{trigger} is sent as {', '.join(f'{s}^{trigger}' for s in senders)}"] * bool(senders)
    hints.append("local trigger events begin with Z")
    but = f"none of which matches {trigger}" if _WILD.search(trigger) else f"not {trigger}"
    return f"HL7 v2 sends {code} only with {event} {_listed(allowed)}, {but}", "; ".join(hints)


def _listed(codes: frozenset[str]) -> str:
    """``O23``; ``R01, R03, W01``; ``A01 to A62 except A19``."""
    ordered = sorted(codes)
    if len(ordered) <= 8:
        return ", ".join(ordered)
    first, last = ordered[0], ordered[-1]
    prefix, width = first[:1], len(first) - 1
    gaps = [
        f"{prefix}{n:0{width}d}"
        for n in range(int(first[1:]), int(last[1:]) + 1)
        if f"{prefix}{n:0{width}d}" not in codes
    ]
    return f"{first} to {last}" + (f" except {', '.join(gaps)}" if gaps else "")
