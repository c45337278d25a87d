"""HL7 v2 itself, without the network: the MSH header read from bytes (``header``), the checks
a message passes before it is accepted (``check``), the message model that splits on demand and
escapes every write (``message``), field paths (``fieldpath``), escaping, character sets, the
ACK builder and reader (``ack``), HL7's error codes (``errors``) and the message types and
trigger events HL7 defines (``events``).
"""

__all__ = [
    "ack",
    "charset",
    "check",
    "diff",
    "errors",
    "escaping",
    "events",
    "fieldpath",
    "header",
    "message",
    "message_file",
    "paths",
]
