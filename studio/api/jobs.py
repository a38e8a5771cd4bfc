"""The /api/jobs and /api/queue routes: submit, follow (Server-Sent Events), cancel, resubmit, History (search, show,
rate, delete), download. Clips of blind A/B tests are unknown here (404 job_not_found), and so is another member's
job to a member (admins see everyone's): JobService decides."""
from __future__ import annotations

import base64
from typing import Annotated, Iterator, Literal

import numpy as np
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field

from studio.api.auth import current_actor
from studio.api.errors import error_responses
from studio.api.params import Limit, Offset, RecordId
from studio.context import AppContext
from studio.services.generation import JobAccepted, JobRequest
from studio.services.job_events import AudioChunk
from studio.services.jobs import (MAX_STARS, MIN_STARS, JobDeleted, JobInfo, JobQuery, JobRating, JobSort,
                                  JobSource, JobStatus)
from studio.services.queue import QueueView, audio_url

KEEPALIVE_S = 15.0  # a comment line this often while nothing happens (proxies close idle streams)

GENERATE_REFUSALS = {
    400: "adapter_deleted, adapter_inactive: the adapter cannot be used; unreadable_audio: the melody upload cannot "
         "be read any more",
    404: "adapter_not_found: unknown adapter; upload_not_found: unknown melody upload",
    409: "no_model_loaded, adapter_incompatible; melody_not_supported: a melody for a model that follows text only",
    422: "a value refused (`errors` names each field): invalid_body, invalid_settings, duration_exceeds_limit, "
         "invalid_duration, empty_prompt, prompt_too_long, invalid_seed",
    429: "queue_full: --max-queue jobs wait already; try again after Retry-After seconds",
}


class JobResponse(JobInfo):
    audio_url: str | None


class RatingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    stars: int = Field(ge=MIN_STARS, le=MAX_STARS, description="1 (poor) to 5 (great)")


NOT_FOUND = {404: "job_not_found: unknown job (clips of blind A/B tests, and to a member another person's jobs, "
                   "are unknown here too)"}
USER_FILTER = Query(max_length=200, description=(
    "only this person's jobs (exact name); a member sees their own jobs only, so another's name lists nothing"))
TOTAL_HEADER = {"X-Total-Count": {"description": "jobs matching the filters, on every page",
                                  "schema": {"type": "integer"}}}


class AudioEvent(BaseModel):
    """The `data` of an `audio` event: new audio of a running job, as it decodes."""
    job_id: int
    seq: int = Field(description="0, 1, 2, ... in order")
    start_s: float = Field(description="where this chunk starts in the clip")
    sample_rate: int
    channels: int
    format: Literal["pcm_s16le"] = Field("pcm_s16le", description="little-endian 16-bit PCM, channels interleaved")
    data: str = Field(description="base64 of the PCM bytes")


class JobCancelResponse(BaseModel):
    job_id: int
    cancelled: bool = Field(description="false: the job was over already")
    was: Literal["queued", "running"] | None = Field(description="where the job was when cancelled")


def _job(info: JobInfo) -> JobResponse:
    return JobResponse(**info.model_dump(), audio_url=audio_url(info.id) if info.has_audio else None)


def _pcm(audio: np.ndarray) -> str:
    return base64.b64encode((np.clip(audio, -1.0, 1.0) * 32767).round().astype("<i2").tobytes()).decode("ascii")


def sse_items(items: Iterator) -> Iterator[ServerSentEvent]:
    for item in items:
        if item is None:
            yield ServerSentEvent(comment="keep-alive")
        elif isinstance(item, AudioChunk):
            audio = item.audio if item.audio.ndim == 2 else item.audio[:, None]
            data = AudioEvent(job_id=item.job_id, seq=item.seq, start_s=round(item.start_s, 4),
                              sample_rate=item.sample_rate, channels=audio.shape[1], data=_pcm(audio))
            yield ServerSentEvent(event="audio", data=data, id=f"a{item.seq}")
        else:
            yield ServerSentEvent(event=item.event, data=item.model_dump(exclude_none=True))


def build_jobs_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["jobs"])

    def existing_job(job_id: RecordId, request: Request) -> int:
        """A dependency runs before a stream starts: an unknown job (or another member's) is a 404, not a broken
        stream."""
        ctx.jobs.get(job_id, current_actor(request))
        return job_id

    @router.post("/jobs", status_code=202, response_model=JobAccepted, responses=error_responses(GENERATE_REFUSALS))
    def submit_job(body: JobRequest, request: Request) -> JobAccepted:
        """Queue a generation (1-4 variations, one job each) and answer at once with the job ids, their place in
        the queue and an ETA. Follow it at `events_url`; its audio is at /api/jobs/{id}/audio when it succeeds.
        The request is validated against the model it will run on (after the switches queued before it)."""
        return ctx.generation.submit(body, current_actor(request))

    @router.get("/jobs/{job_id}/events", response_class=EventSourceResponse,
                responses={200: {"description": (
                    "Server-Sent Events, JSON in each `data:` line. `queued` (position, eta_s), `running` (step, "
                    "total, fraction, eta_s), `audio` (new audio as it decodes: AudioEvent), then one final event: "
                    "`succeeded` (audio_url), `failed` (code, message), `cancelled` or `interrupted`. Comment lines "
                    "keep the connection alive. A job over already sends its final event only."),
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    **error_responses(NOT_FOUND)})
    def job_events(job_id: int = Depends(existing_job)) -> Iterator[ServerSentEvent]:
        """Everything that happens to a job, as it happens."""
        yield from sse_items(ctx.generation.follow(job_id, keepalive_s=KEEPALIVE_S))

    @router.post("/jobs/{job_id}/cancel", response_model=JobCancelResponse,
                 responses=error_responses(NOT_FOUND))
    def cancel_job(job_id: RecordId, request: Request) -> JobCancelResponse:
        """Cancel a job: a waiting one at once, a running one at its next decoding step (no audio is kept)."""
        actor = current_actor(request)
        ctx.jobs.get(job_id, actor)  # a job this person may see (never an A/B clip)
        was = ctx.generation.cancel_job(job_id, actor)
        return JobCancelResponse(job_id=job_id, cancelled=was is not None, was=was)

    @router.post("/jobs/{job_id}/resubmit", status_code=202, response_model=JobAccepted,
                 responses=error_responses({404: "job_not_found, adapter_not_found", 409: "job_not_finished, "
                                            "no_model_loaded, adapter_incompatible", **{
                                                k: v for k, v in GENERATE_REFUSALS.items() if k in (400, 422, 429)}}))
    def resubmit_job(job_id: RecordId, request: Request) -> JobAccepted:
        """Run a finished job again as a new job (an interrupted one, or any other): same prompt, adapter,
        settings, duration and seed. On the same model, it gives the same audio."""
        actor = current_actor(request)
        ctx.jobs.get(job_id, actor)  # a job this person may see (never an A/B clip)
        return ctx.generation.resubmit(job_id, actor)

    @router.get("/queue", response_model=QueueView)
    def queue_view(request: Request, user: Annotated[str | None, USER_FILTER] = None) -> QueueView:
        """What runs and what waits, in order (model switches included), with ETAs, and what comes next. A member
        sees their own jobs only, each at its place in the whole queue; an admin everyone's (`user`: one
        person's)."""
        return ctx.queue.view(current_actor(request), user)

    @router.get("/jobs", response_model=list[JobResponse],
                responses={200: {"headers": TOTAL_HEADER},
                           **error_responses({422: "invalid_parameter: a filter value refused (`errors` names it)"})})
    def list_jobs(
            request: Request, response: Response,
            model: Annotated[str | None, Query(description="a model id")] = None,
            adapter: Annotated[str | None, Query(pattern=r"^(none|[1-9][0-9]{0,18})$", description=(
                "an adapter id (a deleted adapter's too), or `none`: jobs without an adapter"))] = None,
            status: JobStatus | None = None,
            min_rating: Annotated[int | None, Query(ge=MIN_STARS, le=MAX_STARS, description=(
                "average stars (of every user) at least"))] = None,
            max_rating: Annotated[int | None, Query(ge=MIN_STARS, le=MAX_STARS, description=(
                "average stars at most (min_rating = max_rating: exactly)"))] = None,
            rated: Annotated[bool | None, Query(description="true: rated by someone; false: not rated yet")] = None,
            user: Annotated[str | None, USER_FILTER] = None,
            submitted_by: Annotated[str | None, Query(max_length=200, deprecated=True,
                                                      description="the former name of `user`")] = None,
            q: Annotated[str | None, Query(max_length=1000, description=(
                "text in the prompt (case-insensitive; % and _ are plain characters)"))] = None,
            source: Annotated[JobSource, Query(description=(
                "person: people's own generations; evaluation: clips of evaluation runs; training: audition clips of "
                "training runs; all: every one of those"))] = "person",
            evaluation_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description=(
                "clips of this evaluation run"))] = None,
            sort: Annotated[JobSort, Query(description=(
                "newest, oldest, best_rated / worst_rated (average stars; unrated last), longest / shortest "
                "(duration)"))] = "newest",
            limit: Limit = 50, offset: Offset = 0) -> list[JobResponse]:
        """Generation jobs (History), newest first unless sorted otherwise, filtered and paged; the number matching
        in all is in the `X-Total-Count` header. Each carries the asking user's rating, the average and count, and
        its automatic scores. Clips of blind A/B tests are never listed; a member's own generations only."""
        query = JobQuery(model_id=model, adapter=None if adapter is None else (
            adapter if adapter == "none" else int(adapter)), status=status, min_rating=min_rating,
            max_rating=max_rating, rated=rated, submitted_by=user if user is not None else submitted_by, text=q,
            source=source,
            evaluation_id=evaluation_id, sort=sort, limit=limit, offset=offset)
        page = ctx.jobs.search(query, current_actor(request))
        response.headers["X-Total-Count"] = str(page.total)
        return [_job(j) for j in page.items]

    @router.get("/jobs/{job_id}", response_model=JobResponse, responses=error_responses(NOT_FOUND))
    def get_job(job_id: RecordId, request: Request) -> JobResponse:
        """A job with everything it used, its timings, who submitted it, its ratings and scores."""
        return _job(ctx.jobs.get(job_id, current_actor(request)))

    @router.delete("/jobs/{job_id}", response_model=JobDeleted, responses=error_responses({
        **NOT_FOUND, 409: "job_not_finished: it waits or runs (cancel it first); evaluation_clip: part of an "
                          "evaluation run"}))
    def delete_job(job_id: RecordId, request: Request) -> JobDeleted:
        """Delete a finished job with its audio and codes files, its ratings and scores."""
        return ctx.jobs.delete(job_id, current_actor(request))

    @router.get("/jobs/{job_id}/rating", response_model=JobRating, responses=error_responses(NOT_FOUND))
    def get_rating(job_id: RecordId, request: Request) -> JobRating:
        """Your rating of the job (the signed-in user, or `local`), and everyone's average and count."""
        return ctx.jobs.rating(job_id, current_actor(request))

    @router.put("/jobs/{job_id}/rating", response_model=JobRating, responses=error_responses({
        **NOT_FOUND, 409: "job_not_rateable: only a succeeded job can be rated",
        422: "invalid_body: stars must be a whole number from 1 to 5"}))
    def put_rating(job_id: RecordId, body: RatingRequest, request: Request) -> JobRating:
        """Rate a succeeded job 1-5 stars: one rating per user per job; rating again changes it."""
        return ctx.jobs.rate(job_id, current_actor(request), body.stars)

    @router.delete("/jobs/{job_id}/rating", response_model=JobRating, responses=error_responses(NOT_FOUND))
    def delete_rating(job_id: RecordId, request: Request) -> JobRating:
        """Remove your rating of the job (nothing to remove is fine)."""
        return ctx.jobs.unrate(job_id, current_actor(request))

    @router.get("/jobs/{job_id}/audio", response_class=FileResponse,
                responses={200: {"content": {t: {"schema": {"type": "string", "format": "binary"}}
                                             for t in ("audio/wav", "audio/flac", "audio/mpeg")}},
                           **error_responses({404: "job_not_found, audio_not_found: unknown job (or an A/B clip), "
                                                   "or it has no audio"})})
    def job_audio(job_id: RecordId, request: Request) -> FileResponse:
        """The job's audio, in the output format its settings chose, named after its prompt and job
        (`lofi-hip-hop-beat_job12.flac`)."""
        path = ctx.jobs.audio_path(job_id, current_actor(request))
        return FileResponse(path, media_type=ctx.jobs.media_type(path), filename=ctx.jobs.download_name(job_id, path))

    return router
