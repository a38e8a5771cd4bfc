"""Column types shared by the tables."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """A moment in UTC. SQLite keeps no time zone: values are stored as naive UTC and read back zone-aware, so every
    timestamp the studio reads (and the API sends, with its `Z`) is UTC without each reader fixing it up."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return as_utc(value)


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored moment as an aware UTC datetime (naive values are UTC by the studio's convention)."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment
