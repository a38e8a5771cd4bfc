"""Tables of the studio database."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from studio.db.types import UTCDateTime
from studio.users import LOCAL_USER, SYSTEM_USER


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; the studio stores them in UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


# The one timestamp type of the studio's public records: always timezone-aware, always UTC.
UTCTimestamp = Annotated[datetime, AfterValidator(as_utc)]
# queued -> running -> succeeded | failed | cancelled; interrupted: it was running when the studio stopped
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]


class Adapter(SQLModel, table=True):
    """A LoRA adapter: a versioned artifact whose files the studio owns under <data-dir>/adapters/."""

    __table_args__ = (UniqueConstraint("name", "version", name="uq_adapter_name_version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=100)
    version: int
    description: str = ""
    base_model: str = Field(index=True)  # a registry model id
    base_model_revision: str | None = None
    base_weights_hash: str | None = None  # fingerprint of the base weights it was trained on, when known
    path: str  # folder relative to the data directory
    source: str  # where it was registered from, for a person
    lora_config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    size_bytes: int = 0
    content_hash: str | None = Field(default=None, index=True)  # sha256 of weights + LoRA config: spots duplicates
    # Training provenance (optional)
    training_dataset: str | None = None
    training_config: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    training_metrics: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    training_run_id: str | None = None
    trained_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    active: bool = True
    usage_count: int = 0
    created_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, index=True, sa_type=UTCDateTime)

    @property
    def label(self) -> str:
        return version_label(self.name, self.version)


def version_label(name: str, version: int) -> str:
    """How an adapter version is named everywhere (pages, messages, jobs): 'name vN'."""
    return f"{name} v{version}"


class Job(SQLModel, table=True):
    """One generation request: what was asked (everything needed to run it again), who asked, how it went in the
    queue, and the audio and codes files it produced."""

    id: int | None = Field(default=None, primary_key=True)
    prompt: str
    model_id: str = Field(index=True)
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    seed: int
    duration_s: float
    sample_rate: int
    status: str = Field(default="queued", index=True)  # a JobStatus
    error: str | None = None
    error_code: str | None = None  # failed: a stable snake_case code
    submitted_by: str = LOCAL_USER  # the signed-in user, LOCAL_USER without auth
    adapter_id: int | None = Field(default=None, foreign_key="adapter.id", index=True)
    output_file: str | None = None  # relative to the data directory
    codes_file: str | None = None  # the generated codes (safetensors), beside the audio
    created_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)  # accepted into the queue
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    elapsed_s: float | None = None  # started -> finished: the decoding and the files
    batch_size: int | None = None  # jobs decoded together with this one (itself included)
    # What the written file measures (decoded): integrated loudness (None: undefined) and true peak (None: silence)
    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = None


class GenerationConfig(SQLModel, table=True):
    """A model's stored generation settings (all of them), seeded from registry.yaml's defaults on first start."""

    __tablename__ = "generation_config"

    model_id: str = Field(primary_key=True)  # a registry model id
    values: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_by: str = SYSTEM_USER


class GenerationConfigChange(SQLModel, table=True):
    """The audit trail of GenerationConfig: who changed which values, when, from what to what."""

    __tablename__ = "generation_config_change"

    id: int | None = Field(default=None, primary_key=True)
    model_id: str = Field(index=True)
    action: str  # seed | update | reset
    changed_by: str  # the signed-in user, LOCAL_USER without auth, SYSTEM_USER for seeding
    changed_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)
    old_values: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    new_values: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
