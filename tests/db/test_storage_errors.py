"""A write the machine refuses (disk full or file-size limit, read-only database) is a domain error with a clear
message and a 507 / 503 status, never a bare 500; nothing half-written is left behind."""
from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event

from studio.api.errors import install_error_handlers
from studio.api.gen_config import build_gen_config_router
from studio.errors import DiskFull, StorageUnavailable

# SQLite's own refusals, caused for real on the studio's connections: a page budget reached gives the exact error a
# full disk or RLIMIT_FSIZE gives ("database or disk is full"); query_only gives the read-only file's error.
FAILURES = {
    "disk full": ("PRAGMA max_page_count = {pages}", DiskFull, 507, "disk_full",
                  "The disk holding the studio's data is full: free space in {folder}."),
    "read-only database": ("PRAGMA query_only = ON", StorageUnavailable, 503, "storage_unavailable",
                           "The studio cannot write its data in {folder} (attempt to write a readonly database)"),
}


@pytest.fixture
def failing(make_ctx):
    """A studio whose database connections refuse writes the way the named failure does."""
    ctx = make_ctx()
    listeners = []

    def fail(name: str):
        pragma = FAILURES[name][0]
        with ctx.engine.connect() as conn:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()

        def on_connect(dbapi_conn, _record):
            dbapi_conn.execute(pragma.format(pages=pages))

        event.listen(ctx.engine, "connect", on_connect)
        listeners.append(on_connect)
        ctx.engine.dispose()  # every connection from now on is a failing one
        return ctx

    yield fail
    for listener in listeners:
        event.remove(ctx.engine, "connect", listener)
    ctx.engine.dispose()


def _history_size(ctx) -> int:
    return ctx.gen_config.history("studio-tiny").total


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_a_refused_write_is_a_domain_error_naming_the_folder(failing, name):
    _pragma, error, _status, code, message = FAILURES[name]
    ctx = failing(name)
    before = _history_size(ctx)
    with pytest.raises(error) as info:
        # a change bigger than a page, so that a full disk is reached within this write
        ctx.gen_config.update("studio-tiny", {"top_k": 17}, by="x" * 8000)
    folder = ctx.settings.database_path.parent
    assert info.value.code == code and info.value.message.startswith(message.format(folder=folder))
    assert ctx.gen_config.get("studio-tiny").values["top_k"] == 250 and _history_size(ctx) == before


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_the_api_answers_507_or_503_with_the_message(failing, name):
    _pragma, _error, status, code, message = FAILURES[name]
    ctx = failing(name)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_gen_config_router(ctx))
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(500):  # each reset records a line of history: the database grows until no page is left
            r = client.post("/api/models/studio-tiny/config/reset")
            if r.status_code != 200:
                break
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail["code"] == code and detail["message"].startswith(
        message.format(folder=ctx.settings.database_path.parent))


# ---- PostgreSQL: the server's refusals (SQLSTATE), mapped like SQLite's -----------------------------------------
def test_a_read_only_postgresql_server_is_a_503_naming_the_server(make_ctx, postgres_server):
    url = postgres_server.create_database()
    ctx = make_ctx(database_url=url)
    postgres_server._admin(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET default_transaction_read_only = on")
    ctx.engine.dispose()  # new connections read the setting
    with pytest.raises(StorageUnavailable) as info:
        ctx.gen_config.update("studio-tiny", {"top_k": 17})
    assert info.value.code == "storage_unavailable" and f"127.0.0.1:{postgres_server.port}" in info.value.message
    assert "read-only transaction" in info.value.message
    assert ctx.gen_config.get("studio-tiny").values["top_k"] == 250


def test_a_full_disk_on_the_server_is_disk_full():
    import psycopg.errors
    from sqlalchemy.exc import OperationalError

    from studio.db.engine import storage_error

    error = OperationalError("INSERT ...", {}, psycopg.errors.DiskFull("could not extend file: No space left"))
    mapped = storage_error(error, Path("postgresql://db.example:5432/studio"))
    assert isinstance(mapped, DiskFull) and mapped.status == 507 and "db.example:5432" in mapped.message
