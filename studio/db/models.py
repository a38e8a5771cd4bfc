"""Tables of the studio database."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Job(SQLModel, table=True):
    """One generation request: what was asked, what happened, and the audio file it produced."""

    id: int | None = Field(default=None, primary_key=True)
    prompt: str
    model_id: str = Field(index=True)
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    seed: int
    duration_s: float
    sample_rate: int
    status: str = Field(default="running", index=True)  # running | succeeded | failed | cancelled
    error: str | None = None
    output_file: str | None = None  # relative to the data directory
    created_at: datetime = Field(default_factory=utcnow, index=True)
    finished_at: datetime | None = None
    elapsed_s: float | None = None
