"""Every stored timestamp is read back as an aware UTC datetime: rows written by this version, by an earlier one
(naive text), and moments given in another zone."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session

from studio.db.engine import make_engine
from studio.db.models import Job


@pytest.fixture
def engine(engine_url):
    e = make_engine(engine_url)
    yield e
    e.dispose()


PARIS_NOON = datetime(2026, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize("given,expected", [
    (PARIS_NOON, datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)),
    (datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc), datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)),
    (datetime(2026, 6, 1, 10, 0), datetime(2026, 6, 1, 10, 0, tzinfo=timezone.utc)),  # naive: UTC by convention
])
def test_moments_come_back_in_utc(engine, given, expected):
    with Session(engine) as s:
        job = Job(prompt="p", model_id="m", seed=1, duration_s=1.0, sample_rate=32000, created_at=given,
                  finished_at=given)
        s.add(job)
        s.commit()
        job_id = job.id
    with Session(engine) as s:
        job = s.get(Job, job_id)
    assert job.created_at == expected and job.created_at.tzinfo is not None
    assert job.finished_at.utcoffset() == timedelta(0)


def test_rows_written_by_an_earlier_version_read_as_utc(engine):
    if engine.dialect.name != "sqlite":
        pytest.skip("only SQLite databases were written by earlier versions")
    with engine.begin() as conn:  # what the first release stored: naive text, UTC by convention
        conn.exec_driver_sql("INSERT INTO job (prompt, model_id, settings, seed, duration_s, sample_rate, status, "
                             "created_at) VALUES ('old', 'm', '{}', 1, 1.0, 32000, 'succeeded', "
                             "'2026-11-01 10:00:00.000000')")
    with Session(engine) as s:
        job = s.get(Job, 1)
    assert job.created_at == datetime(2026, 11, 1, 10, 0, tzinfo=timezone.utc)


def test_every_timestamp_column_of_every_table_is_utc():
    """A new table or column with a plain DateTime would hand back zone-less moments again."""
    from sqlalchemy import DateTime
    from sqlmodel import SQLModel

    from studio.db.types import UTCDateTime

    found = {f"{t.name}.{c.name}": type(c.type).__name__ for t in SQLModel.metadata.tables.values() for c in t.c
             if isinstance(c.type, (DateTime, UTCDateTime))}
    assert {"job.created_at", "job.finished_at", "adapter.deleted_at", "generation_config.updated_at",
            "generation_config_change.changed_at"} <= set(found)
    assert {name for name, kind in found.items() if kind != "UTCDateTime"} == set()


def test_postgresql_stores_zone_aware_timestamps(engine):
    """timestamptz on PostgreSQL: the server itself knows the moment is UTC (another client reads it right)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no timestamp type")
    with Session(engine) as s:
        s.add(Job(prompt="p", model_id="m", seed=1, duration_s=1.0, sample_rate=32000, created_at=PARIS_NOON))
        s.commit()
    with engine.connect() as conn:
        kinds = set(conn.exec_driver_sql(
            "SELECT DISTINCT data_type FROM information_schema.columns WHERE table_schema = 'public' AND "
            "data_type LIKE 'timestamp%%'").scalars())
        conn.exec_driver_sql("SET TIME ZONE 'Asia/Tokyo'")
        local = conn.exec_driver_sql("SELECT to_char(created_at, 'HH24:MI TZH') FROM job").scalar()
    assert kinds == {"timestamp with time zone"}
    assert local == "19:00 +09"
