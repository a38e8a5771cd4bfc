"""Database migrations (Alembic, built from the SQLModel metadata), applied at start-up."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect

MIGRATIONS = Path(__file__).parent / "migrations"
FOUNDATION = "0001"  # the schema of the first release, which had no alembic_version table


def alembic_config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine) -> None:
    """Bring the database to the newest schema; a first-release database is adopted, its data kept."""
    with engine.begin() as conn:
        tables = set(inspect(conn).get_table_names())
        cfg = alembic_config(conn)
        if "job" in tables and "alembic_version" not in tables:
            command.stamp(cfg, FOUNDATION)
        command.upgrade(cfg, "head")
