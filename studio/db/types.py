"""Column types shared by the tables."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import BigInteger, DateTime, Integer
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """A moment in UTC, read back zone-aware, so every timestamp the studio reads (and the API sends, with its `Z`)
    is UTC without each reader fixing it up. PostgreSQL stores it as `timestamptz` (the column type sqlmodel's
    UTCDateTime, which the migrations use, creates); SQLite keeps no time zone: values are stored as naive UTC, as
    every earlier version of the studio stored them."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)  # naive moments are UTC by the studio's convention
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        value = as_utc(value)
        return value.astimezone(timezone.utc) if value is not None else None


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored moment as an aware UTC datetime (naive values are UTC by the studio's convention)."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


# A 64-bit integer (seeds reach 2**32 - 1, adapters 5 GB): BIGINT on PostgreSQL, whose integer is 32-bit; SQLite's
# INTEGER is 64-bit already, and its columns stay as every earlier version made them.
BigInt = BigInteger().with_variant(Integer(), "sqlite")
