"""The database engine: SQLite in the data directory, safe to share between server threads."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import event
from sqlmodel import Session, create_engine

from studio.db.migrate import upgrade


def make_engine(url: str):
    engine = create_engine(url, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer of a finishing job
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # with WAL: still consistent after a crash, fewer fsyncs
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    upgrade(engine)  # start-up applies pending migrations
    return engine


@contextmanager
def session_scope(engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session
