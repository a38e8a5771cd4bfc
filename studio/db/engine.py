"""The database engine: SQLite in the data directory (the default) or a team's PostgreSQL server (psycopg 3), safe to
share between server threads and, on PostgreSQL, between studios.

A database the studio cannot use stops the start with one line (CannotStart); a write that fails later because of
the machine (disk full, read-only file or server) becomes a StorageUnavailable / DiskFull domain error, mapped once
here."""
from __future__ import annotations

import logging
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic.util import CommandError
from sqlalchemy import event, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction
from sqlalchemy.types import String
from sqlmodel import Session, create_engine

from studio.db.migrate import upgrade
from studio.errors import CannotStart, DiskFull, StorageUnavailable
from studio.storage import disk_full, os_storage_error, unwritable

log = logging.getLogger(__name__)

# SQLite's words for a write the machine refused (sqlite3 gives no error codes before Python 3.11's sqlite_errorcode
# on every build, so the messages are matched: they are fixed strings in SQLite's source).
_FULL = ("database or disk is full",)
_READ_ONLY = ("attempt to write a readonly database", "unable to open database file", "disk i/o error",
              "readonly database")
# PostgreSQL's SQLSTATEs for the same: disk_full; a read-only server (a standby, default_transaction_read_only)
_PG_FULL = {"53100"}
_PG_READ_ONLY = {"25006"}
ICU_COLLATION = "und-x-icu"  # PostgreSQL's root-locale ICU collation: full Unicode case mappings (ß -> SS)


def normalise_url(url: str) -> str:
    """The SQLAlchemy URL of a database URL as a person writes it: postgres:// and postgresql:// go through psycopg 3
    (SQLAlchemy's default PostgreSQL driver is psycopg2, which the studio does not install)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return url


def is_postgresql(engine) -> bool:
    return engine.dialect.name == "postgresql"


def server_name(engine) -> str:
    """The database as a person names it in a message: its file, or database@host:port (never the password)."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return str(Path(url.database or ""))
    return f"database {url.database or '?'} on {url.host or 'localhost'}:{url.port or 5432}"


def database_folder(engine) -> Path:
    """Where a SQLite database's file lives (its disk fills up); for a server, a path naming the server."""
    if engine.url.get_backend_name() == "sqlite":
        return Path(engine.url.database).parent
    return Path(f"postgresql://{engine.url.host or 'localhost'}:{engine.url.port or 5432}/{engine.url.database}")


class casefold(GenericFunction):  # noqa: N801 - a SQL function's name
    """casefold(text): the text with every letter's case folded (É -> é, ß -> ss), chosen per database: a Python
    function registered on each SQLite connection; on PostgreSQL lower(upper(x)) under the ICU root collation, whose
    full case mappings fold ß to ss as Python's str.casefold does."""

    type = String()
    inherit_cache = True


@compiles(casefold, "postgresql")
def _casefold_postgresql(element, compiler, **kw):
    text = compiler.process(element.clauses, **kw)
    if getattr(compiler.dialect, "studio_icu", False):
        return f'lower(upper(({text}) COLLATE "{ICU_COLLATION}"))'
    return f"lower(upper({text}))"  # the database's own locale: every letter it knows, ß stays ß


def _casefold(text: str | None) -> str | None:
    return text.casefold() if isinstance(text, str) else text


def storage_error(exc: BaseException, folder: Path) -> StorageUnavailable | None:
    """The domain error for a write the machine refused (disk full, file-size limit, read-only), else None."""
    if isinstance(exc, DBAPIError):
        exc = exc.orig
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        if any(m in text for m in _FULL):
            return disk_full(folder)
        if any(m in text for m in _READ_ONLY):
            return unwritable(folder, str(exc))
        return None
    sqlstate = getattr(exc, "sqlstate", None)  # psycopg's errors carry the server's SQLSTATE
    if sqlstate in _PG_FULL:
        return disk_full(folder)
    if sqlstate in _PG_READ_ONLY:
        return unwritable(folder, _first_line(exc))
    return os_storage_error(exc, folder)  # the same mapping as every other write of the studio's data


def make_engine(url: str):
    """The engine of a usable, migrated, writable database; anything else is refused with one line."""
    url = normalise_url(url)
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise CannotStart("--database-url is not a database URL: give postgresql://USER:PASS@HOST:PORT/DATABASE "
                          "or sqlite:///PATH.") from None
    if backend == "sqlite":
        engine = _sqlite_engine(url)
    elif backend == "postgresql":
        engine = _postgresql_engine(url)
    else:
        raise CannotStart(f"--database-url names a {backend} database: the studio works with PostgreSQL "
                          "(postgresql://...) or SQLite (sqlite:///...).")
    try:
        _check_usable(engine)
    except Exception:
        engine.dispose()
        raise
    return engine


def _sqlite_engine(url: str):
    # timeout: a writer waits this long for another's transaction (the default 5 s fails writes on a loaded machine)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer of a finishing job
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # with WAL: still consistent after a crash, fewer fsyncs
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
        # SQLite's lower() and LIKE fold ASCII only: History's prompt search folds every letter (É, ß, ...)
        dbapi_conn.create_function("casefold", 1, _casefold, deterministic=True)

    return engine


def _postgresql_engine(url: str):
    # pre-ping: a connection the server closed (restart, idle timeout) is replaced, not handed to a request;
    # connect_timeout: an unreachable server fails the start in seconds, not minutes
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         connect_args={"connect_timeout": 10, "application_name": "text2song-studio"})


def _check_usable(engine) -> None:
    if is_postgresql(engine):
        _check_server(engine)
        return
    path = Path(engine.url.database)
    fix = (f"move {path.name} (and any {path.name}-wal, {path.name}-shm) out of {path.parent} to start with an "
           "empty database, or restore it from a backup")
    try:
        with engine.connect() as conn:
            problems = [row[0] for row in conn.exec_driver_sql("PRAGMA quick_check")]
    except DBAPIError as exc:
        _refuse_unwritable(exc, path)
        raise CannotStart(f"{path} is not a usable studio database ({exc.orig}): {fix}.") from None
    if problems != ["ok"]:
        raise CannotStart(f"{path} is damaged ({problems[0]}): {fix}.")
    try:
        upgrade(engine)  # start-up applies pending migrations
        with engine.begin() as conn:  # a real write: a read-only file or disk is found now, not at the first save
            version = conn.exec_driver_sql("PRAGMA user_version").scalar()
            conn.exec_driver_sql(f"PRAGMA user_version = {int(version)}")
    except CommandError as exc:
        _refuse_migration(exc, str(path), fix)
    except DBAPIError as exc:
        _refuse_unwritable(exc, path)
        raise CannotStart(f"{path} could not be migrated ({exc.orig}): {fix}.") from None


def _check_server(engine) -> None:
    """A PostgreSQL database: reachable with these credentials, migrated, and writable by this user."""
    name = server_name(engine)
    user = engine.url.username or "the current user"
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            engine.dialect.studio_icu = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_collation WHERE collname = %(name)s", {"name": ICU_COLLATION}).scalar() > 0
    except DBAPIError as exc:
        raise CannotStart(f"cannot use the {name} as {user} ({_first_line(exc.orig)}): check the server runs and "
                          "that --database-url names an existing database, its user and password.") from None
    if not engine.dialect.studio_icu:
        log.warning("the PostgreSQL server has no ICU collation: History's search folds letters by the database's "
                    "own locale (ß does not match ss)")
    fix = "check that this user owns the database (or may create tables in it), or give another --database-url"
    try:
        upgrade(engine)
        with engine.begin() as conn:  # a real write of a studio table: a read-only server is found now
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = version_num")
    except CommandError as exc:
        _refuse_migration(exc, f"the {name}", fix, "--database-url")
    except DBAPIError as exc:
        mapped = storage_error(exc, database_folder(engine))
        if isinstance(mapped, DiskFull):
            raise CannotStart(f"the disk of the {name} is full: free space on the server.") from None
        if mapped is not None:
            raise CannotStart(f"the {name} cannot be written ({_first_line(exc.orig)}): use a server that accepts "
                              "writes (not a standby), or give another --database-url.") from None
        raise CannotStart(f"the {name} could not be migrated ({_first_line(exc.orig)}): {fix}.") from None


def _first_line(exc: BaseException) -> str:
    """A driver's message on one line (psycopg adds hints on further lines)."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _refuse_migration(exc: CommandError, what: str, fix: str, other: str = "--data-dir") -> None:
    if "Can't locate revision" in str(exc):
        raise CannotStart(f"{what} was written by a newer version of Text2Song Studio ({exc}): update the "
                          f"studio, or start it with another {other}.") from None
    raise CannotStart(f"{what} could not be migrated ({exc}): {fix}.") from None


def _refuse_unwritable(exc: DBAPIError, path: Path) -> None:
    mapped = storage_error(exc, path.parent)
    if isinstance(mapped, DiskFull):
        raise CannotStart(f"the disk holding {path.parent} is full: free space there, or start with another "
                          "--data-dir.") from None
    if mapped is not None:
        raise CannotStart(f"{path} cannot be written ({exc.orig}): give this user write access to it and to "
                          f"{path.parent}, or start with another --data-dir.") from None


def for_update(session: Session, stmt):
    """`stmt` (a SELECT) made to lock what it reads until the transaction ends, for a read-modify-write that
    another writer (thread or studio) must not interleave. PostgreSQL: SELECT ... FOR UPDATE locks the rows.
    SQLite has no row locks: the transaction takes the database's one write lock first (an UPDATE that changes
    nothing still takes it; it waits up to the busy timeout for another writer), so call this first in the
    session, before its other reads."""
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update()
    session.execute(text("UPDATE alembic_version SET version_num = version_num WHERE 0"))
    return stmt


def insert_if_absent(session: Session, table, values: dict, keys: list[str]) -> bool:
    """INSERT unless a row with the same `keys` (a unique constraint) exists; whether it inserted. One statement:
    two writers at once never both insert (ON CONFLICT DO NOTHING on SQLite and PostgreSQL)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    key = getattr(table, keys[0])
    stmt = insert(table).values(**values).on_conflict_do_nothing(index_elements=keys).returning(key)
    return session.execute(stmt).first() is not None  # (rowcount is not reliable for INSERT with psycopg)


def upsert(session: Session, table, values: dict, keys: list[str], changes: dict) -> None:
    """INSERT, or UPDATE `changes` when a row with the same `keys` (a unique constraint) exists: one statement,
    so two writers at once never both insert (ON CONFLICT on both SQLite and PostgreSQL)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(table).values(**values)
    session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=changes))


@contextmanager
def session_scope(engine) -> Iterator[Session]:
    """A session; a write the machine refuses (disk full, read-only) leaves as a domain error, never a bare 500."""
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    except (DBAPIError, OSError) as exc:
        mapped = storage_error(exc, database_folder(engine))
        if mapped is None:
            raise
        raise mapped from exc
