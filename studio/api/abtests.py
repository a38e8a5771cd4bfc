"""The /api/abtests routes: blind A/B tests (create, list, progress and results, the next blind pair, its clips,
votes, close, cancel, resume, delete). The listener is the signed-in user with --auth (a `listener` given that
differs is refused), else the name the listener gives."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from studio.api.auth import current_actor, current_user
from studio.api.errors import error_responses
from studio.api.params import Limit, Offset, RecordId
from studio.context import AppContext
from studio.errors import InvalidValues
from studio.services.abtests import (MAX_LISTENER_CHARS, MAX_PAIRS, ABTestCreate, ABTestSummary, ABTestView,
                                     NextPair, VoteRequest, VoteResult)
from studio.users import LOCAL_ACTOR

ListenerParam = Annotated[str | None, Query(max_length=4 * MAX_LISTENER_CHARS, description=(
    "without --auth: the listener's name (required to listen and vote); with --auth: the signed-in user"))]
PairNumber = Annotated[int, Path(ge=1, le=MAX_PAIRS, description="the pair's number (BlindPair.pair)")]

CREATE_REFUSALS = {
    404: "model_not_found, adapter_not_found, adapter_deleted: a side names something that does not exist",
    400: "adapter_inactive: a side's adapter cannot be used",
    409: "no_model_loaded, model_not_loaded (the test's model is not the one the next job runs on), "
         "adapter_incompatible, queue_too_small",
    422: "a value refused (`errors` names each field): invalid_body, empty_name, name_too_long, invalid_name, "
         "no_prompts, too_many_prompts, too_many_pairs, empty_prompt, prompt_too_long, invalid_prompt, invalid_duration, "
         "duration_exceeds_limit, invalid_settings (side_a.overrides.top_k, ...)",
}
LISTEN_REFUSALS = {
    404: "abtest_not_found, pair_not_found, clip_not_found: unknown test or pair",
    409: "test_not_ready: the clips are still being generated (or generation failed or was cancelled)",
    422: "listener_required, invalid_listener, listener_not_you (with --auth: another user's name), "
         "invalid_parameter",
}


class DeletedResponse(BaseModel):
    deleted: bool


def build_abtests_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/abtests", tags=["abtests"])
    service = ctx.abtests
    auth = ctx.accounts.required

    def listener_of(request: Request, given: str | None) -> str:
        """A signed-in person (--auth, an account, a token) listens and votes as themselves (never as someone
        else); without a login: the name given."""
        actor = current_actor(request)
        if not auth and actor == LOCAL_ACTOR:
            return given or ""
        user = actor.name
        if given and given.strip() != user:
            message = f"You are signed in as {user}: you listen and vote as {user}, not as someone else."
            raise InvalidValues(message, code="listener_not_you",
                                errors=[{"field": "listener", "message": message}])
        return user

    @router.post("", status_code=201, response_model=ABTestView, responses=error_responses(CREATE_REFUSALS))
    def create(body: ABTestCreate, request: Request) -> ABTestView:
        """Create a blind A/B test and start generating its clips through the job queue (a few pairs at a time,
        the A and B of a pair decoded together; half of --max-queue stays free for people)."""
        return service.create(body, current_user(request))

    @router.get("", response_model=list[ABTestSummary])
    def list_tests(limit: Limit = 50, offset: Offset = 0) -> list[ABTestSummary]:
        """A/B tests, newest first, with their progress (never their sides)."""
        return service.list(limit=limit, offset=offset)

    @router.get("/{test_id}", response_model=ABTestView,
                responses=error_responses({404: "abtest_not_found: unknown A/B test", 422: "invalid_listener, listener_not_you: not a usable listener name"}))
    def get_test(test_id: RecordId, request: Request, listener: ListenerParam = None) -> ABTestView:
        """Progress (clips ready, votes per listener) and, once revealed, the results: when the test is closed,
        or to a listener who voted on every pair."""
        who = listener_of(request, listener) if (listener or auth) else None
        return service.get(test_id, who or None)

    @router.get("/{test_id}/next", response_model=NextPair, responses=error_responses(LISTEN_REFUSALS))
    def next_pair(test_id: RecordId, request: Request, listener: ListenerParam = None) -> NextPair:
        """The next blind pair for this listener (their own random order; first/second shuffled per pair): the
        prompt and two clip URLs, nothing that says which side is which."""
        return service.next_pair(test_id, listener_of(request, listener))

    @router.get("/{test_id}/pairs/{pair}/{slot}", response_class=Response,
                responses={200: {"content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
                                 "description": "the loudness-matched clip (WAV) this listener hears in that slot"},
                           **error_responses(LISTEN_REFUSALS)})
    def clip(test_id: RecordId, pair: PairNumber, slot: Literal["first", "second"], request: Request,
             listener: ListenerParam = None) -> Response:
        """A clip of a pair, by this listener's slot. Served whole, with no file name, date or tag: the two clips
        of a pair differ only in their sound."""
        path = service.clip(test_id, pair, slot, listener_of(request, listener))
        return Response(content=path.read_bytes(), media_type="audio/wav", headers={"Cache-Control": "no-store"})

    @router.post("/{test_id}/votes", response_model=VoteResult,
                 responses=error_responses({**LISTEN_REFUSALS, 409: "test_not_ready, test_closed, already_voted "
                                                                    "(votes are final)"}))
    def vote(test_id: RecordId, body: VoteRequest, request: Request) -> VoteResult:
        """Vote on a pair: the clip preferred (first, second) or none. Votes are final. The answer holds this
        listener's next pair; once they voted on every pair, GET /api/abtests/{id} shows them the results."""
        return service.vote(test_id, listener_of(request, body.listener), body.pair, body.choice)

    @router.post("/{test_id}/close", response_model=ABTestView,
                 responses=error_responses({404: "abtest_not_found: unknown A/B test", 409: "test_generating: cancel it or wait"}))
    def close(test_id: RecordId) -> ABTestView:
        """Close the test: no more votes, results revealed to everyone."""
        return service.close_test(test_id)

    @router.post("/{test_id}/cancel", response_model=ABTestView,
                 responses=error_responses({404: "abtest_not_found: unknown A/B test", 409: "test_not_generating: it is not generating"}))
    def cancel(test_id: RecordId) -> ABTestView:
        """Stop generating the test's clips (its waiting and running jobs are cancelled)."""
        return service.cancel(test_id)

    @router.post("/{test_id}/resume", response_model=ABTestView,
                 responses=error_responses({404: "abtest_not_found: unknown A/B test", 409: "test_not_failed, test_closed: nothing to resume"}))
    def resume(test_id: RecordId) -> ABTestView:
        """Generate what a failed or cancelled test is missing."""
        return service.retry(test_id)

    @router.delete("/{test_id}", response_model=DeletedResponse, responses=error_responses({404: "abtest_not_found: unknown A/B test"}))
    def delete(test_id: RecordId) -> DeletedResponse:
        """Delete the test with its votes, clips, their jobs and every file they had."""
        service.delete(test_id)
        return DeletedResponse(deleted=True)

    return router
