"""Audio uploads: a clip to continue, a melody to follow. Each file is read once when it arrives (soundfile: wav,
flac, ogg, mp3), refused with a clear code when it is not usable, kept as sent under <data>/uploads/ and recorded;
generations refer to it by id and read it at the model's rate and channels (soxr). A file that fails leaves nothing
behind: it is staged in uploads/ under a dot-name, checked, then renamed into place with its record."""
from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from pydantic import BaseModel, Field
from sqlmodel import select

from studio.db.engine import session_scope
from studio.db.models import AudioUpload, as_utc
from studio.errors import InvalidRequest, NotFound
from studio.storage import storage_writes
from studio.users import LOCAL_USER

log = logging.getLogger(__name__)

FORMATS = {"WAV": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}  # soundfile's major formats we take
MAX_UPLOAD_BYTES = 200 * 2**20  # 10 minutes of 44.1 kHz stereo float WAV is ~210 MB; compressed files far less
MAX_UPLOAD_SECONDS = 600.0  # a clip to continue or a melody: minutes, never hours
UPLOAD_ID_BYTES = 12
STAGING_PREFIX = ".incoming-"


class UploadInfo(BaseModel):
    id: str = Field(description="refer to the upload by this id (continue_upload_id, melody_upload_id)")
    filename: str = Field(description="the file's name as sent")
    format: str = Field(description="wav, flac, ogg or mp3")
    seconds: float
    sample_rate: int
    channels: int
    size_bytes: int
    uploaded_by: str
    created_at: str
    audio_url: str


def _info(row: AudioUpload) -> UploadInfo:
    return UploadInfo(id=row.id, filename=row.filename, format=row.format, seconds=row.seconds,
                      sample_rate=row.sample_rate, channels=row.channels, size_bytes=row.size_bytes,
                      uploaded_by=row.uploaded_by, created_at=as_utc(row.created_at).isoformat(),
                      audio_url=f"/api/uploads/{row.id}/audio")


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """(samples, c) -> (samples, channels): averaged to mono, mono doubled to stereo, more channels down to the
    first two."""
    if audio.shape[1] == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=1, keepdims=True)
    if audio.shape[1] == 1:
        return np.repeat(audio, channels, axis=1)
    return audio[:, :channels]


def read_audio_file(path: Path, sample_rate: int, channels: int) -> np.ndarray:
    """A file's samples as float32 (samples, channels) at `sample_rate` (soxr, its high-quality default)."""
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = to_channels(audio, channels)
    if rate != sample_rate:
        import soxr

        audio = soxr.resample(audio, rate, sample_rate)
    return np.ascontiguousarray(audio, dtype=np.float32)


class UploadService:
    def __init__(self, engine, data_dir: Path, max_bytes: int = MAX_UPLOAD_BYTES,
                 max_seconds: float = MAX_UPLOAD_SECONDS):
        self.engine, self.data_dir = engine, Path(data_dir)
        self.folder = self.data_dir / "uploads"
        self.max_bytes, self.max_seconds = max_bytes, max_seconds

    def remove_leftovers(self) -> None:
        """Start-up: files a killed upload left staged, and files without a record (a kill between the rename and
        the commit) go."""
        if not self.folder.is_dir():
            return
        with session_scope(self.engine) as session:
            known = {Path(f).name for f in session.exec(select(AudioUpload.file))}
        for child in self.folder.iterdir():
            if child.name.startswith(STAGING_PREFIX) or (child.is_file() and child.name not in known):
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)

    @contextmanager
    def incoming(self) -> Iterator[Path]:
        """A staging path inside uploads/ (the disk the file ends up on), removed afterwards unless saved."""
        with storage_writes(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=STAGING_PREFIX, dir=self.folder)
            os.close(fd)
            try:
                yield Path(tmp)
            finally:
                Path(tmp).unlink(missing_ok=True)

    def save(self, staged: Path, filename: str, user: str = LOCAL_USER) -> UploadInfo:
        """Check the staged file and keep it as an upload (moved, not copied). InvalidRequest unsupported_audio /
        unreadable_audio / empty_audio / audio_too_long when it is not usable (the staged file is left to its
        owner, who removes it)."""
        import soundfile as sf

        name = Path(filename or "upload").name[:255] or "upload"
        size = staged.stat().st_size
        if size > self.max_bytes:
            raise InvalidRequest(f"{name} is {size / 2**20:.0f} MB; the most an audio upload may be is "
                                 f"{self.max_bytes / 2**20:.0f} MB.", code="upload_too_large", max_bytes=self.max_bytes)
        if size == 0:
            raise InvalidRequest(f"{name} is empty (0 bytes): there is no audio in it.", code="empty_audio",
                                 filename=name)
        try:
            info = sf.info(str(staged))
        except Exception:  # noqa: BLE001 - libsndfile says "Format not recognised" and the like
            raise InvalidRequest(f"{name} is not an audio file the studio reads (wav, flac, ogg or mp3).",
                                 code="unsupported_audio", filename=name) from None
        fmt = FORMATS.get(info.format)
        if fmt is None:
            raise InvalidRequest(f"{name} is {info.format_info or info.format} audio; the studio takes wav, flac, "
                                 "ogg or mp3.", code="unsupported_audio", filename=name)
        try:
            with sf.SoundFile(str(staged)) as f:  # decode it all once: a truncated file fails here, not in a job
                frames = 0
                for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                    frames += len(block)
                    if not np.isfinite(block).all():
                        raise ValueError("it holds samples that are not numbers")
        except Exception as exc:  # noqa: BLE001 - damaged files raise many kinds of errors
            raise InvalidRequest(f"{name} could not be decoded: {exc}", code="unreadable_audio",
                                 filename=name) from None
        seconds = frames / info.samplerate if info.samplerate else 0.0
        if frames == 0 or seconds <= 0:
            raise InvalidRequest(f"{name} holds no audio.", code="empty_audio", filename=name)
        if seconds > self.max_seconds:
            raise InvalidRequest(f"{name} is {seconds:.0f} s long; an audio upload may be {self.max_seconds:.0f} s "
                                 "at most.", code="audio_too_long", filename=name, max_seconds=self.max_seconds)
        upload_id = secrets.token_hex(UPLOAD_ID_BYTES)
        final = self.folder / f"{upload_id}.{fmt}"
        with storage_writes(self.folder):
            os.replace(staged, final)
            try:
                row = AudioUpload(id=upload_id, filename=name, file=final.relative_to(self.data_dir).as_posix(),
                                  format=fmt, seconds=round(seconds, 3), sample_rate=int(info.samplerate),
                                  channels=int(info.channels), size_bytes=size, uploaded_by=user)
                with session_scope(self.engine) as session:
                    session.add(row)
                    session.commit()
                    session.refresh(row)
                    return _info(row)
            except BaseException:
                final.unlink(missing_ok=True)
                raise

    def _row(self, upload_id: str) -> AudioUpload:
        with session_scope(self.engine) as session:
            row = session.get(AudioUpload, upload_id) if isinstance(upload_id, str) and len(upload_id) <= 32 \
                else None
            if row is None:
                raise NotFound(f"There is no audio upload {upload_id!r}: upload the file first (POST /api/uploads).",
                               code="upload_not_found", upload_id=str(upload_id)[:40])
            session.expunge(row)
            return row

    def get(self, upload_id: str) -> UploadInfo:
        return _info(self._row(upload_id))

    def path(self, upload_id: str) -> Path:
        """The upload's file (checked to be inside uploads/: the record's path is never trusted blindly)."""
        row = self._row(upload_id)
        path = (self.data_dir / row.file).resolve()
        if path.parent != self.folder.resolve() or not path.is_file():
            raise NotFound(f"The file of audio upload {upload_id!r} is gone.", code="upload_not_found",
                           upload_id=upload_id)
        return path

    def read(self, upload_id: str, sample_rate: int, channels: int,
             max_seconds: float | None = None, keep: str = "end") -> tuple[np.ndarray, float, bool]:
        """(samples (n, channels) float32 at sample_rate, the upload's length in seconds, whether it was trimmed)
        trimmed to max_seconds: keep 'end' (a clip to continue: what comes right before the new music) or
        'start' (a melody)."""
        row = self._row(upload_id)
        audio = read_audio_file(self.path(upload_id), sample_rate, channels)
        trimmed = False
        if max_seconds is not None:
            most = max(1, math.floor(max_seconds * sample_rate))
            if len(audio) > most:
                audio = audio[-most:] if keep == "end" else audio[:most]
                trimmed = True
        return np.ascontiguousarray(audio), row.seconds, trimmed
