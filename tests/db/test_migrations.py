"""Alembic migrations: a new database, a first-release database with data, a database at 0002 gaining the
generation settings (0003) and that migration's downgrade, and models that match migrations."""
from __future__ import annotations

import json

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from studio.db.engine import make_engine
from studio.db.migrate import alembic_config
from studio.registry import parse_registry
from studio.services.gen_config import GenerationConfigService
from tests.conftest import registry_dict


def test_new_database_is_created_at_head(engine_url):
    engine = make_engine(engine_url)
    tables = set(inspect(engine).get_table_names())
    assert {"job", "adapter", "account", "alembic_version"} <= tables
    assert _version(engine) == _head()
    engine.dispose()


def test_first_release_database_upgrades_keeping_its_jobs(tmp_path):
    url = f"sqlite:///{tmp_path / 'studio.db'}"
    old = create_engine(url)
    with old.begin() as conn:  # the first release's schema: tables made by create_all, no alembic_version
        command.upgrade(alembic_config(conn), "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO job (prompt, model_id, settings, seed, duration_s, sample_rate, status, "
                          "output_file, created_at) VALUES ('old song', 'studio-tiny', '{}', 7, 2.0, 32000, "
                          "'succeeded', 'outputs/job-000001.wav', '2026-11-01 10:00:00')"))
    old.dispose()

    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT prompt, seed, adapter_id FROM job")).all()
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert rows == [("old song", 7, None)]
    assert "adapter" in inspect(engine).get_table_names()
    assert version == _head()


def test_models_match_the_migrations(engine_url):
    """Every migration from an empty database, then the autogenerate diff (types included) is empty."""
    engine = make_engine(engine_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    engine.dispose()
    assert diff == [], f"the SQLModel tables changed without a migration: {diff}"


def test_the_largest_seed_and_a_5_gb_size_are_stored(engine_url):
    """Seeds reach 2**32 - 1 (a random seed may be any of them): past PostgreSQL's 32-bit integer."""
    engine = make_engine(engine_url)
    big = 2**32 - 1
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job (prompt, model_id, settings, seed, duration_s, sample_rate, status, "
                          "submitted_by, created_at) VALUES ('big', 'm', '{}', :seed, 1, 32000, 'queued', 'local', "
                          "CURRENT_TIMESTAMP)"), {"seed": big})
        assert conn.execute(text("SELECT seed FROM job")).scalar() == big
    engine.dispose()


def _head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


# ---- 0003: generation settings -----------------------------------------------------------------------------------
SETTINGS_TABLES = {"generation_config", "generation_config_change"}


def _version(engine) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_empty_database_gets_the_generation_settings_tables(engine_url):
    engine = make_engine(engine_url)
    inspector = inspect(engine)
    assert SETTINGS_TABLES <= set(inspector.get_table_names())
    columns = {c["name"] for c in inspector.get_columns("generation_config_change")}
    assert {"model_id", "action", "changed_by", "changed_at", "old_values", "new_values"} <= columns
    assert {c["name"] for c in inspector.get_columns("generation_config")} == {
        "model_id", "values", "updated_at", "updated_by"}
    assert _version(engine) == _head()


def test_database_at_0002_keeps_its_job_and_adapter_and_gets_settings_seeded(tmp_path, make_ctx):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    old = create_engine(f"sqlite:///{data_dir / 'studio.db'}")
    with old.begin() as conn:  # the previous release: migrated up to 0002, with an adapter and a job using it
        command.upgrade(alembic_config(conn), "0002")
        conn.execute(text("INSERT INTO adapter (id, name, version, description, base_model, path, source, "
                          "lora_config, size_bytes, active, usage_count, created_at, updated_at) VALUES (1, 'lofi', "
                          "1, '', 'studio-tiny', 'adapters/lofi-v1', 'upload', '{\"r\": 4}', 10, 1, 1, "
                          "'2026-11-01 10:00:00', '2026-11-01 10:00:00')"))
        conn.execute(text("INSERT INTO job (prompt, model_id, settings, seed, duration_s, sample_rate, status, "
                          "output_file, created_at, adapter_id) VALUES ('old song', 'studio-tiny', '{\"top_k\": 50}', "
                          "7, 2.0, 32000, 'succeeded', 'outputs/job-000001.wav', '2026-11-01 10:00:00', 1)"))
    assert not SETTINGS_TABLES & set(inspect(old).get_table_names())
    old.dispose()

    ctx = make_ctx(data_dir=data_dir)  # start-up: migrate, then seed the settings
    assert _version(ctx.engine) == _head()
    with ctx.engine.connect() as conn:
        jobs = conn.execute(text("SELECT prompt, seed, adapter_id, settings FROM job")).all()
        adapters = conn.execute(text("SELECT id, name, version, usage_count FROM adapter")).all()
    assert [tuple(j[:3]) for j in jobs] == [("old song", 7, 1)] and json.loads(jobs[0][3]) == {"top_k": 50}
    assert [tuple(a) for a in adapters] == [(1, "lofi", 1, 1)]
    assert ctx.jobs.get(1).adapter_label == "lofi v1"
    for spec in ctx.registry.models:
        view = ctx.gen_config.get(spec.id)
        assert view.values == spec.generation.model_dump() and view.updated_by == "system"
        history = ctx.gen_config.history(spec.id)
        assert history.total == 1 and history.changes[0].action == "seed"


def test_downgrading_0003_and_upgrading_again(engine_url):
    engine = make_engine(engine_url)
    registry = parse_registry(registry_dict())
    service = GenerationConfigService(engine, registry)
    assert service.seed() == registry.ids()
    service.update("studio-tiny", {"top_k": 100})
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO job (prompt, model_id, settings, seed, duration_s, sample_rate, status, "
                          "created_at) VALUES ('kept', 'studio-tiny', '{}', 3, 1.0, 32000, 'succeeded', "
                          "'2026-11-01 10:00:00')"))

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0002")
    assert not SETTINGS_TABLES & set(inspect(engine).get_table_names())
    assert _version(engine) == "0002"

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert SETTINGS_TABLES <= set(inspect(engine).get_table_names())
    assert _version(engine) == _head()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT prompt FROM job")).scalars().all() == ["kept"]
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
    # the tables came back empty: the settings are seeded again from the registry and work as before
    assert service.seed() == registry.ids()
    assert service.get("studio-tiny").values["top_k"] == 250
    assert service.update("studio-tiny", {"top_k": 100}).values["top_k"] == 100
    engine.dispose()


# ---- a database the studio cannot use: one line naming it, never a password -------------------------------------
def _refusal(url: str) -> str:
    from studio.errors import CannotStart

    with pytest.raises(CannotStart) as info:
        make_engine(url).dispose()
    return info.value.message


def test_an_unusable_postgresql_database_stops_the_start_with_one_line(postgres_server):
    from tests.postgres import PASSWORD, PASSWORD_USER

    port = postgres_server.port
    cases = {  # the URL a person gives -> words the line must hold
        f"postgresql://{PASSWORD_USER}:wrong-{PASSWORD}@127.0.0.1:{port}/postgres": "password authentication failed",
        f"postgres://postgres:{PASSWORD}@127.0.0.1:{port}/no_such_db": 'database "no_such_db" does not exist',
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/studio": "Connection refused",
    }
    for url, words in cases.items():
        message = _refusal(url)
        assert words in message and "127.0.0.1" in message and PASSWORD not in message, message
        assert "\n" not in message and "Traceback" not in message
    assert "mysql" in _refusal("mysql://u:p@127.0.0.1/db") and "not a database URL" in _refusal("no url")


def test_the_password_given_in_the_url_is_used(postgres_server):
    from tests.postgres import PASSWORD, PASSWORD_USER

    url = postgres_server.create_database(migrated=False)
    postgres_server._admin(f"ALTER DATABASE {url.rsplit('/', 1)[1]} OWNER TO {PASSWORD_USER}")
    engine = make_engine(url.replace("postgres@", f"{PASSWORD_USER}:{PASSWORD}@"))
    assert _version(engine) == _head() and engine.url.drivername == "postgresql+psycopg"
    engine.dispose()


def test_a_read_only_postgresql_database_is_refused_at_start(postgres_server):
    url = postgres_server.create_database()
    postgres_server._admin(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET default_transaction_read_only = on")
    message = _refusal(url)
    assert "cannot be written" in message and "read-only transaction" in message, message


def test_a_postgresql_database_of_a_newer_studio_is_refused(postgres_server):
    url = postgres_server.create_database()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    engine.dispose()
    message = _refusal(url)
    assert "was written by a newer version of Text2Song Studio" in message and "--database-url" in message
