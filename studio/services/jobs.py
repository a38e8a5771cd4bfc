"""Job records for History: search (filters, sorting, paging), show, rate, delete, and locate their audio inside the
data directory.

The one rule of what a person may see of a job lives here (JobService.visible): a clip of a blind A/B test is never
shown or served through the jobs (it would reveal a side), and evaluation-run clips stay out of the default listing.
A member sees and manages their own generations only (another's job is unknown to them: 404 job_not_found, which
does not reveal that it exists); an admin sees everyone's. Without auth the one local person is an admin.
"""
from __future__ import annotations

import os

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.db.adapters import get_adapter
from studio.db.engine import session_scope
from studio.db.jobs import (JobSort, delete_job, delete_rating, find_job, job_file_owners, job_scores, job_submitters,
                            prompt_contains, rating_stats, search_jobs, set_rating, user_ratings)
from studio.db.models import Job, JobStatus, UTCTimestamp
from studio.deletions import remove_files, write_marker
from studio.errors import Conflict, InvalidValues, NotFound
from studio.services.audio_out import download_name, media_type
from studio.storage import storage_writes
from studio.users import Actor

DELETED_ADAPTER = "Deleted Adapter"
MIN_STARS, MAX_STARS = 1, 5
MAX_ID = 2**63 - 1
# person: people's own generations (History's default); evaluation: clips of evaluation runs; training: audition
# clips of training runs' checkpoints; all: every one of those. Clips of blind A/B tests are in none of them.
JobSource = Literal["person", "evaluation", "training", "all"]
NO_ADAPTER_FILTER = "none"
OVER = ("succeeded", "failed", "cancelled", "interrupted")


class JobRating(BaseModel):
    """A job's ratings as one user sees them: their own stars, and everyone's average and count."""
    job_id: int
    mine: int | None = Field(description="the asking user's stars (1-5), None: not rated by them")
    average: float | None = Field(description="the average of every user's stars, None: not rated")
    count: int = Field(description="how many users rated it")


class MelodyUsed(BaseModel):
    """The melody a job followed (melody models)."""
    upload_id: str = Field(description="the audio upload it came from (GET /api/uploads/{id})")
    seconds: float = Field(description="seconds of the upload used, from its start (at most one window)")
    trimmed_from_s: float | None = Field(None, description="the upload's length when it was cut to one window")
class StackItem(BaseModel):
    """One adapter of the stack a job ran with."""
    adapter_id: int
    label: str = Field(description="'name vN' when the job ran")
    strength: float = Field(description="0 (no effect) to 2; 1: as trained")
    deleted: bool = Field(False, description="the adapter was deleted since (the job stays readable)")


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
    adapter_deleted: bool = Field(False, description="the adapter it used was deleted since (the job stays readable)")
    adapter_stack: list[StackItem] | None = Field(None, description=(
        "the adapters and strengths it ran with, in order (None: the base model, or adapter_id at strength 1)"))
    evaluation_id: int | None = Field(None, description="the evaluation run this clip was made for (None: a "
                                                        "person's own generation)")
    continuation: dict[str, Any] | None = Field(None, description=(
        "what it continues: {source: upload|job, upload_id|job_id, seconds (of audio the model continued), "
        "trimmed_from_s (the source's length when only its end was used), included}; None: from silence"))
    has_audio: bool
    has_codes: bool = Field(description="its generated codes are kept beside the audio")
    created_at: UTCTimestamp = Field(description="accepted into the queue")
    started_at: UTCTimestamp | None
    finished_at: UTCTimestamp | None
    elapsed_s: float | None = Field(description="started -> finished")
    batch_size: int | None = Field(description="jobs decoded together with this one (itself included)")
    loudness_lufs: float | None = Field(description="integrated loudness of the audio file (None: undefined)")
    true_peak_dbtp: float | None = Field(description="true peak of the audio file, decoded (None: silence)")
    rating: JobRating = Field(description="the asking user's rating, and everyone's average and count")
    scores: dict[str, float] = Field(default_factory=dict, description="automatic scores: scorer -> value")
    melody: MelodyUsed | None = Field(None, description="the melody it followed (None: text only)")


class JobQuery(BaseModel):
    """History's filters, sorting and paging (every filter optional; they combine with AND)."""
    model_config = ConfigDict(extra="forbid")

    model_id: str | None = Field(None, description="jobs of this model")
    adapter: int | Literal["none"] | None = Field(None, description="jobs with this adapter id, or 'none': without")
    status: JobStatus | None = None
    min_rating: int | None = Field(None, ge=MIN_STARS, le=MAX_STARS, description="average stars at least")
    max_rating: int | None = Field(None, ge=MIN_STARS, le=MAX_STARS, description="average stars at most")
    rated: bool | None = Field(None, description="true: rated by someone; false: not rated yet")
    submitted_by: str | None = Field(None, description=(
        "who submitted them (exact); a member's own jobs only whatever this says"))
    text: str | None = Field(None, description="in the prompt: a case-insensitive substring")
    source: JobSource = "person"
    evaluation_id: int | None = Field(None, ge=1, le=MAX_ID, description="clips of this evaluation run")
    sort: JobSort = "newest"
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=MAX_ID)


class JobPage(BaseModel):
    total: int = Field(description="jobs matching the filters, on every page")
    items: list[JobInfo]


class JobDeleted(BaseModel):
    job_id: int
    files_removed: list[str] = Field(description="the job's files removed (relative to the data directory)")


def _refuse(field: str, message: str, code: str = "invalid_parameter") -> InvalidValues:
    return InvalidValues(message, code=code, errors=[{"field": field, "message": message}])


def _text(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    if "\x00" in value:
        raise _refuse(field, f"{field} holds a NUL character.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(field, f"{field} holds a character that is not valid text (a lone surrogate).") from None
    return value


class JobService:
    def __init__(self, engine, data_dir: Path):
        self.engine, self.data_dir = engine, Path(data_dir)
        self.outputs_dir = self.data_dir / "outputs"

    # ---- who may see what ----------------------------------------------------------------------------------
    @staticmethod
    def visible(source: JobSource = "all", actor: Actor | None = None) -> list:
        """The conditions on Job of what History and /api/jobs* may show: never a blind A/B test's clip; people's
        own generations and/or evaluation-run clips as `source` says. actor: who asks (None: the studio itself);
        a member sees their own generations only (evaluation and training clips are an admin's business)."""
        if actor is not None and not actor.is_admin:
            source = "person"
        where = [Job.abtest_id.is_(None)]
        if source == "person":
            where += [Job.evaluation_id.is_(None), Job.training_run_id.is_(None)]
        elif source == "evaluation":
            where.append(Job.evaluation_id.is_not(None))
        elif source == "training":
            where.append(Job.training_run_id.is_not(None))
        if actor is not None and not actor.is_admin:
            where.append(Job.submitted_by == actor.name)
        return where

    def _find(self, session, job_id: int, include_clips: bool = False, actor: Actor | None = None,
              lock: bool = False) -> Job:
        """include_clips: for the services that own A/B clips (never for a person's request). actor: who asks
        (None: the studio itself); another member's job is unknown to a member, like an A/B clip. lock: the job's
        row stays locked until the session's transaction ends (its status cannot change meanwhile)."""
        where = [] if include_clips else self.visible("all", actor)
        job = find_job(session, job_id, where, lock=lock) if 1 <= job_id <= MAX_ID else None
        if job is None:  # an A/B clip is unknown here: even its existence would say something
            raise NotFound(f"There is no job {job_id}.", code="job_not_found", job_id=job_id)
        return job

    # ---- reading -------------------------------------------------------------------------------------------
    def _infos(self, session, rows: list[tuple[Job, float | None, int]], user: str | None) -> list[JobInfo]:
        ids = [job.id for job, _, _ in rows]
        mine = user_ratings(session, ids, user) if user is not None else {}
        scores = job_scores(session, ids)
        adapters: dict[int, Any] = {}
        out = []
        for job, average, count in rows:
            label, deleted = None, False
            if job.adapter_id is not None:
                if job.adapter_id not in adapters:
                    adapters[job.adapter_id] = get_adapter(session, job.adapter_id)
                a = adapters[job.adapter_id]
                deleted = a is None or a.deleted_at is not None
                label = DELETED_ADAPTER if deleted else a.label
            fields = job.model_dump(exclude={"output_file", "codes_file", "abtest_id", "adapter_stack"})
            stack = None
            if job.adapter_stack:
                stack = []
                for item in job.adapter_stack:
                    adapter_id = int(item["adapter_id"])
                    if adapter_id not in adapters:
                        adapters[adapter_id] = get_adapter(session, adapter_id)
                    a = adapters[adapter_id]
                    stack.append(StackItem(adapter_id=adapter_id, label=str(item.get("label") or adapter_id),
                                           strength=float(item["strength"]),
                                           deleted=a is None or a.deleted_at is not None))
            out.append(JobInfo(
                **fields, adapter_label=label, adapter_deleted=deleted, adapter_stack=stack, has_audio=job.output_file is not None,
                has_codes=job.codes_file is not None, scores=scores.get(job.id, {}),
                rating=JobRating(job_id=job.id, mine=mine.get(job.id), average=average, count=count)))
        return out

    def search(self, query: JobQuery | None = None, actor: Actor | None = None) -> JobPage:
        """A page of jobs matching the query, and how many match in all. actor: who asks (a member: their own jobs
        only, whatever the query says), whose own rating each carries; None: the studio itself (no rating)."""
        q = query or JobQuery()
        if q.min_rating is not None and q.max_rating is not None and q.min_rating > q.max_rating:
            raise _refuse("min_rating", f"min_rating {q.min_rating} is above max_rating {q.max_rating}.")
        if isinstance(q.adapter, int) and not 1 <= q.adapter <= MAX_ID:
            raise _refuse("adapter", "adapter must be an adapter id (1 to 2^63-1) or 'none'.")
        where = self.visible("all" if q.evaluation_id is not None and q.source == "person" else q.source, actor)
        if q.model_id is not None:
            where.append(Job.model_id == _text(q.model_id, "model"))
        if q.adapter == NO_ADAPTER_FILTER:
            where.append(Job.adapter_id.is_(None))
        elif q.adapter is not None:
            where.append(Job.adapter_id == q.adapter)
        if q.status is not None:
            where.append(Job.status == q.status)
        if q.submitted_by is not None:
            where.append(Job.submitted_by == _text(q.submitted_by, "submitted_by"))
        if q.text:
            where.append(prompt_contains(_text(q.text, "q")))
        if q.evaluation_id is not None:
            where.append(Job.evaluation_id == q.evaluation_id)
        with session_scope(self.engine) as session:
            rows, total = search_jobs(session, where, min_rating=q.min_rating, max_rating=q.max_rating,
                                      rated=q.rated, sort=q.sort, limit=q.limit, offset=q.offset)
            return JobPage(total=total, items=self._infos(session, rows, actor.name if actor else None))

    def list(self, limit: int = 50, offset: int = 0, actor: Actor | None = None) -> list[JobInfo]:
        """People's own jobs, newest first (History's default view)."""
        return self.search(JobQuery(limit=max(1, min(limit, 500)), offset=max(0, offset)), actor).items

    def submitters(self, actor: Actor | None = None) -> list[str]:
        """Who has generations the actor may see, by name (History's and the queue's user filter)."""
        with session_scope(self.engine) as session:
            return job_submitters(session, self.visible("person", actor))

    def get(self, job_id: int, actor: Actor | None = None, *, include_clips: bool = False) -> JobInfo:
        """A job the actor may see (NotFound for an unknown job, another member's and an A/B clip alike), with
        the actor's own rating (None: the studio itself, no rating). include_clips=True: any job, for the services
        that make and read A/B clips (the A/B test's own, never a person's request)."""
        with session_scope(self.engine) as session:
            job = self._find(session, job_id, include_clips, actor)
            average, count = rating_stats(session, [job.id]).get(job.id, (None, 0))
            return self._infos(session, [(job, average, count)], actor.name if actor else None)[0]

    # ---- ratings -------------------------------------------------------------------------------------------
    def rating(self, job_id: int, actor: Actor) -> JobRating:
        with session_scope(self.engine) as session:
            self._find(session, job_id, actor=actor)
            average, count = rating_stats(session, [job_id]).get(job_id, (None, 0))
            return JobRating(job_id=job_id, mine=user_ratings(session, [job_id], actor.name).get(job_id),
                             average=average, count=count)

    def rate(self, job_id: int, actor: Actor, stars: int) -> JobRating:
        """The actor's 1-5 stars for a succeeded job they may see (one rating per user per job; rating again
        changes it)."""
        if isinstance(stars, bool) or not isinstance(stars, int) or not MIN_STARS <= stars <= MAX_STARS:
            raise _refuse("stars", f"stars must be a whole number from {MIN_STARS} to {MAX_STARS}.",
                          "invalid_rating")
        with session_scope(self.engine) as session:
            job = self._find(session, job_id, actor=actor, lock=True)  # not deleted while the rating is written
            if job.status != "succeeded":
                raise Conflict(f"Job {job_id} is {job.status}: only a finished job with audio can be rated.",
                               code="job_not_rateable", job_id=job_id, status=job.status)
            set_rating(session, job_id, actor.name, stars)
        return self.rating(job_id, actor)

    def unrate(self, job_id: int, actor: Actor) -> JobRating:
        """Remove the actor's rating of a job (nothing to remove is fine)."""
        with session_scope(self.engine) as session:
            self._find(session, job_id, actor=actor)
            delete_rating(session, job_id, actor.name)
        return self.rating(job_id, actor)

    # ---- deleting ------------------------------------------------------------------------------------------
    def delete(self, job_id: int, actor: Actor | None = None) -> JobDeleted:
        """Delete a finished job: its record, ratings and scores in one transaction, then its audio and codes files
        (only after the commit: a failed commit leaves everything as it was; a marker written before it lets the
        next start finish a removal a kill interrupted). A queued or running job is refused: cancel it first. actor:
        who asks (a member deletes their own jobs only)."""
        with session_scope(self.engine) as session:
            job = self._find(session, job_id, actor=actor, lock=True)  # not rated, rerun or moved while deleted
            if job.status not in OVER:
                raise Conflict(f"Job {job_id} is {job.status}: cancel it first, then delete it.",
                               code="job_not_finished", job_id=job_id, status=job.status)
            if job.evaluation_id is not None:
                raise Conflict(f"Job {job_id} is a clip of evaluation run {job.evaluation_id}: its score counts "
                               "in that run, so it is kept with it.", code="evaluation_clip", job_id=job_id,
                               evaluation_id=job.evaluation_id)
            files = [f for f in (job.output_file, job.codes_file) if f]
            marker = None
            if files:
                with storage_writes(self.outputs_dir):
                    marker = write_marker(self.outputs_dir, job.id, files)
            try:
                delete_job(session, job)
            except BaseException:
                if marker is not None:
                    marker.unlink(missing_ok=True)
                raise
        removed, complete = remove_files(self.data_dir, files)
        if marker is not None and complete:  # else the next start tries again
            marker.unlink(missing_ok=True)
        return JobDeleted(job_id=job_id, files_removed=removed)

    # ---- audio ---------------------------------------------------------------------------------------------
    @staticmethod
    def media_type(path: Path) -> str:
        return media_type(path)

    def download_name(self, job_id: int, path: Path) -> str:
        """The name a download gets: the prompt and job (`lofi-hip-hop-beat_job12.flac`), for jobs recorded before
        files were named so too."""
        return download_name(self.get(job_id).prompt, job_id, path.suffix.lstrip("."))

    def may_read_file(self, actor: Actor, path: str) -> bool:
        """Whether `actor` may download a file Gradio serves from the data directory (`/gradio_api/file=PATH`): a
        job's audio or codes only by who may see the job (a member: their own); other files are not jobs' and left
        to Gradio's own checks."""
        if actor.is_admin:
            return True
        root = self.data_dir.resolve()
        try:
            real = Path(os.path.realpath(path))  # relative: to the working folder, as Gradio reads it
            rel = real.relative_to(root).as_posix()
        except (OSError, ValueError):
            return True  # not in the data directory: not a job's file
        with session_scope(self.engine) as session:
            owners = job_file_owners(session, rel)
        return all(actor.may_see(owner) for owner in owners)

    def audio_path(self, job_id: int, actor: Actor | None = None, *, include_clips: bool = False) -> Path:
        """The job's audio file, inside the data directory (actor, include_clips: as for get)."""
        with session_scope(self.engine) as session:
            job = self._find(session, job_id, include_clips, actor)
        if not job.output_file:
            raise NotFound(f"Job {job_id} has no audio (status: {job.status}).", code="audio_not_found", job_id=job_id)
        root = self.data_dir.resolve()
        path = (root / job.output_file).resolve()
        if not path.is_relative_to(root) or not path.is_file():  # confine paths to the data directory
            raise NotFound(f"The audio file of job {job_id} is missing.", code="audio_not_found", job_id=job_id)
        return path
