"""Accounts: add, change, disable and list users; check a login (password, then TOTP code)
with throttling and lockout. Passwords are argon2id hashes; codes are RFC 6238 TOTP."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, insert, select, update

from engine.errors import CrosswalkError
from engine.store.database import for_writing
from engine.store.schema import table_of
from engine.users.tables import ConsoleUser

_users = table_of(ConsoleUser)
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """A hash verified when the name is unknown, so that a wrong name takes as long as a wrong
    password and timing does not tell which names exist. Made on first use: hashing costs
    ~0.1 s, which every command and engine start paid when it was made on import."""
    return _hasher.hash("not a password anyone has")


def prepare_logins() -> None:
    """Make, at a console's start, what a login with an unknown name verifies: the first such
    login then takes as long as any other."""
    _dummy_hash()


MIN_PASSWORD = 12
"""Characters a password must have at least."""
TOTP_ISSUER = "Crosswalk"


class Role:
    """What a user may do; each role may do what the ones before it may, except as noted."""

    VIEWER = "viewer"
    """Dashboard and queues: no PHI."""
    ANALYST = "analyst"
    """Messages (PHI), routes test, resend, queue controls."""
    REVIEWER = "reviewer"
    """The review worklist and MPI look-up (PHI)."""
    ADMIN = "admin"
    """Everything, and users."""

    ALL = (VIEWER, ANALYST, REVIEWER, ADMIN)
    SECOND_FACTOR = (REVIEWER, ADMIN)
    """Roles that must have a second factor when the console requires one."""


class AccountError(CrosswalkError):
    """A change to accounts that cannot be made, in words."""


@dataclass(frozen=True, slots=True)
class Account:
    """A user as the console and ``users list`` see it (never the hash or secret)."""

    id: int
    name: str
    role: str
    disabled: bool
    enrolled: bool
    """A TOTP second factor is set."""
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime
    single_sign_on: bool = False
    """Signs on through the OpenID Connect provider (no password; its second factor)."""

    @property
    def second_factor(self) -> str:
        """In words, for lists: ``single sign-on``, ``enrolled`` or ``-``."""
        return "single sign-on" if self.single_sign_on else "enrolled" if self.enrolled else "-"


def _account(row: Any) -> Account:
    return Account(
        row.id,
        row.name,
        row.role,
        bool(row.disabled),
        bool(row.totp_secret),
        row.locked_until,
        row.last_login_at,
        row.created_at,
        row.password_hash.startswith(SSO),
    )


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100 or not all(c.isalnum() or c in "._-@" for c in name):
        raise AccountError("a user name is 1 to 100 letters, digits and . _ - @ (no spaces)")
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")


def check_role(role: str) -> str:
    if role not in Role.ALL:
        raise AccountError(f"role {role!r} is not one of {', '.join(Role.ALL)}")
    return role


def add_user(store: Engine, name: str, role: str, password: str) -> Account:
    """A new enabled account (``AccountError`` if the name is taken or a value is bad)."""
    name, role = check_name(name), check_role(role)
    check_password(password)
    with for_writing(store).begin() as connection:
        if connection.execute(select(_users.c.id).where(_users.c.name == name)).first():
            raise AccountError(f"there is already a user {name!r}")
        connection.execute(insert(_users).values(_new_row(name, role, _hasher.hash(password))))
    found = find(store, name)
    assert found is not None
    return found


def _new_row(name: str, role: str, password_hash: str) -> dict[str, object]:
    now = datetime.now(UTC)
    return {
        "name": name,
        "role": role,
        "password_hash": password_hash,
        "totp_secret": "",
        "totp_last_step": 0,
        "disabled": False,
        "failed_logins": 0,
        "created_at": now,
        "updated_at": now,
    }


def _change(store: Engine, name: str, **values: object) -> None:
    values["updated_at"] = datetime.now(UTC)
    with for_writing(store).begin() as connection:
        done = connection.execute(update(_users).where(_users.c.name == name).values(values))
        if done.rowcount == 0:
            raise AccountError(f"there is no user {name!r}")


def set_password(store: Engine, name: str, password: str) -> None:
    """A new password; it also unlocks the account and re-enables it."""
    check_password(password)
    _change(
        store,
        name,
        password_hash=_hasher.hash(password),
        failed_logins=0,
        locked_until=None,
        disabled=False,
    )


def set_role(store: Engine, name: str, role: str) -> None:
    _change(store, name, role=check_role(role))


def disable(store: Engine, name: str) -> None:
    """No more logins for ``name``; its open sessions end at their next request."""
    _change(store, name, disabled=True)


def reset_second_factor(store: Engine, name: str) -> None:
    """Forget the TOTP secret: the user enrols again at the next login."""
    _change(store, name, totp_secret="", totp_last_step=0)


def find(store: Engine, name: str) -> Account | None:
    with store.connect() as connection:
        row = connection.execute(select(_users).where(_users.c.name == name)).first()
    return _account(row) if row is not None else None


def accounts(store: Engine) -> list[Account]:
    with store.connect() as connection:
        return [_account(r) for r in connection.execute(select(_users).order_by(_users.c.name))]


class LoginRefused(CrosswalkError):
    """The login is refused; ``reason`` is for the audit trail, the person sees one message."""

    def __init__(self, reason: str) -> None:
        super().__init__("wrong user name, password or code, or the account is locked")
        self.reason = reason


def _refuse(store: Engine, name: str, failed: int, limit: int, period: float, why: str) -> None:
    """Count a failure; at ``limit`` in a row, lock the account for ``period`` seconds."""
    now = datetime.now(UTC)
    values: dict[str, object] = {"failed_logins": failed + 1, "updated_at": now}
    if failed + 1 >= limit:
        values |= {"failed_logins": 0, "locked_until": now + timedelta(seconds=period)}
        why += "; account locked"
    with for_writing(store).begin() as connection:
        connection.execute(update(_users).where(_users.c.name == name).values(values))
    raise LoginRefused(why)


def check_password_login(
    store: Engine, name: str, password: str, *, attempts: int, period: float
) -> Account:
    """The account whose password this is (``LoginRefused`` otherwise: unknown, disabled,
    locked or wrong; a wrong one counts toward the lockout)."""
    with store.connect() as connection:
        row = connection.execute(select(_users).where(_users.c.name == name)).first()
    if row is None:
        _verify(_dummy_hash(), password)
        raise LoginRefused("unknown user")
    now = datetime.now(UTC)
    if row.locked_until is not None and row.locked_until > now:
        _verify(_dummy_hash(), password)
        raise LoginRefused("account locked")
    if not _verify(row.password_hash, password):
        _refuse(store, name, row.failed_logins, attempts, period, "wrong password")
    if row.disabled:
        raise LoginRefused("account disabled")
    return _account(row)


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_code(
    store: Engine, name: str, code: str, *, attempts: int, period: float, secret: str = ""
) -> None:
    """Accept a TOTP code of ``name`` (of ``secret`` while enrolling, then stored), at most
    once per 30-second step; ``LoginRefused`` for a wrong or replayed code."""
    with store.connect() as connection:
        row = connection.execute(select(_users).where(_users.c.name == name)).first()
    if row is None:
        raise LoginRefused("unknown user")
    now = datetime.now(UTC)
    if row.locked_until is not None and row.locked_until > now:
        raise LoginRefused("account locked")
    key = secret or row.totp_secret
    totp = pyotp.TOTP(key)
    step = _matching_step(totp, code.strip(), now)
    if step is None or step <= row.totp_last_step:
        _refuse(store, name, row.failed_logins, attempts, period, "wrong code")
    values: dict[str, object] = {"totp_last_step": step, "failed_logins": 0}
    if secret:
        values["totp_secret"] = secret
    _change(store, name, **values)


def _matching_step(totp: pyotp.TOTP, code: str, now: datetime) -> int | None:
    """The step (one before, now, one after: clocks drift) whose code ``code`` is."""
    if not (code.isdigit() and len(code) == totp.digits):
        return None
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        if pyotp.utils.strings_equal(totp.generate_otp(step), code):
            return step
    return None


SSO = "sso:"
"""How the password hash of an account made by single sign-on starts: it has no password."""


def single_sign_on(store: Engine, name: str, role: str, issuer: str) -> Account:
    """The account of ``name`` signed on by ``issuer``: made at their first login, its role set
    from the provider's at each one. ``LoginRefused`` when a local account (one with a
    password) has that name, or the account is disabled."""
    name, role = check_name(name), check_role(role)
    now = datetime.now(UTC)
    with for_writing(store).begin() as connection:
        row = connection.execute(select(_users).where(_users.c.name == name)).first()
        if row is not None and not row.password_hash.startswith(SSO):
            raise LoginRefused("a local account has this name")
        if row is not None and row.disabled:
            raise LoginRefused("account disabled")
        if row is None:
            connection.execute(insert(_users).values(_new_row(name, role, SSO + issuer)))
        elif row.role != role:
            connection.execute(
                update(_users).where(_users.c.name == name).values(role=role, updated_at=now)
            )
    found = find(store, name)
    assert found is not None
    return found


def logged_in(store: Engine, name: str) -> None:
    """A full login happened: clear the failures, note when."""
    now = datetime.now(UTC)
    _change(store, name, failed_logins=0, locked_until=None, last_login_at=now)


def new_secret() -> str:
    return pyotp.random_base32()


def enrolment_uri(name: str, secret: str) -> str:
    """The ``otpauth://`` address an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=TOTP_ISSUER)


def active_account(store: Engine, user_id: int) -> Account | None:
    """The account of a session, if it still may be used (exists, enabled, not locked)."""
    with store.connect() as connection:
        row = connection.execute(select(_users).where(_users.c.id == user_id)).first()
    if row is None or row.disabled:
        return None
    if row.locked_until is not None and row.locked_until > datetime.now(UTC):
        return None
    return _account(row)
