"""Tables of the studio database."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from studio.db.types import BigInt, UTCDateTime
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
    size_bytes: int = Field(default=0, sa_type=BigInt)  # adapters up to 5 GB: past PostgreSQL's 32-bit integer
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
    seed: int = Field(sa_type=BigInt)  # 0 to 2**32 - 1: past PostgreSQL's 32-bit integer
    duration_s: float
    sample_rate: int
    status: str = Field(default="queued", index=True)  # a JobStatus
    error: str | None = None
    error_code: str | None = None  # failed: a stable snake_case code
    submitted_by: str = Field(default=LOCAL_USER, index=True)  # the signed-in user, LOCAL_USER without auth
    # The studio process that claimed it to run (several studios may share one PostgreSQL database): only that
    # studio runs, interrupts or recovers it. None: not claimed yet (queued).
    runner: str | None = Field(default=None, index=True, max_length=100)
    adapter_id: int | None = Field(default=None, foreign_key="adapter.id", index=True)
    output_file: str | None = None  # relative to the data directory
    codes_file: str | None = None  # the generated codes (safetensors), beside the audio
    created_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)  # accepted into the queue
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    elapsed_s: float | None = None  # started -> finished: the decoding and the files
    batch_size: int | None = None  # jobs decoded together with this one (itself included)
    # A clip made for a blind A/B test or an evaluation run (None: a person's own generation, shown in History)
    abtest_id: int | None = Field(default=None, foreign_key="abtest.id", index=True)
    evaluation_id: int | None = Field(default=None, foreign_key="evaluation.id", index=True)
    # A clip made to audition a training run's checkpoint (kept out of History): the run, and the checkpoint's step
    # (0: the run's starting point, the base model or the adapter it started from, with the same prompts and seeds)
    training_run_id: int | None = Field(default=None, foreign_key="training_run.id", index=True)
    checkpoint_step: int | None = None
    # What the written file measures (decoded): integrated loudness (None: undefined) and true peak (None: silence)
    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = None
    # What the job continues (None: it starts from silence): {"source": "upload"|"job", "upload_id" | "job_id",
    # "seconds" (of audio continued), "trimmed_from_s" (the clip's length when it was cut to fit), "included"}
    continuation: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # The melody it follows (melody models): {"upload_id", "seconds"}
    melody: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # The adapters it ran with and their strengths, in order: [{"adapter_id", "label", "strength"}] (None: the
    # base model, or adapter_id alone at strength 1)
    adapter_stack: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


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


class Rating(SQLModel, table=True):
    """A person's 1-5 rating of a job: one per user per job, changeable."""

    __table_args__ = (UniqueConstraint("job_id", "user", name="uq_rating_job_user"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    user: str = Field(index=True, max_length=100)
    stars: int  # 1..5
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# A side of an A/B test: {"adapter_id": int | None (None: the base model), "overrides": {setting: value}}
ABSide = dict[str, Any]


class ABTest(SQLModel, table=True):
    """A blind A/B test: two sides on one base model, every (prompt, seed) generated for both."""

    __tablename__ = "abtest"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    model_id: str = Field(index=True)  # the base model both sides run on
    side_a: ABSide = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    side_b: ABSide = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prompts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    seeds_per_prompt: int
    duration_s: float
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # common to both
    status: str = "generating"  # generating | ready | failed | cancelled
    # The studio that generates/runs it (several studios may share one PostgreSQL database): only that studio takes
    # it up after a restart. None: recorded before studios had ids (the first studio to start takes it).
    runner: str | None = Field(default=None, index=True, max_length=100)
    error: str | None = None
    secret: str  # salts each listener's random order; never leaves the server
    created_by: str = LOCAL_USER
    created_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # results revealed to everyone


class ABPair(SQLModel, table=True):
    """One (prompt, seed) of a test: the job of each side and its loudness-matched clip for listening."""

    __tablename__ = "abtest_pair"
    __table_args__ = (UniqueConstraint("abtest_id", "position", name="uq_abtest_pair_position"),)

    id: int | None = Field(default=None, primary_key=True)
    abtest_id: int = Field(foreign_key="abtest.id", index=True)
    position: int  # 0, 1, ... in the order the pairs were made
    prompt: str
    seed: int = Field(sa_type=BigInt)  # 0 to 2**32 - 1, as a job's
    job_a_id: int | None = Field(default=None, foreign_key="job.id")
    job_b_id: int | None = Field(default=None, foreign_key="job.id")
    clip_a: str | None = None  # loudness-matched audio, relative to the data directory (a name that hides the side)
    clip_b: str | None = None


class ABVote(SQLModel, table=True):
    """A listener's vote on one pair: the side they preferred ('a', 'b') or 'none'."""

    __tablename__ = "abtest_vote"
    __table_args__ = (UniqueConstraint("pair_id", "listener", name="uq_abtest_vote_pair_listener"),)

    id: int | None = Field(default=None, primary_key=True)
    abtest_id: int = Field(foreign_key="abtest.id", index=True)
    pair_id: int = Field(foreign_key="abtest_pair.id", index=True)
    listener: str = Field(index=True, max_length=100)
    choice: str  # a | b | none
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Score(SQLModel, table=True):
    """An automatic score of a job's audio (text-audio agreement by an evaluation model such as CLAP)."""

    __table_args__ = (UniqueConstraint("job_id", "scorer", name="uq_score_job_scorer"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    scorer: str = Field(index=True)  # the evaluation model's id
    value: float
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Evaluation(SQLModel, table=True):
    """An evaluation run: a base model or adapter version over the fixed evaluation prompt set, each clip scored."""

    id: int | None = Field(default=None, primary_key=True)
    model_id: str = Field(index=True)
    adapter_id: int | None = Field(default=None, foreign_key="adapter.id", index=True)  # None: the base model
    scorer: str
    prompts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    seeds: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    duration_s: float
    status: str = "running"  # running | succeeded | failed | cancelled
    # The studio that generates/runs it (several studios may share one PostgreSQL database): only that studio takes
    # it up after a restart. None: recorded before studios had ids (the first studio to start takes it).
    runner: str | None = Field(default=None, index=True, max_length=100)
    error: str | None = None
    mean_score: float | None = None
    n: int = 0  # clips scored
    created_by: str = LOCAL_USER
    created_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Dataset(SQLModel, table=True):
    """A training dataset: clips cut from audio files with captions, prepared for one model's sample rate and
    window. Its version goes up and its content hash changes whenever a caption or an exclusion changes."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, index=True)
    model_id: str = Field(index=True)  # the model the clips were prepared for (sample rate, channels, window)
    sample_rate: int
    channels: int
    max_clip_s: float  # clips are at most this long (the model's window at creation)
    overlap_s: float  # overlap between consecutive clips of a long file
    source: str  # where it was created from, for a person ("folder:/path", "upload:name.zip")
    folder: str  # relative to the data directory: its clips' audio
    report: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # DatasetReport
    version: int = 1
    content_hash: str  # sha256 of the used clips' hashes and captions, in order
    created_by: str = LOCAL_USER
    created_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, index=True, sa_type=UTCDateTime)


class DatasetClip(SQLModel, table=True):
    """One training clip of a dataset: a slice of a source file, resampled, with its caption."""

    __tablename__ = "dataset_clip"
    __table_args__ = (UniqueConstraint("dataset_id", "position", name="uq_dataset_clip_position"),)

    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="dataset.id", index=True)
    position: int  # 0, 1, ... in file order, then time order
    source_file: str  # the file's path inside the dataset's folder or archive, for a person
    start_s: float  # where in the source file the clip starts
    duration_s: float
    caption: str
    excluded: bool = False  # left out of training (kept, shown greyed)
    file: str  # the clip's audio, relative to the data directory
    hash: str  # sha256 of the clip's samples (its codes are cached under it)


class TrainingRun(SQLModel, table=True):
    """A LoRA training run in a subprocess: supervised on a dataset, or DPO on an A/B test's votes."""

    __tablename__ = "training_run"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)  # the adapter name its versions are registered under
    method: str  # sft | dpo
    model_id: str = Field(index=True)  # the base model
    base_model_revision: str | None = None
    base_weights_hash: str | None = None
    dataset_id: int | None = Field(default=None, foreign_key="dataset.id", index=True)  # sft
    dataset_version: int | None = None  # the dataset's version and hash when the run was created
    dataset_hash: str | None = None
    abtest_id: int | None = Field(default=None, foreign_key="abtest.id", index=True)  # dpo: the votes
    start_adapter_id: int | None = Field(default=None, foreign_key="adapter.id")  # continued from (dpo: winner)
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))  # TrainingConfig
    audition_prompts: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    audition_seeds: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # queued -> running -> (stopping ->) succeeded | stopped | failed; interrupted: the studio or the process
    # stopped mid-run (resumable from its last checkpoint)
    status: str = Field(default="queued", index=True)
    # The studio that generates/runs it (several studios may share one PostgreSQL database): only that studio takes
    # it up after a restart. None: recorded before studios had ids (the first studio to start takes it).
    runner: str | None = Field(default=None, index=True, max_length=100)
    error: str | None = None
    error_code: str | None = None
    step: int = 0  # the last step done
    total_steps: int = 0
    loss: float | None = None  # the last step's loss
    folder: str  # the run folder, relative to the data directory
    auto_register: bool = True  # register the last checkpoint as an adapter version when the run succeeds
    adapter_id: int | None = Field(default=None, foreign_key="adapter.id")  # the version registered at the end
    created_by: str = LOCAL_USER
    created_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class TrainingCheckpoint(SQLModel, table=True):
    """A checkpoint a run wrote (never overwritten), and the adapter version it was registered as, if any."""

    __tablename__ = "training_checkpoint"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_training_checkpoint_step"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="training_run.id", index=True)
    step: int
    loss: float | None = None  # mean loss of the steps since the previous checkpoint
    folder: str  # relative to the data directory
    adapter_id: int | None = Field(default=None, foreign_key="adapter.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AudioUpload(SQLModel, table=True):
    """An audio file a person uploaded to condition generations (a clip to continue, a melody): kept as sent under
    uploads/, read and checked once at upload; jobs refer to it by id."""

    __tablename__ = "audio_upload"

    id: str = Field(primary_key=True, max_length=32)  # random: an upload's id is not guessable
    filename: str = Field(max_length=255)  # as sent (shown, never used as a path)
    file: str  # relative to the data directory
    format: str  # wav | flac | ogg | mp3
    seconds: float
    sample_rate: int
    channels: int
    size_bytes: int = Field(sa_type=BigInt)
    uploaded_by: str = LOCAL_USER
    created_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)


class CustomModel(SQLModel, table=True):
    """A generation model added from the page or the API (a hub repo, a local folder, or an audiocraft checkpoint
    converted by the studio), beside the shipped registry.yaml: `spec` is its ModelSpec as JSON, derived from its
    config when it was added."""

    __tablename__ = "custom_model"

    id: str = Field(primary_key=True, max_length=64)  # the registry id (never one of registry.yaml's)
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    # imported from an audiocraft checkpoint: what it came from (file, sha256, audiocraft version, configuration)
    provenance: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    added_by: str = LOCAL_USER
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Account(SQLModel, table=True):
    """A person who may log in. Never deleted while records name them: disabling keeps the audit trail readable.
    (Not 'user': a reserved word in PostgreSQL.)"""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=100)  # what records store (submitted_by, changed_by, ...)
    password_hash: str  # argon2id, from argon2-cffi (never the password)
    role: str = Field(default="member", max_length=20)  # a studio.users.Role
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by: str = SYSTEM_USER
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ApiToken(SQLModel, table=True):
    """A bearer token for scripts and gradio_client: it acts as its account, with the account's current role."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    name: str = Field(max_length=100)  # what it is for, for a person
    prefix: str = Field(max_length=16)  # the token's first characters, shown in lists so a person knows which
    token_hash: str = Field(unique=True, max_length=64)  # sha256 hex of the whole token (never the token)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, index=True, sa_type=UTCDateTime)


class LoginSession(SQLModel, table=True):
    """A logged-in browser (or gradio_client login): stored so that every studio on one database knows it, a
    restart keeps it, and logging out ends it everywhere."""

    __tablename__ = "login_session"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    token_hash: str = Field(unique=True, max_length=64)  # sha256 hex of the cookie's value
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(index=True, sa_type=UTCDateTime)


class AdapterChange(SQLModel, table=True):
    """Who changed an adapter version and how (registered, renamed, activated, deactivated, deleted, restored)."""

    __tablename__ = "adapter_change"

    id: int | None = Field(default=None, primary_key=True)
    adapter_id: int = Field(foreign_key="adapter.id", index=True)
    action: str = Field(max_length=30)
    details: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    changed_by: str = Field(max_length=100)
    changed_at: datetime = Field(default_factory=utcnow, index=True, sa_type=UTCDateTime)
