"""Character sets: HL7 table 0211 names (MSH-18) to Python codecs."""

from __future__ import annotations

import codecs

# HL7 table 0211. Values that name a multi-byte 7-bit escape scheme (ISO IR87, ISO IR159)
# map to the ISO-2022 codec that implements it.
_TABLE_0211 = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "iso8859-1",
    "ISO IR100": "iso8859-1",
    "8859/2": "iso8859-2",
    "ISO IR101": "iso8859-2",
    "8859/3": "iso8859-3",
    "ISO IR109": "iso8859-3",
    "8859/4": "iso8859-4",
    "ISO IR110": "iso8859-4",
    "8859/5": "iso8859-5",
    "ISO IR144": "iso8859-5",
    "8859/6": "iso8859-6",
    "ISO IR127": "iso8859-6",
    "8859/7": "iso8859-7",
    "ISO IR126": "iso8859-7",
    "8859/8": "iso8859-8",
    "ISO IR138": "iso8859-8",
    "8859/9": "iso8859-9",
    "ISO IR148": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "ISO IR87": "iso2022-jp",
    "ISO IR159": "iso2022-jp-2",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc-kr",
    "BIG-5": "big5",
    "JAS2020": "shift_jis",
    "JIS X 0202": "iso2022-jp",
}

DEFAULT_CHARSET = "UNICODE UTF-8"
_ASCII_PROBE = "MSH|^~\\&|ACK\r"


def codec_for(name: str) -> str | None:
    """The Python codec for an HL7 character set name, or None when it is not supported.

    Accepts the table 0211 spelling (``8859/1``, ``UNICODE UTF-8``) and, for listener settings,
    a Python codec name (``utf-8``, ``latin-1``, ``cp1252``).

    >>> codec_for("8859/1"), codec_for("unicode utf-8"), codec_for("cp1252"), codec_for("utf-16")
    ('iso8859-1', 'utf-8', 'cp1252', None)
    """
    key = " ".join(name.upper().split())
    if key in _TABLE_0211:
        return _TABLE_0211[key]
    try:
        info = codecs.lookup(name.strip())
    except (LookupError, ValueError):  # ValueError: a NUL byte in the name
        return None
    # rot13, base64 and the like are codecs but not character sets.
    if not getattr(info, "_is_text_encoding", True):
        return None
    # MLLP framing and the HL7 delimiters are ASCII bytes: a codec that writes ASCII text as
    # other bytes (UTF-16, UTF-32, EBCDIC) cannot carry a message, nor its ACK, over MLLP.
    try:
        ascii_safe = _ASCII_PROBE.encode(info.name) == _ASCII_PROBE.encode("ascii")
    except UnicodeError:
        ascii_safe = False
    return info.name if ascii_safe else None


def supported_charsets() -> list[str]:
    """HL7 names this engine decodes, for error messages and docs."""
    return sorted(_TABLE_0211)


def decode_stored(raw: bytes, charset: str | None) -> str:
    """A stored message as text, in the character set it was read with."""
    return raw.decode(codec_for(charset or "") or "utf-8", "replace")
