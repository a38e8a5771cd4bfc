"""/api/training: the configuration schema, and runs: create, list, show, events (SSE), stop, resume, register a
checkpoint."""
from __future__ import annotations

from typing import Annotated, Any, Iterator

from fastapi import APIRouter, Depends, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from studio.api.auth import current_user
from studio.api.errors import error_responses
from studio.api.params import RecordId
from studio.context import AppContext
from studio.services.adapters import AdapterInfo
from studio.services.training import (CreateRunRequest, RegisterCheckpointRequest, RunInfo, RunStatus, RunSummary)

KEEPALIVE_S = 15.0  # a comment line this often while nothing happens (proxies close idle streams)
NOT_FOUND = {404: "run_not_found: unknown training run"}
CREATE_REFUSALS = {
    404: "dataset_not_found, abtest_not_found, adapter_not_found: something the request names does not exist",
    400: "adapter_deleted, adapter_inactive: the start adapter cannot be used; invalid_name; dataset_empty (every "
         "clip excluded)",
    409: "test_not_closed, no_decisive_pairs (dpo); model_not_available, model_not_found, adapter_incompatible",
    422: "a value refused (`errors` names each field): invalid_body, invalid_config (config.learning_rate, ...), "
         "missing_dataset, missing_abtest, invalid_method, invalid_prompt (audition_prompts.N)",
}


def build_training_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/training", tags=["training"])
    service = ctx.training

    def existing_run(run_id: RecordId) -> int:
        """A dependency runs before a stream starts: an unknown run is a 404, not a broken stream."""
        service.get(run_id)
        return run_id

    @router.get("/config/schema", response_model=dict[str, Any])
    def config_schema() -> dict[str, Any]:
        """The JSON Schema of the training configuration (TrainingConfig): every field with its type, default,
        bounds, title, description and `x-group` (Model, LoRA, Training, Hardware, Checkpointing, DPO)."""
        return service.config_schema()

    @router.post("/runs", status_code=201, response_model=RunInfo, responses=error_responses(CREATE_REFUSALS))
    def create_run(body: CreateRunRequest, request: Request) -> RunInfo:
        """Create a training run: sft on a dataset, or dpo on a closed A/B test's votes. It starts at once when no
        other run trains (one at a time; the others wait, `queued`). Follow it at /api/training/runs/{id}/events."""
        return service.create(body, current_user(request))

    @router.get("/runs", response_model=list[RunSummary])
    def list_runs(status: Annotated[RunStatus | None, Query(description="runs with this status")] = None,
                  model_id: Annotated[str | None, Query(max_length=64, description="runs of this base model")]
                  = None) -> list[RunSummary]:
        """Training runs, newest first."""
        return service.list(status=status, model_id=model_id)

    @router.get("/runs/{run_id}", response_model=RunInfo, responses=error_responses(NOT_FOUND))
    def get_run(run_id: RecordId) -> RunInfo:
        """A run in full: status, step, loss curve, its configuration, checkpoints (step 0, the starting point,
        first) with their audition clips and scores, the registered adapter, and the log's tail when it failed."""
        return service.get(run_id)

    @router.get("/runs/{run_id}/events", response_class=EventSourceResponse,
                responses={200: {"description": (
                    "Server-Sent Events, a RunEvent as JSON in each `data:` line: `status` first (where the run "
                    "stands), then `stage`, `step` (step, total_steps, loss, lr, eta_s; dpo: accuracy), "
                    "`checkpoint`, and a final `done` (status succeeded, stopped, failed or interrupted). Comment "
                    "lines keep the connection alive. A run over already sends its final event only."),
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    **error_responses(NOT_FOUND)})
    def run_events(run_id: int = Depends(existing_run)) -> Iterator[ServerSentEvent]:
        """Everything a run does, as it happens."""
        for event in service.follow(run_id, keepalive_s=KEEPALIVE_S):
            if event is None:
                yield ServerSentEvent(comment="keep-alive")
            else:
                yield ServerSentEvent(event=event.event, data=event.model_dump(exclude_none=True))

    @router.post("/runs/{run_id}/stop", response_model=RunInfo,
                 responses=error_responses({**NOT_FOUND, 409: "run_not_running: the run is over already"}))
    def stop_run(run_id: RecordId, request: Request) -> RunInfo:
        """Stop a run: it saves a checkpoint and ends (the answer comes once it did, within seconds); a queued run
        never starts. Resume it later."""
        return service.stop(run_id, current_user(request))

    @router.post("/runs/{run_id}/resume", response_model=RunInfo,
                 responses=error_responses({**NOT_FOUND, 409: "run_not_resumable: it is queued, running or "
                                                              "succeeded"}))
    def resume_run(run_id: RecordId, request: Request) -> RunInfo:
        """Resume a stopped, interrupted or failed run from its last checkpoint that kept its optimiser state: it
        continues the same trajectory (same losses as a run never stopped)."""
        return service.resume(run_id, current_user(request))

    @router.post("/runs/{run_id}/register", status_code=201, response_model=AdapterInfo,
                 responses=error_responses({
                     **NOT_FOUND, 404: "run_not_found, checkpoint_not_found",
                     400: "invalid_name",
                     409: "no_checkpoint, checkpoint_registered (registered already: adapter_id)",
                     422: "invalid_body: a field of the wrong type (`errors` names it)"}))
    def register_checkpoint(run_id: RecordId, body: RegisterCheckpointRequest, request: Request) -> AdapterInfo:
        """Register a checkpoint (default: the last) as the next version of the run's adapter name, with its
        provenance: dataset name, version and hash (or the A/B test), the full configuration, the base model's
        revision and weights hash, the loss curve summary and the run id."""
        return service.register(run_id, body, current_user(request))

    return router
