"""Alembic migrations: a new database, a first-release database with data, and models that match migrations."""
from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlmodel import SQLModel

from studio.db.engine import make_engine
from studio.db.migrate import alembic_config


def test_new_database_is_created_at_head(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'studio.db'}")
    tables = set(inspect(engine).get_table_names())
    assert {"job", "adapter", "alembic_version"} <= tables


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


def test_models_match_the_migrations(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'studio.db'}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"the SQLModel tables changed without a migration: {diff}"


def _head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
