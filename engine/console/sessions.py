"""Sessions in a signed cookie, with idle and absolute timeouts and a CSRF token; login
throttling per address.

The cookie holds the user's id, how far the login got (password given, second factor given),
when it began and was last used, and the CSRF token; it is signed (itsdangerous, HMAC-SHA256)
with the key kept in the store (``engine.users.keys``), so sessions outlive a restart of the
console. Each request checks the account again, so disabling a user ends their sessions at
once.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

COOKIE = "crosswalk_session"


class Stage:
    """How far a session's login got."""

    PASSWORD = "password"
    """The password was right; a second factor is still to be given (or enrolled)."""
    FULL = "full"


@dataclass(frozen=True, slots=True)
class Session:
    user_id: int
    name: str
    stage: str
    login_at: float
    seen_at: float
    csrf: str
    enrolling: str = ""
    """The TOTP secret shown for enrolment until a code of it is given."""


class Sessions:
    """Signs and reads sessions; ``idle`` and ``lifetime`` are in seconds."""

    def __init__(self, idle: float, lifetime: float, *, secure: bool, key: bytes | None = None):
        self.idle = idle
        self.lifetime = lifetime
        self.secure = secure
        self.key = key or secrets.token_bytes(32)
        """Signs the cookies (and, with another salt, a single sign-on's pending state)."""
        self._signer = URLSafeSerializer(self.key, salt="console-session")

    def new(self, user_id: int, name: str, stage: str) -> Session:
        now = time.time()
        return Session(user_id, name, stage, now, now, secrets.token_urlsafe(32))

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie, if its signature holds and it has not timed out."""
        if not cookie:
            return None
        try:
            values: dict[str, Any] = self._signer.loads(cookie)
            session = Session(**values)
        except (BadSignature, TypeError):
            return None
        now = time.time()
        if now - session.seen_at > self.idle or now - session.login_at > self.lifetime:
            return None
        return session

    def touched(self, session: Session) -> Session:
        return replace(session, seen_at=time.time())

    def cookie(self, session: Session) -> str:
        return self._signer.dumps(asdict(session))

    def cookie_options(self) -> dict[str, Any]:
        """For ``response.set_cookie``: HttpOnly, SameSite=Strict, Secure under TLS; no
        Max-Age, so it ends with the browser too."""
        return {"httponly": True, "samesite": "strict", "secure": self.secure, "path": "/"}


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and secrets.compare_digest(session.csrf, given or "")


class Throttle:
    """At most ``limit`` login attempts per ``window`` seconds from one address."""

    def __init__(self, limit: int = 10, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._seen: dict[str, deque[float]] = {}

    def allow(self, address: str) -> bool:
        now = time.monotonic()
        seen = self._seen.setdefault(address, deque())
        while seen and now - seen[0] > self.window:
            seen.popleft()
        if len(seen) >= self.limit:
            return False
        seen.append(now)
        if len(self._seen) > 10_000:  # forget quiet addresses so memory stays bounded
            self._seen = {a: d for a, d in self._seen.items() if d and now - d[-1] < self.window}
        return True
