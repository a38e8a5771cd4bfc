"""The database engine: SQLite in the data directory, safe to share between server threads.

A database the studio cannot use stops the start with one line (CannotStart); a write that fails later because of
the machine (disk full, read-only file) becomes a StorageUnavailable / DiskFull domain error, mapped once here."""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, create_engine

from studio.db.migrate import upgrade
from studio.errors import CannotStart, DiskFull, StorageUnavailable
from studio.storage import disk_full, os_storage_error, unwritable

# SQLite's words for a write the machine refused (sqlite3 gives no error codes before Python 3.11's sqlite_errorcode
# on every build, so the messages are matched: they are fixed strings in SQLite's source).
_FULL = ("database or disk is full",)
_READ_ONLY = ("attempt to write a readonly database", "unable to open database file", "disk i/o error",
              "readonly database")


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
    return os_storage_error(exc, folder)  # the same mapping as every other write of the studio's data


def database_folder(engine) -> Path:
    return Path(engine.url.database).parent


def _casefold(text: str | None) -> str | None:
    return text.casefold() if isinstance(text, str) else text


def make_engine(url: str):
    """The engine of a usable, migrated, writable database; anything else is refused with one line."""
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

    try:
        _check_usable(engine)
    except Exception:
        engine.dispose()
        raise
    return engine


def _check_usable(engine) -> None:
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
        if "Can't locate revision" in str(exc):
            raise CannotStart(f"{path} was written by a newer version of Text2Song Studio ({exc}): update the "
                              "studio, or start it with another --data-dir.") from None
        raise CannotStart(f"{path} could not be migrated ({exc}): {fix}.") from None
    except DBAPIError as exc:
        _refuse_unwritable(exc, path)
        raise CannotStart(f"{path} could not be migrated ({exc.orig}): {fix}.") from None


def _refuse_unwritable(exc: DBAPIError, path: Path) -> None:
    mapped = storage_error(exc, path.parent)
    if isinstance(mapped, DiskFull):
        raise CannotStart(f"the disk holding {path.parent} is full: free space there, or start with another "
                          "--data-dir.") from None
    if mapped is not None:
        raise CannotStart(f"{path} cannot be written ({exc.orig}): give this user write access to it and to "
                          f"{path.parent}, or start with another --data-dir.") from None


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
