"""Reading one key press from the terminal (or one line when input is not a terminal)."""

from __future__ import annotations

import sys
from typing import TextIO

try:
    import termios
    import tty
except ImportError:  # Windows: no termios; keys are read as lines
    termios = None  # type: ignore[assignment]


def read_key(stream: TextIO | None = None) -> str:
    """The next key pressed, lower-cased; ``q`` at end of input. Ctrl-C reads as ``q`` too."""
    source = stream or sys.stdin
    if termios is None or not source.isatty():
        line = source.readline()
        return line.strip()[:1].lower() if line else "q"
    descriptor = source.fileno()
    saved = termios.tcgetattr(descriptor)
    try:
        tty.setcbreak(descriptor)
        key = source.read(1)
    except KeyboardInterrupt:
        return "q"
    finally:
        termios.tcsetattr(descriptor, termios.TCSADRAIN, saved)
    if key in ("", "\x03", "\x04"):
        return "q"
    return key.lower()
