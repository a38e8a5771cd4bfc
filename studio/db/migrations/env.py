"""Alembic environment: migrations run on the studio's own connection (see studio/db/migrate.py)."""
from alembic import context
from sqlmodel import SQLModel

from studio.db import models  # noqa: F401 - registers the tables

target_metadata = SQLModel.metadata


def run_migrations() -> None:
    connection = context.config.attributes["connection"]
    # render_as_batch: SQLite alters tables by copying them, which batch mode does for us.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
