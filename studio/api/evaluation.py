"""Automatic scores and evaluation runs: /api/jobs/{id}/score, /api/evaluation/models, /api/evaluations."""
from __future__ import annotations

import json
from typing import Iterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from studio.api.auth import current_actor, current_user
from studio.api.errors import error_responses
from studio.api.params import INT64_MAX, Limit, Offset, RecordId
from studio.context import AppContext
from studio.services.evaluation import (EvaluationComparison, EvaluationInfo, EvaluationModels, EvaluationRequest,
                                       ScoreInfo)

NO_EVALUATION_MODEL = ("no_evaluation_model: no evaluation model is on this machine (the message says how to get "
                       "one)")


class EvaluationModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model_id: str = Field(min_length=1, max_length=64, description="an evaluation model id from "
                                                                   "GET /api/evaluation/models")


def _sse(events: Iterator) -> Iterator[str]:
    for event in events:
        yield f"data: {json.dumps(event.to_dict())}\n\n"


def build_evaluation_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["evaluation"])
    service = ctx.evaluation

    @router.post("/jobs/{job_id}/score", response_model=ScoreInfo, responses=error_responses({
        404: "job_not_found: unknown job (or, to a member, another person's)",
        409: f"{NO_EVALUATION_MODEL}; job_not_scorable: the job has no audio (yet)",
        500: "scoring_failed: the evaluation model could not be loaded or run"}))
    def score_job(job_id: RecordId, request: Request) -> ScoreInfo:
        """The job's automatic score (text-audio agreement by the evaluation model in use, -1 to 1), computed now
        if it has none yet (queued behind the jobs accepted before it), then kept: asking again returns it."""
        return service.score_job(job_id, current_actor(request))

    @router.get("/evaluation/models", response_model=EvaluationModels)
    def evaluation_models() -> EvaluationModels:
        """The evaluation models, whether each is on this machine, and which one scores clips (or how to get one)."""
        return service.models()

    @router.post("/evaluation/models/current", response_class=StreamingResponse,
                 responses={200: {"content": {"text/event-stream": {"schema": {
                                      "type": "string", "description": "`data: <ProgressEvent JSON>` lines"}}},
                                  "description": "one JSON ProgressEvent per `data:` line; the last is ready or error"},
                            **error_responses({404: "evaluation_model_not_found: unknown evaluation model"})})
    def use_evaluation_model(body: EvaluationModelRequest) -> StreamingResponse:
        """Choose the evaluation model that scores clips, downloading it first (byte progress) or building it
        (studio-tiny-clap). Streams Server-Sent Events ending with `ready` or `error`."""
        events = service.use_model(body.model_id)  # NotFound raises here, before the stream starts
        return StreamingResponse(_sse(events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.post("/evaluations", status_code=202, response_model=EvaluationInfo, responses=error_responses({
        400: "adapter_deleted, adapter_inactive: the adapter cannot be used",
        404: "not_found: unknown model; adapter_not_found",
        409: f"{NO_EVALUATION_MODEL}; model_not_loaded (switch to the model first), no_model_loaded, "
             "adapter_incompatible",
        422: "invalid_body: a value refused (`errors` names each field)",
        429: "queue_full: try again after Retry-After seconds"}))
    def start_evaluation(body: EvaluationRequest, request: Request) -> EvaluationInfo:
        """Evaluate the loaded model, or an adapter version of it, over the fixed evaluation prompt set: its clips
        are queued at once (same prompts, seeds and duration for every run) and scored as they finish. Follow it
        at GET /api/evaluations/{id}."""
        return service.evaluate(body.model_id, body.adapter_id, current_user(request))

    @router.get("/evaluations", response_model=list[EvaluationInfo])
    def list_evaluations(model_id: str | None = Query(None, max_length=64, description="runs of this model"),
                         adapter_id: int | None = Query(None, ge=1, le=INT64_MAX,
                                                        description="runs of this adapter version"),
                         base_only: bool = Query(False, description="runs of base models only (no adapter)"),
                         limit: Limit = 50, offset: Offset = 0) -> list[EvaluationInfo]:
        """Evaluation runs, newest first, with their clips and scores."""
        return service.list_evaluations(model_id=model_id, adapter_id=adapter_id, base_only=base_only, limit=limit,
                                        offset=offset)

    @router.get("/evaluations/{evaluation_id}", response_model=EvaluationInfo,
                responses=error_responses({404: "evaluation_not_found: unknown evaluation"}))
    def get_evaluation(evaluation_id: RecordId) -> EvaluationInfo:
        """A run: progress (`done` of `total` clips), each clip's job, status and score, and once over the mean
        score and the number of clips scored."""
        return service.get_evaluation(evaluation_id)

    @router.get("/evaluations/{evaluation_id}/compare/{other_id}", response_model=EvaluationComparison,
                responses=error_responses({404: "evaluation_not_found: unknown evaluation",
                                           409: "different_scorers: the runs were scored by different evaluation "
                                                "models"}))
    def compare_evaluations(evaluation_id: RecordId, other_id: RecordId) -> EvaluationComparison:
        """Run A (`evaluation_id`) and run B (`other_id`), e.g. the base model and an adapter version, compared clip
        by clip on the prompts and seeds they share: the paired scores and a Wilcoxon signed-rank test (which is
        better, whether significant at 5 %, or not enough data and how much more)."""
        return service.comparison(evaluation_id, other_id)

    @router.post("/evaluations/{evaluation_id}/cancel", response_model=EvaluationInfo,
                 responses=error_responses({404: "evaluation_not_found: unknown evaluation"}))
    def cancel_evaluation(evaluation_id: RecordId) -> EvaluationInfo:
        """Stop a running evaluation: its clips not generated yet are cancelled; the run ends `cancelled` (a run
        over already is returned as it is)."""
        return service.cancel(evaluation_id)

    return router
