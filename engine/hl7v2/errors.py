"""HL7 error conditions (table 0357) and the problems the engine reports in ERR segments."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ErrorCode(IntEnum):
    """HL7 table 0357, message error condition codes."""

    SEGMENT_SEQUENCE = 100
    REQUIRED_FIELD_MISSING = 101
    DATA_TYPE = 102
    TABLE_VALUE_NOT_FOUND = 103
    UNSUPPORTED_MESSAGE_TYPE = 200
    UNSUPPORTED_EVENT = 201
    UNSUPPORTED_PROCESSING_ID = 202
    UNSUPPORTED_VERSION = 203
    UNKNOWN_KEY = 204
    DUPLICATE_KEY = 205
    RECORD_LOCKED = 206
    INTERNAL_ERROR = 207

    @property
    def text(self) -> str:
        """The table's display text, e.g. ``Required field missing``."""
        return _TEXTS[self]


_TEXTS = {
    ErrorCode.SEGMENT_SEQUENCE: "Segment sequence error",
    ErrorCode.REQUIRED_FIELD_MISSING: "Required field missing",
    ErrorCode.DATA_TYPE: "Data type error",
    ErrorCode.TABLE_VALUE_NOT_FOUND: "Table value not found",
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    ErrorCode.UNSUPPORTED_EVENT: "Unsupported event code",
    ErrorCode.UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    ErrorCode.UNSUPPORTED_VERSION: "Unsupported version id",
    ErrorCode.UNKNOWN_KEY: "Unknown key identifier",
    ErrorCode.DUPLICATE_KEY: "Duplicate key identifier",
    ErrorCode.RECORD_LOCKED: "Application record locked",
    ErrorCode.INTERNAL_ERROR: "Application internal error",
}


@dataclass(frozen=True, slots=True)
class Location:
    """Where an error is: segment id, its 1-based sequence, and optional field/component."""

    segment: str
    sequence: int = 1
    field: int | None = None
    component: int | None = None

    def __str__(self) -> str:
        text = self.segment if self.sequence == 1 else f"{self.segment}[{self.sequence}]"
        if self.field is not None:
            text += f"-{self.field}"
            if self.component is not None:
                text += f".{self.component}"
        return text


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason to refuse a message: an HL7 error code, where, and a sentence for people."""

    code: ErrorCode
    text: str
    location: Location | None = None
    reject: bool = False
    """True for an application reject (AR/CR), False for an application error (AE/CE)."""

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"{self.code.value} {self.code.text}{where}: {self.text}"
