"""Training datasets: audio files with captions, validated, sliced into clips no longer than the model's window,
resampled to its rate, listed clip by clip with captions to edit and clips to exclude, versioned by content hash.

(Contract written first; the lane `datasets` implements it.)
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.users import LOCAL_USER

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
ProgressFn = Callable[[float | None, str], None]  # (fraction or None, message)
MAX_ID = 2**63 - 1


class CreateDatasetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    source: Literal["folder", "upload"] = Field(description="a server folder inside an import root, or an archive "
                                                            "(.zip, .tar.gz) uploaded with the request")
    path: str | None = Field(None, description="folder: a path inside an import root")
    name: str | None = Field(None, max_length=100, description="default: the folder's or archive's name")
    model_id: str | None = Field(None, description="the model the clips are prepared for (its sample rate and "
                                                   "window); default: the model the next job runs on")
    max_clip_s: float | None = Field(None, gt=0, description="longest clip (s); default and most: the model's window")
    overlap_s: float = Field(0.0, ge=0, description="overlap between consecutive clips of a long file (s); less "
                                                    "than max_clip_s")
    min_clip_s: float = Field(1.0, gt=0, le=30, description="shorter files (and last slices) are left out")


class ReportProblem(BaseModel):
    file: str = Field(description="the file's path inside the folder or archive")
    code: Literal["unreadable", "missing_caption", "empty_caption", "too_short", "unsupported_format",
                  "caption_without_audio"]
    message: str


class DatasetReport(BaseModel):
    """What the studio found when it read the files: shown after creation (and in the refusal when no clip is
    usable)."""

    files_found: int = Field(description="audio files found (every supported suffix)")
    files_used: int = Field(description="files that gave at least one clip")
    clips: int
    total_minutes: float = Field(description="minutes of audio in the clips")
    sliced_files: int = Field(description="files longer than the longest clip, cut into several")
    resampled_files: int = Field(description="files not at the model's sample rate")
    caption_source: str = Field(description="sidecar .txt files, metadata.jsonl or metadata.csv")
    problems: list[ReportProblem]


class DatasetSummary(BaseModel):
    id: int
    name: str
    model_id: str
    sample_rate: int
    max_clip_s: float
    overlap_s: float
    clips: int = Field(description="clips used for training (excluded ones not counted)")
    excluded: int
    total_minutes: float = Field(description="minutes of the clips used")
    version: int = Field(description="goes up with every caption edit or exclusion")
    content_hash: str
    source: str
    created_by: str
    created_at: datetime
    updated_at: datetime


class DatasetInfo(DatasetSummary):
    report: DatasetReport


class ClipInfo(BaseModel):
    id: int
    position: int
    source_file: str
    start_s: float
    duration_s: float
    caption: str
    excluded: bool
    audio_url: str = Field(description="GET: the clip as prepared for training")


class ClipCaption(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: int = Field(ge=1, le=MAX_ID)
    caption: str = Field(max_length=2000)


class ClipsEdit(BaseModel):
    """Edits to a dataset's clips, applied together as one new version (nothing changed: the version stays).
    Per-clip captions first, then the bulk operations on the chosen clips (all clips when clip_ids is null)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    captions: list[ClipCaption] = Field([], max_length=100_000, description="set these clips' captions")
    clip_ids: list[int] | None = Field(None, max_length=100_000, description="the clips the bulk operations apply "
                                                                            "to; null: every clip")
    caption: str | None = Field(None, max_length=2000, description="bulk: replace the whole caption")
    find: str | None = Field(None, max_length=2000, description="bulk: replace this text in the captions ...")
    replace: str = Field("", max_length=2000, description="... by this one")
    prefix: str | None = Field(None, max_length=2000, description="bulk: put this before each caption")
    suffix: str | None = Field(None, max_length=2000, description="bulk: put this after each caption")
    excluded: bool | None = Field(None, description="bulk: exclude (true) or include (false) the clips")


class TrainingClip(BaseModel):
    """A clip as a training run uses it."""

    clip_id: int
    file: Path  # absolute
    caption: str
    hash: str


class DatasetService:
    """Owns datasets: their records, their clips' audio under <data-dir>/datasets/, and their versions."""

    def __init__(self, engine, registry, queue, data_dir: Path, import_roots: list[Path]):
        self.engine, self.registry, self.queue = engine, registry, queue
        self.data_dir, self.import_roots = Path(data_dir), list(import_roots)

    def create(self, req: CreateDatasetRequest, *, upload: Path | None = None, upload_name: str | None = None,
               user: str = LOCAL_USER, on_progress: ProgressFn | None = None) -> DatasetInfo:
        """Read, validate, slice and resample; record the dataset, all or nothing. No usable clip: InvalidValues
        (code no_usable_clips) carrying the report."""
        raise NotImplementedError

    def list(self) -> list[DatasetSummary]:
        raise NotImplementedError

    def get(self, dataset_id: int) -> DatasetInfo:
        raise NotImplementedError

    def clips(self, dataset_id: int) -> list[ClipInfo]:
        raise NotImplementedError

    def clip_audio(self, dataset_id: int, clip_id: int) -> Path:
        raise NotImplementedError

    def edit_clips(self, dataset_id: int, edit: ClipsEdit, user: str = LOCAL_USER) -> DatasetInfo:
        raise NotImplementedError

    def delete(self, dataset_id: int) -> DatasetInfo:
        """Refused (409 dataset_in_use) while a queued or running training run uses it."""
        raise NotImplementedError

    def training_clips(self, dataset_id: int) -> tuple[DatasetSummary, list[TrainingClip]]:
        """The dataset (its version and hash now) and its clips that are not excluded; InvalidRequest when none
        is left."""
        raise NotImplementedError
