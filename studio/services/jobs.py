"""Job records: list, show, and locate their audio inside the data directory."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from studio.db.adapters import get_adapter
from studio.db.engine import session_scope
from studio.db.jobs import get_job, list_jobs
from studio.db.models import Job, JobStatus, UTCTimestamp
from studio.errors import NotFound
from studio.services.audio_out import download_name, media_type

DELETED_ADAPTER = "Deleted Adapter"


class JobInfo(BaseModel):
    id: int
    prompt: str
    model_id: str
    settings: dict[str, Any]
    seed: int
    duration_s: float
    sample_rate: int
    status: JobStatus
    error: str | None
    error_code: str | None = Field(description="failed / interrupted: a stable snake_case code")
    submitted_by: str
    adapter_id: int | None
    adapter_label: str | None = Field(description="'name vN', or 'Deleted Adapter'")
    has_audio: bool
    has_codes: bool = Field(description="its generated codes are kept beside the audio")
    created_at: UTCTimestamp = Field(description="accepted into the queue")
    started_at: UTCTimestamp | None
    finished_at: UTCTimestamp | None
    elapsed_s: float | None = Field(description="started -> finished")
    batch_size: int | None = Field(description="jobs decoded together with this one (itself included)")
    loudness_lufs: float | None = Field(description="integrated loudness of the audio file (None: undefined)")
    true_peak_dbtp: float | None = Field(description="true peak of the audio file, decoded (None: silence)")


def _info(session, job: Job) -> JobInfo:
    fields = job.model_dump(exclude={"output_file", "codes_file"})
    label = None
    if job.adapter_id is not None:
        a = get_adapter(session, job.adapter_id)
        label = DELETED_ADAPTER if a is None or a.deleted_at is not None else a.label
    return JobInfo(**fields, adapter_label=label, has_audio=job.output_file is not None,
                   has_codes=job.codes_file is not None)


class JobService:
    def __init__(self, engine, data_dir: Path):
        self.engine, self.data_dir = engine, Path(data_dir)

    def list(self, limit: int = 50, offset: int = 0) -> list[JobInfo]:
        with session_scope(self.engine) as session:
            return [_info(session, j) for j in list_jobs(session, limit=max(1, min(limit, 500)), offset=max(0, offset))]

    def get(self, job_id: int) -> JobInfo:
        with session_scope(self.engine) as session:
            job = get_job(session, job_id)
            if job is None:
                raise NotFound(f"There is no job {job_id}.", code="job_not_found", job_id=job_id)
            return _info(session, job)

    @staticmethod
    def media_type(path: Path) -> str:
        return media_type(path)

    def download_name(self, job_id: int, path: Path) -> str:
        """The name a download gets: the prompt and job (`lofi-hip-hop-beat_job12.flac`), for jobs recorded before
        files were named so too."""
        return download_name(self.get(job_id).prompt, job_id, path.suffix.lstrip("."))

    def audio_path(self, job_id: int) -> Path:
        with session_scope(self.engine) as session:
            job = get_job(session, job_id)
        if job is None:
            raise NotFound(f"There is no job {job_id}.", code="job_not_found", job_id=job_id)
        if not job.output_file:
            raise NotFound(f"Job {job_id} has no audio (status: {job.status}).", code="audio_not_found", job_id=job_id)
        root = self.data_dir.resolve()
        path = (root / job.output_file).resolve()
        if not path.is_relative_to(root) or not path.is_file():  # confine paths to the data directory
            raise NotFound(f"The audio file of job {job_id} is missing.", code="audio_not_found", job_id=job_id)
        return path
