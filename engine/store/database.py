"""Opening the store: database URLs, SQLite durability settings, and schema migrations."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from engine.errors import CrosswalkError
from engine.settings.source import interpolate
from engine.store.migrations import HEAD

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///crosswalk.db"
ENV_VAR = "CROSSWALK_DB"
IMMEDIATE = "crosswalk_sqlite_immediate"
"""Execution option: begin this SQLite transaction with BEGIN IMMEDIATE (take the write lock)."""
CONNECT_TIMEOUT = 5
"""Seconds to reach a server database (libpq's ``connect_timeout``; at least 2)."""
BUSY_TIMEOUT = 10.0
"""Seconds an SQLite connection waits for another's write lock before "database is locked"."""
BULK_CACHE_KIB = 256 * 1024
"""SQLite page cache of bulk loads (the default 2 MiB makes index inserts read the disk)."""


class StoreError(CrosswalkError, RuntimeError):
    """The store cannot be opened or migrated; the text says what to do."""


def resolve_url(url: str | None = None) -> str:
    """The database URL from ``--db``, else ``$CROSSWALK_DB``, else ``./crosswalk.db``.

    A bare path is taken as an SQLite file.

    >>> resolve_url("data/x.db"), resolve_url("postgres://crosswalk@db/crosswalk")
    ('sqlite:///data/x.db', 'postgresql+psycopg://crosswalk@db/crosswalk')
    """
    chosen = url or os.environ.get(ENV_VAR) or DEFAULT_URL
    if "${" in chosen:  # a password from the environment or a file: ${DB_PASSWORD}, ${file:…}
        chosen, missing = interpolate(chosen)
        if missing:
            raise StoreError(
                "the database URL names what cannot be read: "
                + ", ".join(m if m.startswith("file:") else f"${{{m}}}" for m in missing)
            )
    if "://" not in chosen:
        chosen = f"sqlite:///{chosen}"
    scheme, rest = chosen.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        # The common spellings (libpq's, Heroku's): psycopg 3 is the driver Crosswalk ships.
        chosen = f"postgresql+psycopg://{rest}"
    try:
        make_url(chosen)
    except (ArgumentError, ValueError):
        # Not the URL, nor SQLAlchemy's words about it: either can quote its password.
        raise StoreError(
            "the database URL cannot be read as scheme://user@host:port/database; several"
            " servers are listed as ?host=a:5432&host=b:5432 (docs/operations.md)"
        ) from None
    return chosen


def redact(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)


def open_engine(url: str, **kwargs: Any) -> Engine:
    """A SQLAlchemy engine with durable commits: WAL + synchronous=FULL on SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            folder = Path(database).expanduser().resolve().parent
            if not folder.is_dir():
                raise StoreError(f"the folder for the SQLite store does not exist: {folder}")
        # The engine reads the store from worker threads too; each uses its own pooled connection.
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # A server that does not answer must not hold a connection attempt (and the engine's
    # writer, and so every ACK) for ever: libpq gives up after this many seconds.
    if "connect_timeout" not in parsed.query:
        kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", CONNECT_TIMEOUT)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event issue BEGIN, instead of pysqlite's implicit one, so a
        # transaction covers its reads too.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Only a new, empty file takes it (and only before WAL is set): pruning then hands the
        # pages it frees back to the file system. An older store keeps its mode until
        # `crosswalk prune --compact` rebuilds it.
        cursor.execute("PRAGMA page_count")
        if cursor.fetchone()[0] == 0:  # (setting it on a read-only store is refused)
            cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(IMMEDIATE)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def for_writing(engine: Engine) -> Engine:
    """The engine, with SQLite transactions that take the write lock up front.

    In WAL mode a transaction that reads first and writes later fails at once ("database is
    locked") if another connection committed in between; BEGIN IMMEDIATE waits its turn.
    """
    return engine.execution_options(**{IMMEDIATE: True})


@contextmanager
def raw_transaction(engine: Engine, *, bulk: bool = False) -> Iterator[Any]:
    """A DBAPI cursor in a write transaction of its own, committed on success.

    On SQLite the transaction takes the write lock up front (BEGIN IMMEDIATE), like the
    engine's writer, so it waits its turn instead of failing when the engine is running.
    ``bulk`` gives SQLite a page cache big enough for loads of millions of rows into indexes.
    """
    connection = engine.raw_connection()
    cursor = connection.cursor()
    sqlite = engine.dialect.name == "sqlite"
    try:
        if sqlite:
            if bulk:
                cursor.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
            cursor.execute("BEGIN IMMEDIATE")
        yield cursor
        if sqlite:
            cursor.execute("COMMIT")
        else:
            connection.commit()
    except BaseException:
        with suppress(Exception):
            cursor.close()
        with suppress(Exception):
            connection.rollback()
        raise
    finally:
        with suppress(Exception):
            cursor.close()
        connection.close()


def alembic_config(url: str) -> Config:
    """Alembic configuration for the migrations shipped in the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "engine.store:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe when several engines start at once."""
    # Every part's tables in the metadata (what alembic's environment loads), whether or not
    # the store needs a migration: key rotation walks them.
    from engine.store.migrations import every_table  # noqa: F401

    if _revision(engine) == HEAD:
        return  # the usual case; alembic and its scripts cost a command ~0.3 s to load
    from alembic import command

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with for_writing(engine).begin() as connection:
        if engine.dialect.name == "postgresql":
            # Engines sharing one database take turns; the lock ends with the transaction.
            connection.execute(text("SELECT pg_advisory_xact_lock(72616279)"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _revision(engine: Engine) -> str | None:
    """The store's schema revision; None for a new store (or a table that cannot be read: the
    migration then says why)."""
    with engine.connect() as connection:  # a store that cannot be reached says so here
        try:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        except Exception:
            return None
    return versions[0][0] if len(versions) == 1 else None


def check_writable(engine: Engine) -> None:
    """Refuse a store the engine could open but not write (``StoreError`` naming the file and
    the cause): otherwise it would start, then answer AE to every message."""
    try:
        with for_writing(engine).connect() as connection:
            transaction = connection.begin()
            connection.execute(text("UPDATE alembic_version SET version_num = version_num"))
            transaction.rollback()
    except Exception as error:
        raise StoreError(_why_not_writable(engine, error)) from None


LOW_SPACE = 16 * 1024 * 1024
"""Free bytes under which the disk of an SQLite store is reported as nearly full."""


def _sqlite_path(engine: Engine) -> Path | None:
    """The file of an SQLite store (None for a server database or an in-memory one)."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    name = url.database or ""
    if name.startswith("file:"):  # a URI filename: file:PATH?mode=…
        name = name[len("file:") :].split("?", 1)[0]
    return Path(name).expanduser().resolve()


def hold_as_only_engine(engine: Engine) -> IO[str] | None:
    """Take an SQLite store for this engine alone: an exclusive lock on ``FILE-engine.lock``,
    held while the returned file stays open (None for a server database, which engines share).

    Raises ``StoreError`` naming the engine that holds it: two engines on one SQLite file would
    both send every queue.
    """
    path = _sqlite_path(engine)
    if path is None:
        return None
    handle = path.with_name(path.name + "-engine.lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StoreError(
            f"the SQLite store {path} is in use by another engine ({holder}): an SQLite store"
            " serves one engine. Stop that one first, or run several engines on PostgreSQL"
            " (docs/operations.md)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def space_problem(engine: Engine) -> str | None:
    """For an SQLite store whose disk has under LOW_SPACE free, what that means; else None."""
    path = _sqlite_path(engine)
    if path is None:
        return None
    free = shutil.disk_usage(path.parent).free
    if free >= LOW_SPACE:
        return None
    return (
        f"the disk holding the store {path} has {free // 1024:,} KiB free: once it is full,"
        " every message is answered AE (not stored) until space is freed"
    )


def _why_not_writable(engine: Engine, error: Exception) -> str:
    url = engine.url
    where = redact(url.render_as_string(hide_password=False))
    reason = describe_failure(error)
    path = _sqlite_path(engine)
    if path is not None:
        folder = path.parent
        user = _user()
        if path.exists() and not os.access(path, os.W_OK):
            return (
                f"the store {path} cannot be written: the file is read-only for {user}"
                f" (chmod u+w, or run as its owner)"
            )
        if not os.access(folder, os.W_OK):
            return (
                f"the store {path} cannot be written: {user} may not write in {folder}"
                " (SQLite keeps its -wal and -shm files beside the database)"
            )
        return f"the store {path} cannot be written: {reason}"
    return f"the store {where} cannot be written: {reason}"


def describe_failure(error: BaseException) -> str:
    """A database error in one line, without the statement or its parameters (which can hold
    patient data): its kind and the driver's first line, minus any DETAIL."""
    orig = getattr(error, "orig", None) or error
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__


def _user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:
        return f"uid {os.getuid()}"


def open_store(url: str | None = None, *, upgrade: bool = True, **kwargs: Any) -> Engine:
    """Resolve the URL, open the engine and (by default) migrate the schema."""
    resolved = resolve_url(url)
    engine = open_engine(resolved, **kwargs)
    if upgrade:
        try:
            migrate(engine)
        except Exception as error:
            engine.dispose()
            raise StoreError(_why_not_prepared(resolved, error)) from error
    return engine


_NOT_A_DATABASE = ("file is not a database", "database disk image is malformed")


def _why_not_prepared(url: str, error: Exception) -> str:
    """Why the store cannot be opened, and what to do about it, in one message."""
    where = redact(url)
    if any(text in str(error) for text in _NOT_A_DATABASE):
        return (
            f"the store at {where} is not a readable SQLite database (corrupted, or not a"
            " Crosswalk store): restore it from a backup, or move it aside to start with an empty"
            " store; `sqlite3 FILE .recover` salvages what can be read (docs/operations.md)"
        )
    if "Can't locate revision" in str(error):
        return (
            f"the store at {where} is at a newer migration than this Crosswalk knows ({error}; the"
            f" newest here is {HEAD!r}): a newer Crosswalk wrote it. Run that version, or restore"
            " a backup taken before the upgrade; Crosswalk never downgrades a store"
        )
    return f"cannot prepare the store at {where}: {describe_failure(error)}"
