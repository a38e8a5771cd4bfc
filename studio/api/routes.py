"""The /api routes. Each handler is a thin translation to one service call."""
from __future__ import annotations

import json
from typing import Any, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from studio.api.errors import error_responses
from studio.api.auth import current_actor, current_user
from studio.api.jobs import GENERATE_REFUSALS
from studio.context import AppContext
from studio.errors import NotFound
from studio.services.generation import GenerateRequest, GenerationResult
from studio.services.jobs import MelodyUsed
from studio.services.queue import audio_url
from studio.services.custom_models import AddModelRequest, CustomModelPreview, RemovedModel
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
    elapsed_s: float = Field(description="seconds from the start of decoding to the written file")
    wait_s: float = Field(description="seconds the job waited in the queue")
    batch_size: int = Field(description="jobs decoded together with this one (itself included)")
    submitted_by: str
    loudness_lufs: float | None = Field(description="integrated loudness of the audio file (None: undefined)")
    true_peak_dbtp: float | None = Field(description="true peak of the audio file, decoded (None: silence)")
    loudness_note: str | None = Field(description="set when loudness normalisation did not reach its target")
    melody: MelodyUsed | None = Field(None, description="the melody it followed (None: text only)")


class CancelResponse(BaseModel):
    cancelled: bool


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
                            **error_responses({404: "not_found: unknown model"})})
    def switch_model(body: SwitchRequest) -> StreamingResponse:
        """Switch models, in the job queue: jobs accepted before the switch run on the old model first (a `queued`
        event says so), then unload, download if needed (byte progress), load. Streams Server-Sent Events."""
        events = ctx.models.switch(body.model_id)  # NotFound raises here, before the stream starts
        return StreamingResponse(_sse(events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/models/{model_id}", response_model=ModelInfo, tags=["models"],
                responses=error_responses({404: "not_found: unknown model"}))
    def get_model(model_id: str) -> ModelInfo:
        return ctx.models.get(model_id)

    custom_refusals = {
        400: "invalid_repo_id, invalid_revision, missing_path, path_not_allowed, folder_not_found, missing_config, "
             "invalid_config, pickled_weights, missing_weights, unsupported_architecture, unsupported_config, "
             "invalid_model_id",
        404: "repo_not_found, revision_not_found: not on the hub",
        409: "model_exists, custom_models_locked (--no-custom-models), gated_repo",
        502: "hub_error: the hub answered with an error", 503: "hub_unreachable: the hub cannot be reached"}

    @router.post("/models", response_model=CustomModelPreview, tags=["models"],
                 responses=error_responses(custom_refusals))
    def add_model(body: AddModelRequest, request: Request) -> CustomModelPreview:
        """Add a MusicGen from the hub (repo id, optional revision) or from a server folder inside an import root.
        Only its config.json is read (no weights): its capabilities are derived from it, and the model is stored
        beside registry.yaml's. Its weights download (with progress) at its first switch, like any hub model."""
        return ctx.custom_models.add(body, user=current_user(request))

    @router.post("/models/inspect", response_model=CustomModelPreview, tags=["models"],
                 responses=error_responses(custom_refusals))
    def inspect_model(body: AddModelRequest) -> CustomModelPreview:
        """What POST /api/models would add (capabilities derived from config.json), storing nothing."""
        return ctx.custom_models.inspect(body)

    @router.delete("/models/{model_id}", response_model=RemovedModel, tags=["models"],
                   responses=error_responses({
                       404: "model_not_found: unknown model",
                       409: "not_custom (a registry.yaml model), model_loaded (switch to another first), model_in_use "
                            "(jobs wait for it), files_shared, custom_models_locked"}))
    def remove_model(model_id: str, delete_files: bool = False) -> RemovedModel:
        """Remove a model added in the studio; delete_files=true also deletes its cached hub files (a folder on the
        server is never deleted)."""
        return ctx.custom_models.remove(model_id, delete_files=delete_files)

    @router.post("/generate", response_model=GenerateResponse, tags=["generation"],
                 responses=error_responses({
                     **GENERATE_REFUSALS,
                     400: "adapter_load_failed, adapter_deleted, adapter_inactive: the adapter cannot be used",
                     409: "no_model_loaded, adapter_incompatible, cancelled (the job was cancelled while it ran)",
                     500: "generation_failed: decoding or writing the audio failed (the job records why)",
                     503: "interrupted: the GPU worker (--workers ray) running the job stopped; submit it again "
                          "(POST /api/jobs/{job_id}/resubmit)"}))
    def generate(body: GenerateRequest, request: Request) -> GenerateResponse:
        """Generate audio and wait for it: a job queued like any other (POST /api/jobs answers at once instead),
        with the loaded model's stored settings (overridable per request); returns the job and its audio URL."""
        result: GenerationResult = ctx.generation.generate(body, actor=current_actor(request))
        return GenerateResponse(**result.model_dump(exclude={"output_file"}), audio_url=audio_url(result.job_id))

    @router.post("/generate/cancel", response_model=CancelResponse, tags=["generation"])
    def cancel_generation(request: Request) -> CancelResponse:
        """Stop the running generation jobs at their next decoding step (recorded as cancelled): a member's own
        only, an admin's everyone's. To cancel one job, waiting or running: POST /api/jobs/{id}/cancel."""
        return CancelResponse(cancelled=ctx.generation.cancel(current_actor(request)))

    @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    def unknown_route(path: str):
        raise NotFound(f"There is no API route /api/{path}. See /docs for the API.", code="unknown_route")

    return router

