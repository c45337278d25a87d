"""MLLP framing without I/O: bytes in, frames and framing faults out.

A frame is ``VT payload FS CR``. Real senders drop the final CR, add LF after it, or put
garbage between frames; the decoder ends a frame at FS, ignores CR/LF between frames, and
resynchronises on the next VT. A payload over the size limit is not buffered: its first
``max_size`` bytes are kept (enough for the header and the record of what was refused) and the
rest is counted and discarded until its FS.
"""

from __future__ import annotations

from dataclasses import dataclass

VT = 0x0B
FS = 0x1C
CR = 0x0D
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\r"
_BETWEEN_FRAMES = b"\r\n\x00"


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete message payload (without VT and FS)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class OversizeFrame:
    """A payload longer than the limit: its first bytes (``OVERSIZE_HEAD`` at most) and its
    full size."""

    head: bytes
    size: int


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that belong to no frame (outside VT…FS, or a frame cut off by a new VT)."""

    size: int
    truncated_frame: bool = False


Event = Frame | OversizeFrame | Garbage

OVERSIZE_HEAD = 64 * 1024
"""Bytes kept of a frame over the limit: enough to read its header and see what it was. The
rest is refused anyway; keeping a megabyte of each would let a sender of huge frames fill the
store and hold the writer that every other sender's commits wait on."""


def encode_frame(payload: bytes) -> bytes:
    """Wrap ``payload`` in an MLLP frame."""
    return START_BLOCK + payload + END_BLOCK


class FrameDecoder:
    """Incremental MLLP decoder; feed it what the socket gives, collect events in order."""

    __slots__ = (
        "_buffer",
        "_discarded",
        "_head",
        "_head_size",
        "_in_frame",
        "_max_size",
        "_searched",
    )

    def __init__(self, max_size: int = 1024 * 1024) -> None:
        self._max_size = max_size
        self._head_size = min(max_size, OVERSIZE_HEAD)
        self._buffer = bytearray()
        self._in_frame = False
        self._searched = 0  # bytes of the current frame already searched for FS/VT
        self._head: bytes | None = None  # set while discarding an oversize frame
        self._discarded = 0

    @property
    def in_frame(self) -> bool:
        """True between a VT and its FS: the peer owes the rest of a message."""
        return self._in_frame

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        """Add received bytes; return the events they complete."""
        buffer = self._buffer
        buffer += data
        events: list[Event] = []
        while buffer:
            if not self._in_frame:
                start = buffer.find(START_BLOCK)
                junk = buffer if start < 0 else buffer[:start]
                if junk.strip(_BETWEEN_FRAMES):
                    events.append(Garbage(len(junk)))
                if start < 0:
                    buffer.clear()
                    break
                del buffer[: start + 1]
                self._in_frame = True
                self._searched = 0
                continue
            end = buffer.find(b"\x1c", self._searched)
            limit = len(buffer) if end < 0 else end
            restart = buffer.find(START_BLOCK, self._searched, limit)
            if restart >= 0:
                # A new frame began before this one ended: the partial one is lost garbage.
                events.append(Garbage(self._discarded + restart + 1, truncated_frame=True))
                self._reset_frame()
                del buffer[:restart]
                continue
            if end < 0:
                self._searched = len(buffer)
                if self._head is None and len(buffer) > self._max_size:
                    self._head = bytes(buffer[: self._head_size])
                if self._head is not None:
                    self._discarded += len(buffer)
                    buffer.clear()
                    self._searched = 0
                break
            if self._head is not None:
                events.append(OversizeFrame(self._head, self._discarded + end))
            elif end > self._max_size:
                events.append(OversizeFrame(bytes(buffer[: self._head_size]), end))
            else:
                events.append(Frame(bytes(buffer[:end])))
            self._reset_frame()
            del buffer[: end + 1]
        return events

    def _reset_frame(self) -> None:
        self._in_frame = False
        self._searched = 0
        self._head = None
        self._discarded = 0
