"""The adapter metrics routes: GET /api/adapters/{id}/performance and GET /api/adapters/compare?ids=a,b.

Included before the adapters router, so /api/adapters/compare is never read as /api/adapters/{id}."""
from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError

from studio.api.errors import error_responses
from studio.api.params import INT64_MAX, RecordId
from studio.context import AppContext
from studio.services.metrics import AdapterPerformance, VersionComparison

IDS_HELP = ("exactly two adapter ids, comma-separated (A first): e.g. 3,7. More than two is refused: compare them "
            "two at a time, each verdict then stands on its own 5 % level.")


def parse_ids(text: str) -> tuple[int, int]:
    """'3,7' -> (3, 7); anything else a 422 invalid_parameter naming the problem."""
    parts = [p.strip() for p in text.split(",")]
    problem = None
    if len(parts) != 2:
        problem = f"give exactly two adapter ids separated by a comma (got {len(parts)} value(s))"
    elif not all(p.isascii() and p.isdigit() and 1 <= int(p) <= INT64_MAX for p in parts):
        problem = "each id must be a whole number from 1 to 2^63-1"
    elif int(parts[0]) == int(parts[1]):
        problem = "give two different adapter ids"
    if problem:
        raise RequestValidationError([{"type": "value_error", "loc": ("query", "ids"), "msg": problem}])
    return int(parts[0]), int(parts[1])


def build_metrics_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/adapters", tags=["adapters"])
    service = ctx.metrics

    @router.get("/compare", response_model=VersionComparison, responses=error_responses({
        404: "adapter_not_found: no adapter has one of these ids"}))
    def compare_versions(ids: str = Query(..., max_length=60, description=IDS_HELP,
                                          examples=["1,2"])) -> VersionComparison:
        """Two adapter versions side by side: training loss (final and best, when recorded), evaluation score
        (paired Wilcoxon on the same prompts and seeds, else Mann-Whitney U), average rating (Mann-Whitney U) and
        blind A/B votes between exactly these two (exact binomial sign test; revealed tests only). Each metric
        says which version is better, whether that is significant at 5 %, or that there is not enough data and
        how much more is needed, with the samples behind each figure. Versions of different base models answer
        `comparable: false` with the reason and no verdicts. Deleted versions can be compared."""
        a, b = parse_ids(ids)
        return service.compare(a, b)

    @router.get("/{adapter_id}/performance", response_model=AdapterPerformance, responses=error_responses({
        404: "adapter_not_found: no adapter has this id (deleted ones are still found)"}))
    def adapter_performance(adapter_id: RecordId) -> AdapterPerformance:
        """One version's own generations, average rating and distribution, A/B record (revealed tests only) and
        latest evaluation score, beside the base model's figures on the same prompts (and its evaluation run on
        the same prompt set and seeds), with tests against the base. Deleted versions stay readable."""
        return service.performance(adapter_id)

    return router
