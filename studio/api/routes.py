"""The /api routes. Each handler is a thin translation to one service call."""
from __future__ import annotations

import json
from typing import Any, Iterator

from fastapi import APIRouter
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from studio.api.errors import error_responses
from studio.api.params import Limit, Offset, RecordId
from studio.context import AppContext
from studio.errors import NotFound
from studio.services.generation import GenerateRequest, GenerationResult
from studio.services.jobs import JobInfo
from studio.services.models import CurrentModel, ModelInfo


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model_id: str = Field(description="a model id from GET /api/models")


class GenerateResponse(BaseModel):
    job_id: int
    audio_url: str
    model_id: str
    prompt: str
    seed: int
    duration_s: float
    sample_rate: int
    settings: dict[str, Any]
    adapter_id: int | None
    adapter_label: str | None
    elapsed_s: float
    loudness_lufs: float | None = Field(description="integrated loudness of the audio file (None: undefined)")
    true_peak_dbtp: float | None = Field(description="true peak of the audio file, decoded (None: silence)")
    loudness_note: str | None = Field(description="set when loudness normalisation did not reach its target")


class JobResponse(JobInfo):
    audio_url: str | None


class CancelResponse(BaseModel):
    cancelled: bool


def _audio_url(job_id: int) -> str:
    return f"/api/jobs/{job_id}/audio"


def _sse(events: Iterator) -> Iterator[str]:
    for event in events:
        yield f"data: {json.dumps(event.to_dict())}\n\n"


def build_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/models", response_model=list[ModelInfo], tags=["models"])
    def list_models() -> list[ModelInfo]:
        """Every registry model with its capabilities, whether it is on this machine and whether it is loaded."""
        return ctx.models.list_models()

    @router.get("/models/current", response_model=CurrentModel, tags=["models"])
    def current_model() -> CurrentModel:
        """The loaded model (or null) and what the studio is doing."""
        return ctx.models.current()

    @router.post("/models/current", tags=["models"], response_class=StreamingResponse,
                 responses={200: {"content": {"text/event-stream": {"schema": {
                                      "type": "string", "description": "`data: <ProgressEvent JSON>` lines"}}},
                                  "description": "one JSON ProgressEvent per `data:` line; the last is ready or error"},
                            **error_responses({404: "not_found: unknown model", 423: "busy: a switch or a "
                                                                                      "generation is running"})})
    def switch_model(body: SwitchRequest) -> StreamingResponse:
        """Switch models: unload, download if needed (byte progress), load. Streams Server-Sent Events."""
        events = ctx.models.switch(body.model_id)  # NotFound / Busy raise here, before the stream starts
        return StreamingResponse(_sse(events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/models/{model_id}", response_model=ModelInfo, tags=["models"],
                responses=error_responses({404: "not_found: unknown model"}))
    def get_model(model_id: str) -> ModelInfo:
        return ctx.models.get(model_id)

    @router.post("/generate", response_model=GenerateResponse, tags=["generation"],
                 responses=error_responses({
                     400: "adapter_load_failed, adapter_deleted, adapter_inactive: the adapter cannot be used",
                     404: "adapter_not_found: unknown adapter",
                     409: "no_model_loaded, adapter_incompatible, cancelled",
                     422: "a value refused (`errors` names each field): invalid_body, invalid_settings, "
                          "duration_exceeds_limit, invalid_duration, empty_prompt, prompt_too_long, invalid_seed",
                     423: "busy: a switch or a generation is running"}))
    def generate(body: GenerateRequest) -> GenerateResponse:
        """Generate audio with the loaded model and its stored settings (overridable per request); returns the job
        and the URL of its audio file."""
        result: GenerationResult = ctx.generation.generate(body)
        return GenerateResponse(**result.model_dump(exclude={"output_file"}), audio_url=_audio_url(result.job_id))

    @router.post("/generate/cancel", response_model=CancelResponse, tags=["generation"])
    def cancel_generation() -> CancelResponse:
        """Stop the running generation at its next decoding step (its job is recorded as cancelled)."""
        return CancelResponse(cancelled=ctx.generation.cancel())

    @router.get("/jobs", response_model=list[JobResponse], tags=["jobs"])
    def list_jobs(limit: Limit = 50, offset: Offset = 0) -> list[JobResponse]:
        """Generation jobs, newest first."""
        return [_job(j) for j in ctx.jobs.list(limit=limit, offset=offset)]

    @router.get("/jobs/{job_id}", response_model=JobResponse, tags=["jobs"],
                responses=error_responses({404: "not_found: unknown job"}))
    def get_job(job_id: RecordId) -> JobResponse:
        return _job(ctx.jobs.get(job_id))

    @router.get("/jobs/{job_id}/audio", response_class=FileResponse, tags=["jobs"],
                responses={200: {"content": {t: {"schema": {"type": "string", "format": "binary"}}
                                             for t in ("audio/wav", "audio/flac", "audio/mpeg")}},
                           **error_responses({404: "job_not_found, audio_not_found: unknown job, or it has no audio"})})
    def job_audio(job_id: RecordId) -> FileResponse:
        """The job's audio, in the output format its settings chose, named after its prompt and job
        (`lofi-hip-hop-beat_job12.flac`)."""
        path = ctx.jobs.audio_path(job_id)
        return FileResponse(path, media_type=ctx.jobs.media_type(path), filename=ctx.jobs.download_name(job_id, path))

    @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown_route(path: str):
        raise NotFound(f"There is no API route /api/{path}. See /docs for the API.", code="unknown_route")

    return router


def _job(info: JobInfo) -> JobResponse:
    return JobResponse(**info.model_dump(), audio_url=_audio_url(info.id) if info.has_audio else None)
