"""A throwaway PostgreSQL server for the tests: started once per test process on 127.0.0.1 (a free port, its socket
in its own folder, fsync off), one fresh database per test, removed at the end of the session.

Debian's binaries refuse to run as root: as root, initdb and pg_ctl run as the `postgres` user (runuser). Without
the binaries the PostgreSQL cases skip, unless STUDIO_TEST_POSTGRES=required (CI) makes that a failure."""
from __future__ import annotations

import itertools
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from studio.pg_local import LocalPostgres, find_binaries, give_to_server_user

REQUIRED = os.environ.get("STUDIO_TEST_POSTGRES", "").lower() == "required"
TEMPLATE = "studio_template"  # migrated to head once: a test's database is a copy of it (much faster than migrating)
PASSWORD_USER, PASSWORD = "studio_pw", "s3cret-Pa55"  # the one role that logs in with a password
binaries = find_binaries  # the folder holding initdb and pg_ctl, or None


def unavailable(reason: str):
    """Skip a PostgreSQL case, or fail it where PostgreSQL is required (CI)."""
    if REQUIRED:
        pytest.fail(f"STUDIO_TEST_POSTGRES=required but {reason}", pytrace=False)
    pytest.skip(reason)


class PostgresServer:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="studio-pg-"))  # not pytest's tmp: postgres must enter it
        self.port = _free_port()
        self._names = itertools.count(1)
        self._template_ready = False
        self.server: LocalPostgres | None = None

    def start(self) -> "PostgresServer":
        give_to_server_user(self.root)  # its socket and log are here
        self.server = LocalPostgres(self.root / "data", self.port, self.bindir, socket_dir=self.root,
                                    log=self.root / "log")
        self.server.init(no_sync=True)
        hba = self.root / "data" / "pg_hba.conf"  # PASSWORD_USER alone must give its password (first match wins)
        hba.write_text(f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self.server.start("-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._admin(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")
        return self

    def stop(self) -> None:
        try:
            if self.server is not None:
                self.server.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, migrated: bool = True) -> str:
        """A new database's URL: empty, or (migrated) a copy of one already at the newest schema."""
        name = f"test_{next(self._names)}"
        if migrated and not self._template_ready:
            from studio.db.engine import make_engine

            self._admin(f"CREATE DATABASE {TEMPLATE}")
            make_engine(self.url(TEMPLATE)).dispose()  # migrated; no connection may stay open on a template
            self._template_ready = True
        self._admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {TEMPLATE}" if migrated else ""))
        return self.url(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
