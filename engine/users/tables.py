"""The console's user accounts: one row per person who may log in."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from engine.store.crypto import EncryptedText
from engine.store.schema import Base, Id, UTCDateTime


class ConsoleUser(Base):
    """A person who logs in to the web console, with a role and, optionally, a TOTP secret."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    """argon2id, in the PHC string form argon2-cffi writes (parameters and salt included)."""
    totp_secret: Mapped[str] = mapped_column(EncryptedText("totp_secret"), default="")
    """Base32 TOTP secret once enrolled ('' until then); encrypted with content encryption on."""
    totp_last_step: Mapped[int] = mapped_column(Integer, default=0)
    """The last 30-second step a code was accepted for: a code is never accepted twice."""
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    """Wrong passwords or codes in a row since the last good login."""
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (UniqueConstraint("name", name="uq_console_users_name"),)


class ConsoleKey(Base):
    """A secret of the console's kept in the store: the key that signs its session cookies."""

    __tablename__ = "console_keys"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(EncryptedText("console_keys.value"))
    """URL-safe base64; encrypted with content encryption on."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
