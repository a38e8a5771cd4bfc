"""Training datasets: audio files with captions, validated, sliced into clips no longer than the model's window,
resampled to its rate, listed clip by clip with captions to edit and clips to exclude, versioned by content hash.

Reading: soundfile (wav, flac, ogg, mp3), one window at a time (a long file never sits in memory whole); channels
converted to the model's (mean to mono, mono doubled to stereo); resampled with soxr; written as 32-bit float WAV,
so the samples hashed are the samples trained on. Captions: metadata.jsonl / metadata.csv at the folder's top
(columns file_name + text or caption, file_name relative to that folder), else a sidecar `<name>.txt` beside the
file. Every file left out is a problem in the report; no usable clip at all: nothing is created.

Files: <data-dir>/datasets/<uuid>/clips/NNNNNN.wav, staged in <data-dir>/datasets/.incoming-*/ and renamed into
place before the record is written (a kill leaves a staging folder, removed at the next start, or a folder no live
record names, removed too: studio/datadir.py)."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import soundfile as sf
import soxr

from pydantic import BaseModel, ConfigDict, Field

from studio.archives import ArchiveRules, archive_stem, extract, import_folder, inside_roots, size_text
from studio.db.datasets import (active_runs_using, add_dataset, clip_counts, clips_of, get_clip, get_dataset,
                                list_datasets, save_dataset)
from studio.db.engine import session_scope
from studio.db.models import Dataset, DatasetClip, utcnow
from studio.errors import Conflict, InvalidRequest, InvalidValues, NotFound, TooLarge
from studio.registry import ModelSpec
from studio.services.uploads import to_channels
from studio.storage import storage_writes
from studio.users import LOCAL_USER

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
ProgressFn = Callable[[float | None, str], None]  # (fraction or None, message)
MAX_ID = 2**63 - 1
log = logging.getLogger(__name__)

# Suffixes of audio that soundfile cannot read: said in the report (other files are not audio and are ignored)
UNSUPPORTED_AUDIO = (".m4a", ".aac", ".wma", ".opus", ".mp4", ".webm", ".amr", ".ape", ".mka", ".alac")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
MAX_FILES = 20_000  # audio files in one dataset
MAX_ENTRIES = 200_000  # files and folders looked at in a dataset folder
MAX_CLIPS = 100_000  # what ClipsEdit can name
MAX_CAPTION_CHARS = 2000
MAX_SIDECAR_BYTES = 64 * 1024
MAX_METADATA_BYTES = 32 * 2**20
MAX_AUDIO_FILE_BYTES = 2 * 2**30
MAX_UPLOAD_BYTES = 5 * 2**30  # an uploaded archive, as received
MAX_ARCHIVE_BYTES = 8 * 2**30  # what it may unpack to
MAX_ARCHIVE_MEMBERS = 25_000
MAX_DEPTH = 8  # folders inside a dataset folder or archive


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
    channels: int = Field(1, description="the clips' channels (the model's)")
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
    """One clip's own edit: its caption, whether it is excluded, or both (what a row of the page's grid changes)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: int = Field(ge=1, le=MAX_ID)
    caption: str | None = Field(None, max_length=2000, description="null: unchanged")
    excluded: bool | None = Field(None, description="null: unchanged")


class ClipsEdit(BaseModel):
    """Edits to a dataset's clips, applied together as one new version (nothing changed: the version stays).
    Per-clip edits (captions, exclusion) first, then the bulk operations on the chosen clips (all clips when
    clip_ids is null)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    captions: list[ClipCaption] = Field([], max_length=100_000, description="per clip: set its caption and/or "
                                                                          "whether it is excluded")
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


# ---- reading a folder: files, captions, audio ------------------------------------------------------------------
@dataclass
class _Found:
    """What a folder holds: audio files and caption files (paths relative to the folder, posix)."""

    audio: list[str] = field(default_factory=list)
    sidecars: set[str] = field(default_factory=set)  # .txt files
    unsupported: list[str] = field(default_factory=list)


def _visible(parts: tuple[str, ...]) -> bool:
    """Not a hidden file or folder, nor macOS's archive clutter (__MACOSX/, ._name)."""
    return not any(p.startswith(".") or p == "__MACOSX" for p in parts)


def scan_folder(root: Path, roots: list[Path] | None = None) -> _Found:
    """The audio and caption files under `root` (hidden ones and those deeper than MAX_DEPTH ignored), in a stable
    order. With `roots`: a symlink that leads out of them is refused (path_not_allowed); linked folders are not
    followed."""
    found = _Found()
    seen = 0
    for folder, dirs, files in os.walk(root):
        seen += len(files) + len(dirs)
        if seen > MAX_ENTRIES:  # a whole home folder named by mistake: say so rather than walk it for minutes
            raise InvalidRequest(f"The folder holds more than {MAX_ENTRIES} files and folders; choose the folder "
                                 "of the dataset itself.", code="too_many_files", max_entries=MAX_ENTRIES)
        rel_dir = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if _visible((d,)) and len(rel_dir.parts) < MAX_DEPTH)
        for name in sorted(files):
            rel = (rel_dir / name).as_posix()
            if not _visible((name,)):
                continue
            suffix = Path(name).suffix.lower()
            if suffix not in AUDIO_SUFFIXES + (".txt",) + UNSUPPORTED_AUDIO and name not in METADATA_FILES:
                continue
            path = Path(folder) / name
            if roots is not None and path.is_symlink() and not inside_roots(path, roots):
                raise InvalidRequest(f"{rel} links to a file outside the folders datasets may be read from; copy "
                                     "the file itself into the folder.", code="path_not_allowed", file=rel)
            if suffix in AUDIO_SUFFIXES:
                found.audio.append(rel)
                if len(found.audio) > MAX_FILES:
                    raise InvalidRequest(f"The folder holds more than {MAX_FILES} audio files; split it into "
                                         "several datasets.", code="too_many_files", max_files=MAX_FILES)
            elif suffix == ".txt":
                found.sidecars.add(rel)
            elif suffix in UNSUPPORTED_AUDIO:
                found.unsupported.append(rel)
    found.audio.sort(key=_natural_key)
    return found


def _natural_key(rel: str) -> list:
    """clip2 before clip10: files in the order a person numbered them."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", rel)]


def clean_caption(text: object) -> str:
    """One line, trimmed, at most MAX_CAPTION_CHARS."""
    return " ".join(str(text).split())[:MAX_CAPTION_CHARS]


def _read_limited(path: Path, limit: int) -> str:
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"over {size_text(limit)}")
    return data.decode("utf-8-sig")


def _metadata_rows(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line or row number, the row as a dict, or None and why it is unreadable)."""
    text = _read_limited(path, MAX_METADATA_BYTES)
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                yield number, None, "not a JSON object"
                continue
            yield (number, row, None) if isinstance(row, dict) else (number, None, "not a JSON object")
    else:
        reader = csv.DictReader(io.StringIO(text))
        fields = [f.strip() for f in reader.fieldnames or []]
        if "file_name" not in fields or not ({"text", "caption"} & set(fields)):
            yield 1, None, f"the header has no file_name and text (or caption) columns (found: {', '.join(fields)})"
            return
        for number, row in enumerate(reader, start=2):
            yield number, {(k or "").strip(): v for k, v in row.items()}, None


def read_captions(root: Path, found: _Found) -> tuple[dict[str, str | None], str, list[ReportProblem]]:
    """Each audio file's caption (None: none found; '' : empty), where captions came from, and the problems of the
    caption files themselves (unreadable rows, captions naming no audio file)."""
    problems: list[ReportProblem] = []
    audio = set(found.audio)
    captions: dict[str, str | None] = {}
    sources = []
    metadata = next((root / m for m in METADATA_FILES if (root / m).is_file()), None)
    if metadata is not None:
        sources.append(metadata.name)
        try:
            rows = list(_metadata_rows(metadata))
        except (OSError, ValueError, csv.Error) as exc:  # unreadable, not UTF-8, too large, broken quoting
            problems.append(ReportProblem(file=metadata.name, code="unreadable",
                                          message=f"{metadata.name} cannot be read: {_short(exc)}"))
            rows = []
        unit = "line" if metadata.suffix == ".jsonl" else "row"
        for number, row, why in rows:
            if row is None:
                problems.append(ReportProblem(file=metadata.name, code="unreadable",
                                              message=f"{metadata.name}, {unit} {number}: {why}"))
                continue
            name = str(row.get("file_name") or "").strip().replace("\\", "/").removeprefix("./")
            text = row.get("text") if row.get("text") is not None else row.get("caption")
            if name not in audio:
                problems.append(ReportProblem(
                    file=metadata.name, code="caption_without_audio",
                    message=f"{metadata.name}, {unit} {number}: " + (
                        f"there is no audio file {name[:200]!r}" if name else "no file_name")))
                continue
            captions[name] = clean_caption(text) if text is not None else None
    used_sidecars = False
    for rel in found.audio:
        if captions.get(rel) is not None:
            continue
        sidecar = str(Path(rel).with_suffix(".txt").as_posix())
        if sidecar in found.sidecars:
            try:
                captions[rel] = clean_caption(_read_limited(root / sidecar, MAX_SIDECAR_BYTES))
                used_sidecars = True
            except (OSError, ValueError) as exc:
                problems.append(ReportProblem(file=sidecar, code="unreadable",
                                              message=f"The caption file cannot be read: {exc}"))
        else:
            captions.setdefault(rel, None)
    stems = {Path(rel).with_suffix("").as_posix() for rel in found.audio}
    for txt in sorted(found.sidecars):
        if Path(txt).with_suffix("").as_posix() not in stems and Path(txt).name.lower() not in ("readme.txt",
                                                                                               "license.txt"):
            problems.append(ReportProblem(file=txt, code="caption_without_audio",
                                          message="A caption file with no audio file of the same name."))
    if used_sidecars:
        sources.append("sidecar .txt files")
    return captions, " and ".join(sources) or "none", problems


def slice_starts(frames: int, window: int, hop: int, min_frames: int) -> list[tuple[int, int]]:
    """The (start, end) of each clip of a file `frames` long: windows of `window` frames every `hop` frames (hop <
    window: they overlap), the last ending at the file's end; a slice shorter than min_frames is left out."""
    out = []
    start = 0
    while start < frames:
        end = min(start + window, frames)
        if end - start >= min_frames:
            out.append((start, end))
        if end >= frames:
            break
        start += hop
    return out


def clip_hash(samples: np.ndarray, sample_rate: int) -> str:
    """sha256 of a clip's samples as stored (float32, frames x channels) and its rate."""
    digest = hashlib.sha256(f"{sample_rate}:{samples.shape[1]}:".encode())
    digest.update(np.ascontiguousarray(samples, dtype="<f4").tobytes())
    return digest.hexdigest()


def content_hash(clips: list[tuple[str, str]]) -> str:
    """sha256 over the used clips' (hash, caption), in order: two datasets with the same hash train the same."""
    digest = hashlib.sha256()
    for h, caption in clips:
        digest.update(json.dumps([h, caption], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass
class _Prepared:
    source_file: str
    start_s: float
    duration_s: float
    caption: str
    file: str  # relative to the staging folder
    hash: str


@dataclass
class _Plan:
    sample_rate: int
    channels: int
    max_clip_s: float
    overlap_s: float
    min_clip_s: float


def prepare_file(path: Path, rel: str, caption: str, plan: _Plan, out_dir: Path, first_position: int,
                 problems: list[ReportProblem]) -> tuple[list[_Prepared], bool, bool]:
    """Slice, convert and resample one file into clips written under out_dir; (clips, sliced, resampled). A file
    that cannot be used adds its problem and gives no clip."""
    try:
        f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        problems.append(ReportProblem(file=rel, code="unreadable", message=f"Not readable as audio: {_short(exc, path)}"))
        return [], False, False
    clips: list[_Prepared] = []
    with f:
        rate, frames = f.samplerate, f.frames
        if rate <= 0 or frames <= 0:
            problems.append(ReportProblem(file=rel, code="unreadable",
                                          message="The file holds no audio."))
            return [], False, False
        seconds = frames / rate
        if seconds < plan.min_clip_s:
            problems.append(ReportProblem(file=rel, code="too_short", message=(
                f"{seconds:.2f} s long; clips shorter than {plan.min_clip_s:g} s are left out.")))
            return [], False, False
        window = int(round(plan.max_clip_s * rate))
        hop = max(1, window - int(round(plan.overlap_s * rate)))
        slices = slice_starts(frames, window, hop, int(np.ceil(plan.min_clip_s * rate)))
        for start, end in slices:
            try:
                f.seek(start)
                data = f.read(end - start, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
                problems.append(ReportProblem(file=rel, code="unreadable",
                                              message=f"Unreadable from {start / rate:.1f} s: {_short(exc, path)}"))
                return [], False, False
            if data.shape[0] < int(np.ceil(plan.min_clip_s * rate)):
                break  # the file is shorter than its header said (mp3 estimates): the rest is not there
            if not np.isfinite(data).all():
                problems.append(ReportProblem(file=rel, code="unreadable",
                                              message="The file holds invalid samples (NaN or infinity)."))
                return [], False, False
            data = to_channels(data, plan.channels)
            if rate != plan.sample_rate:
                data = soxr.resample(data, rate, plan.sample_rate, quality="HQ").astype(np.float32, copy=False)
                data = data.reshape(-1, plan.channels)
            name = f"clips/{first_position + len(clips):06d}.wav"
            sf.write(str(out_dir / name), data, plan.sample_rate, subtype="FLOAT", format="WAV")
            clips.append(_Prepared(source_file=rel, start_s=round(start / rate, 4),
                                   duration_s=round(data.shape[0] / plan.sample_rate, 4), caption=caption,
                                   file=name, hash=clip_hash(data, plan.sample_rate)))
    return clips, len(slices) > 1, rate != plan.sample_rate


def _short(exc: BaseException, path: Path | None = None) -> str:
    """The reason, in one line; the file's place on the server is not the person's business (libsndfile names it)."""
    text = str(exc).replace("\n", " ")
    if path is not None:
        text = text.replace(f"'{path}'", "").replace(str(path), "").replace("Error opening :", "Error opening:")
    return text.strip()[:200] or type(exc).__name__


def _dataset_archive(unsupported: list[str]) -> ArchiveRules:
    """Audio files, sidecar captions and metadata, at most MAX_DEPTH folders deep; audio the studio cannot read is
    not unpacked but named (in `unsupported`) for the report."""
    def keep(parts: tuple[str, ...]) -> bool:
        if not _visible(parts) or len(parts) > MAX_DEPTH + 1:
            return False
        return Path(parts[-1]).suffix.lower() in AUDIO_SUFFIXES + (".txt",) or parts[-1] in METADATA_FILES

    def cap(name: str) -> int:
        if name in METADATA_FILES:
            return MAX_METADATA_BYTES
        return MAX_SIDECAR_BYTES if name.lower().endswith(".txt") else MAX_AUDIO_FILE_BYTES

    def skipped(_dest: Path, name: str) -> None:
        parts = Path(name).parts
        if parts and _visible(parts) and Path(name).suffix.lower() in UNSUPPORTED_AUDIO:
            unsupported.append(Path(name).as_posix())

    def too_large(name: str, limit: int) -> TooLarge:
        return TooLarge(f"{name} is over {size_text(limit)}, the most the studio takes for one file.",
                        code="file_too_large", file=name, max_bytes=limit)

    return ArchiveRules(keep=keep, file_cap=cap, budget=MAX_ARCHIVE_BYTES, max_members=MAX_ARCHIVE_MEMBERS,
                        members_hint="; split the dataset into several archives",
                        budget_hint="; split the dataset into several archives", too_large=too_large,
                        skipped=skipped)


def _top_folder(dest: Path) -> Path:
    """An archive of one folder (songs.zip holding songs/...): that folder is the dataset's top."""
    entries = [e for e in dest.iterdir() if _visible((e.name,))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def _clean_name(name: str | None) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise _invalid("name", "The dataset name is empty.", "invalid_name")
    if len(name) > 100:
        raise _invalid("name", f"The dataset name is {len(name)} characters long; the limit is 100.", "invalid_name")
    return name


def _invalid(fieldname: str, message: str, code: str, **extra) -> InvalidValues:
    return InvalidValues(message, code=code, errors=[{"field": fieldname, "message": message}], **extra)


class DatasetService:
    """Owns datasets: their records, their clips' audio under <data-dir>/datasets/, and their versions."""

    def __init__(self, engine, registry, queue, data_dir: Path, import_roots: list[Path]):
        self.engine, self.registry, self.queue = engine, registry, queue
        self.data_dir, self.import_roots = Path(data_dir), list(import_roots)
        self.datasets_dir = self.data_dir / "datasets"

    # ---- creating --------------------------------------------------------------------------------------------
    def _spec(self, model_id: str | None) -> ModelSpec:
        return self.registry.get(model_id or self.queue.target_model() or self.registry.default_model)

    def _plan(self, req: CreateDatasetRequest, spec: ModelSpec) -> _Plan:
        max_clip = req.max_clip_s if req.max_clip_s is not None else spec.max_duration_s
        if max_clip > spec.max_duration_s:
            raise _invalid("max_clip_s", f"Clips can be at most {spec.max_duration_s:g} s long for "
                                         f"{spec.display_name} (its window), not {max_clip:g} s.", "clip_too_long",
                           max_clip_s=spec.max_duration_s)
        if req.overlap_s >= max_clip:
            raise _invalid("overlap_s", f"The overlap ({req.overlap_s:g} s) must be shorter than the clips "
                                        f"({max_clip:g} s).", "overlap_too_long")
        if req.min_clip_s > max_clip:
            raise _invalid("min_clip_s", f"The shortest clip kept ({req.min_clip_s:g} s) is longer than the "
                                         f"longest clip ({max_clip:g} s).", "min_clip_too_long")
        return _Plan(spec.sample_rate, spec.channels, max_clip, req.overlap_s, req.min_clip_s)

    @contextmanager
    def incoming(self) -> Iterator[Path]:
        """A temporary folder inside <data-dir>/datasets (the disk the dataset ends up on, never the shared /tmp),
        removed afterwards; start-up removes those a killed studio left (`.incoming-*`). A full or read-only disk
        leaves as 507 disk_full / 503 storage_unavailable."""
        with storage_writes(self.datasets_dir):
            self.datasets_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".incoming-", dir=self.datasets_dir) as tmp:
                yield Path(tmp)

    def create(self, req: CreateDatasetRequest, *, upload: Path | None = None, upload_name: str | None = None,
               user: str = LOCAL_USER, on_progress: ProgressFn | None = None) -> DatasetInfo:
        """Read, validate, slice and resample; record the dataset, all or nothing. No usable clip: InvalidValues
        (code no_usable_clips) carrying the report."""
        progress = on_progress or (lambda fraction, message: None)
        spec = self._spec(req.model_id)
        plan = self._plan(req, spec)
        if req.name is not None:
            _clean_name(req.name)  # refused before any file is read
        if upload is not None and upload.is_file() and upload.stat().st_size > MAX_UPLOAD_BYTES:
            raise TooLarge(f"The archive is over {size_text(MAX_UPLOAD_BYTES)}, the most the studio takes.",
                           code="upload_too_large", max_bytes=MAX_UPLOAD_BYTES)
        with self.incoming() as tmp:
            unsupported: list[str] = []
            if req.source == "folder":
                if not req.path:
                    raise _invalid("path", "Give the folder's path.", "missing_path")
                root = import_folder(req.path, self.import_roots)
                if root is None:
                    roots = ", ".join(str(r) for r in self.import_roots)
                    raise InvalidRequest(f"{req.path[:200]} is outside the folders datasets may be read from "
                                         f"({roots}). Copy it into one of them, or upload it as an archive.",
                                         code="path_not_allowed", allowed_roots=[str(r) for r in self.import_roots])
                default_name, source = root.name, f"folder:{root}"
                found = scan_folder(root, self.import_roots)
            else:
                if upload is None:
                    raise InvalidRequest("Upload a .zip or .tar.gz archive of the dataset folder.",
                                         code="missing_archive")
                shown = Path(upload_name or upload.name).name
                progress(None, "Unpacking the archive")
                extract(upload, tmp / "archive", shown, _dataset_archive(unsupported))
                root = _top_folder(tmp / "archive")
                if root != tmp / "archive":  # the report names files inside the archive's one folder
                    top = root.name + "/"
                    unsupported[:] = [n.removeprefix(top) for n in unsupported]
                default_name, source = archive_stem(shown), f"upload:{shown}"
                found = scan_folder(root)
            name = _clean_name(req.name or default_name)
            found.unsupported += unsupported
            stage = tmp / "dataset"
            (stage / "clips").mkdir(parents=True)
            report, prepared = self._prepare(root, found, plan, stage, progress)
            if not prepared:
                first = (f"{report.problems[0].file}: {report.problems[0].message}" if report.problems
                         else "the folder holds no audio file")
                what = "no audio file (wav, flac, ogg, mp3)" if not found.audio else "no usable clip"
                raise InvalidValues(f"Nothing was created: the {'folder' if req.source == 'folder' else 'archive'} "
                                    f"has {what}. {'First problem: ' + first if found.audio else ''}".strip(),
                                    code="no_usable_clips", report=report.model_dump())
            progress(0.98, "Saving")
            folder_rel = Path("datasets") / uuid.uuid4().hex
            dataset = Dataset(name=name, model_id=spec.id, sample_rate=plan.sample_rate, channels=plan.channels,
                              max_clip_s=plan.max_clip_s, overlap_s=plan.overlap_s, source=source[:1000],
                              folder=folder_rel.as_posix(), report=report.model_dump(), version=1,
                              content_hash=content_hash([(c.hash, c.caption) for c in prepared]), created_by=user)
            clips = [DatasetClip(dataset_id=0, position=i, source_file=c.source_file, start_s=c.start_s,
                                 duration_s=c.duration_s, caption=c.caption, excluded=False,
                                 file=(folder_rel / c.file).as_posix(), hash=c.hash)
                     for i, c in enumerate(prepared)]
            dest = self.data_dir / folder_rel
            os.replace(stage, dest)  # files first, then the record; undone if the record fails
            try:
                with session_scope(self.engine) as session:
                    dataset = add_dataset(session, dataset, clips)
                    dataset_id = dataset.id
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
        progress(1.0, "Done")
        return self.get(dataset_id)

    def _prepare(self, root: Path, found: _Found, plan: _Plan, stage: Path,
                 progress: ProgressFn) -> tuple[DatasetReport, list[_Prepared]]:
        captions, caption_source, problems = read_captions(root, found)
        problems += [ReportProblem(file=rel, code="unsupported_format", message=(
            f"{Path(rel).suffix} files cannot be read; convert it to wav, flac, ogg or mp3."))
            for rel in found.unsupported]
        prepared: list[_Prepared] = []
        used = sliced = resampled = 0
        for i, rel in enumerate(found.audio):
            progress(i / max(1, len(found.audio)) * 0.95, f"Reading {rel} ({i + 1} of {len(found.audio)})")
            caption = captions.get(rel)
            if caption is None:
                problems.append(ReportProblem(file=rel, code="missing_caption", message=(
                    "No caption: add a .txt file of the same name, or a row in metadata.jsonl / metadata.csv.")))
                continue
            if not caption:
                problems.append(ReportProblem(file=rel, code="empty_caption", message="The caption is empty."))
                continue
            clips, was_sliced, was_resampled = prepare_file(root / rel, rel, caption, plan, stage, len(prepared),
                                                            problems)
            if clips:
                used += 1
                sliced += was_sliced
                resampled += was_resampled
                prepared += clips
            if len(prepared) > MAX_CLIPS:
                raise InvalidRequest(f"The files give more than {MAX_CLIPS} clips; split them into several "
                                     "datasets.", code="too_many_clips", max_clips=MAX_CLIPS)
        report = DatasetReport(files_found=len(found.audio), files_used=used, clips=len(prepared),
                               total_minutes=round(sum(c.duration_s for c in prepared) / 60, 3),
                               sliced_files=sliced, resampled_files=resampled, caption_source=caption_source,
                               problems=problems)
        return report, prepared

    # ---- reading ---------------------------------------------------------------------------------------------
    def _live(self, session, dataset_id: int, lock: bool = False) -> Dataset:
        """lock: for an edit (first in its session): the dataset's row stays locked until the commit, so two edits
        (threads or studios sharing the database) never both write version N+1, nor an edit a deleted dataset."""
        d = get_dataset(session, dataset_id, lock=lock)
        if d is None or d.deleted_at is not None:
            raise NotFound(f"There is no dataset {dataset_id}.", code="dataset_not_found", dataset_id=dataset_id)
        return d

    @staticmethod
    def _summary_fields(d: Dataset, used: int, excluded: int, seconds: float) -> dict:
        return dict(id=d.id, name=d.name, model_id=d.model_id, sample_rate=d.sample_rate, channels=d.channels,
                    max_clip_s=d.max_clip_s, overlap_s=d.overlap_s, clips=used, excluded=excluded,
                    total_minutes=round(seconds / 60, 3), version=d.version, content_hash=d.content_hash,
                    source=d.source, created_by=d.created_by, created_at=d.created_at, updated_at=d.updated_at)

    def _info(self, session, d: Dataset) -> DatasetInfo:
        clips = clips_of(session, d.id)
        used = [c for c in clips if not c.excluded]
        return DatasetInfo(**self._summary_fields(d, len(used), len(clips) - len(used),
                                                  sum(c.duration_s for c in used)),
                           report=DatasetReport.model_validate(d.report))

    def list(self) -> list[DatasetSummary]:
        with session_scope(self.engine) as session:
            counts = clip_counts(session)
            return [DatasetSummary(**self._summary_fields(d, *counts.get(d.id, (0, 0, 0.0))))
                    for d in list_datasets(session)]

    def get(self, dataset_id: int) -> DatasetInfo:
        with session_scope(self.engine) as session:
            return self._info(session, self._live(session, dataset_id))

    def clips(self, dataset_id: int) -> list[ClipInfo]:
        with session_scope(self.engine) as session:
            self._live(session, dataset_id)
            return [ClipInfo(id=c.id, position=c.position, source_file=c.source_file, start_s=c.start_s,
                             duration_s=c.duration_s, caption=c.caption, excluded=c.excluded,
                             audio_url=clip_audio_url(dataset_id, c.id)) for c in clips_of(session, dataset_id)]

    def clip_audio(self, dataset_id: int, clip_id: int) -> Path:
        with session_scope(self.engine) as session:
            self._live(session, dataset_id)
            clip = get_clip(session, dataset_id, clip_id)
            if clip is None:
                raise NotFound(f"Dataset {dataset_id} has no clip {clip_id}.", code="clip_not_found",
                               dataset_id=dataset_id, clip_id=clip_id)
            path = self.data_dir / clip.file
        if not path.is_file():
            raise NotFound(f"The audio of clip {clip_id} is missing from {path.parent}.", code="audio_not_found",
                           dataset_id=dataset_id, clip_id=clip_id)
        return path

    # ---- editing ---------------------------------------------------------------------------------------------
    def edit_clips(self, dataset_id: int, edit: ClipsEdit, user: str = LOCAL_USER) -> DatasetInfo:
        """Apply the edits as one new version (nothing really changed: the version stays)."""
        with session_scope(self.engine) as session:
            d = self._live(session, dataset_id, lock=True)
            clips = clips_of(session, dataset_id)
            by_id = {c.id: c for c in clips}
            unknown = sorted({c.id for c in edit.captions if c.id not in by_id}
                             | {i for i in (edit.clip_ids or []) if i not in by_id})
            if unknown:
                shown = ", ".join(map(str, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
                raise _invalid("captions" if any(c.id in unknown for c in edit.captions) else "clip_ids",
                               f"Dataset {dataset_id} has no clip {shown}.", "clip_not_found",
                               clip_ids=unknown[:100])
            new = {c.id: (c.caption, c.excluded) for c in clips}
            for item in edit.captions:
                caption, excluded = new[item.id]
                new[item.id] = (caption if item.caption is None else item.caption,
                                excluded if item.excluded is None else item.excluded)
            chosen = [c.id for c in clips] if edit.clip_ids is None else list(dict.fromkeys(edit.clip_ids))
            for clip_id in chosen:
                caption, excluded = new[clip_id]
                if edit.caption is not None:
                    caption = edit.caption
                if edit.find:
                    caption = caption.replace(edit.find, edit.replace)
                if edit.prefix:
                    caption = edit.prefix + caption
                if edit.suffix:
                    caption = caption + edit.suffix
                new[clip_id] = (caption, excluded if edit.excluded is None else edit.excluded)
            empty, too_long = [], []
            for clip_id, (caption, excluded) in new.items():
                cleaned = " ".join(caption.split())
                if len(cleaned) > MAX_CAPTION_CHARS:
                    too_long.append(clip_id)
                elif not cleaned and not excluded:
                    empty.append(clip_id)
                new[clip_id] = (cleaned, excluded)
            if too_long:
                raise _invalid("caption", f"The captions of clips {', '.join(map(str, too_long[:10]))} would be "
                                          f"over {MAX_CAPTION_CHARS} characters.", "caption_too_long",
                               clip_ids=too_long[:100])
            if empty:
                raise _invalid("caption", f"The captions of clips {', '.join(map(str, empty[:10]))} would be empty: "
                                          "a clip used for training needs a caption (or exclude it).",
                               "empty_caption", clip_ids=empty[:100])
            changed = [c for c in clips if (c.caption, c.excluded) != new[c.id]]
            if not changed:
                return self._info(session, d)
            for c in changed:
                c.caption, c.excluded = new[c.id]
            d.version += 1
            d.content_hash = content_hash([(c.hash, c.caption) for c in clips if not c.excluded])
            save_dataset(session, d, changed)
            log.info("dataset %s v%s: %d clip(s) edited by %s", d.id, d.version, len(changed), user)
            return self._info(session, d)

    # ---- deleting --------------------------------------------------------------------------------------------
    def delete(self, dataset_id: int) -> DatasetInfo:
        """Refused (409 dataset_in_use) while a queued or running training run uses it. Soft delete: the record
        stays (runs that trained on it keep their reference), its clips' audio is removed."""
        with session_scope(self.engine) as session:
            d = self._live(session, dataset_id, lock=True)  # no run starts on it meanwhile (training locks it too)
            runs = active_runs_using(session, dataset_id)
            if runs:
                raise Conflict(f"Dataset {d.name} is used by training run {', '.join(map(str, runs))}, which is "
                               "queued or running: stop it first.", code="dataset_in_use", run_ids=runs)
            info = self._info(session, d)
            d.deleted_at = utcnow()
            save_dataset(session, d)
            folder = self.data_dir / d.folder
        # after the commit: a kill here leaves a folder no live dataset names, removed at the next start
        if folder.resolve().is_relative_to(self.datasets_dir.resolve()):
            shutil.rmtree(folder, ignore_errors=True)
        return info

    # ---- for training ----------------------------------------------------------------------------------------
    def training_clips(self, dataset_id: int) -> tuple[DatasetSummary, list[TrainingClip]]:
        """The dataset (its version and hash now) and its clips that are not excluded; InvalidRequest when none
        is left."""
        with session_scope(self.engine) as session:
            d = self._live(session, dataset_id)
            clips = [c for c in clips_of(session, dataset_id) if not c.excluded]
            info = self._info(session, d)
        if not clips:
            raise InvalidRequest(f"Every clip of dataset {info.name} is excluded: include some to train on it.",
                                 code="dataset_empty", dataset_id=dataset_id)
        summary = DatasetSummary(**info.model_dump(exclude={"report"}))
        return summary, [TrainingClip(clip_id=c.id, file=(self.data_dir / c.file).resolve(), caption=c.caption,
                                      hash=c.hash) for c in clips]


def clip_audio_url(dataset_id: int, clip_id: int) -> str:
    return f"/api/datasets/{dataset_id}/clips/{clip_id}/audio"
