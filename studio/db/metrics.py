"""Session-first reads behind adapter metrics: a version's own generations and their ratings, the base model's on the
same prompts, blind A/B tests and their vote counts, evaluation runs and their clips' scores. Read-only."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, col, select

from studio.db.models import ABTest, ABVote, Evaluation, Job, Rating, Score


@dataclass(frozen=True)
class RatedJob:
    job_id: int
    prompt: str
    stars: int


def _own(stmt, *, model_id: str, adapter_id: int | None):
    """A person's own generations (not clips of an A/B test or an evaluation run) of one version: the adapter's, or
    the base model's (adapter_id None) on `model_id`."""
    stmt = stmt.where(Job.abtest_id.is_(None), Job.evaluation_id.is_(None), Job.model_id == model_id)
    return stmt.where(Job.adapter_id.is_(None) if adapter_id is None else Job.adapter_id == adapter_id)


def _prompts_of(model_id: str, adapter_id: int, rated: bool):
    """The distinct prompts of an adapter's own generations (rated ones only with rated=True), as a subquery."""
    stmt = _own(select(Job.prompt).distinct(), model_id=model_id, adapter_id=adapter_id)
    if rated:
        stmt = stmt.where(col(Job.id).in_(select(Rating.job_id)))
    return stmt.where(Job.status == "succeeded")


def generation_count(session: Session, *, model_id: str, adapter_id: int | None,
                     prompts_of_adapter: int | None = None) -> int:
    """Succeeded own generations of a version; with prompts_of_adapter, only those whose prompt is one the adapter
    `prompts_of_adapter` generated (the base model 'on the same prompts')."""
    stmt = _own(select(func.count()).select_from(Job), model_id=model_id, adapter_id=adapter_id)
    stmt = stmt.where(Job.status == "succeeded")
    if prompts_of_adapter is not None:
        stmt = stmt.where(col(Job.prompt).in_(_prompts_of(model_id, prompts_of_adapter, rated=False)))
    return session.exec(stmt).one()


def ratings(session: Session, *, model_id: str, adapter_id: int | None,
            prompts_of_adapter: int | None = None) -> list[RatedJob]:
    """Every rating (one per user per job) of a version's own generations, oldest job first; with
    prompts_of_adapter, only jobs whose prompt is one the adapter `prompts_of_adapter` was rated on."""
    stmt = _own(select(Job.id, Job.prompt, Rating.stars).join(Rating, Rating.job_id == Job.id),
                model_id=model_id, adapter_id=adapter_id)
    if prompts_of_adapter is not None:
        stmt = stmt.where(col(Job.prompt).in_(_prompts_of(model_id, prompts_of_adapter, rated=True)))
    return [RatedJob(job_id, prompt, stars)
            for job_id, prompt, stars in session.exec(stmt.order_by(Job.id, Rating.id))]


def abtests_on(session: Session, model_id: str) -> list[ABTest]:
    """Every A/B test on a base model, oldest first (sides are JSON: the caller picks the ones it needs)."""
    return list(session.exec(select(ABTest).where(ABTest.model_id == model_id).order_by(ABTest.id)))


def vote_counts(session: Session, abtest_ids: list[int]) -> dict[int, dict[str, int]]:
    """abtest id -> {'a': n, 'b': n, 'none': n} (every listener's votes on every pair)."""
    counts: dict[int, dict[str, int]] = {i: {"a": 0, "b": 0, "none": 0} for i in abtest_ids}
    if not abtest_ids:
        return counts
    stmt = (select(ABVote.abtest_id, ABVote.choice, func.count()).where(col(ABVote.abtest_id).in_(abtest_ids))
            .group_by(ABVote.abtest_id, ABVote.choice))
    for abtest_id, choice, n in session.exec(stmt):
        if choice in counts[abtest_id]:
            counts[abtest_id][choice] += n
    return counts


def succeeded_evaluations(session: Session, *, model_id: str, adapter_id: int | None) -> list[Evaluation]:
    """A version's succeeded evaluation runs, newest first."""
    stmt = select(Evaluation).where(Evaluation.status == "succeeded", Evaluation.model_id == model_id)
    stmt = stmt.where(Evaluation.adapter_id.is_(None) if adapter_id is None else Evaluation.adapter_id == adapter_id)
    return list(session.exec(stmt.order_by(col(Evaluation.created_at).desc(), col(Evaluation.id).desc())))


def latest_evaluation(session: Session, *, model_id: str, adapter_id: int | None) -> Evaluation | None:
    """The newest evaluation run of a version (any status: a failed one is said, not hidden)."""
    stmt = select(Evaluation).where(Evaluation.model_id == model_id, Evaluation.adapter_id == adapter_id)
    return session.exec(stmt.order_by(col(Evaluation.id).desc()).limit(1)).first()


def evaluation_scores(session: Session, evaluation: Evaluation) -> dict[tuple[str, int], float]:
    """(prompt, seed) -> the score of that clip of the run by the run's scorer (clips without a score left out)."""
    stmt = (select(Job.prompt, Job.seed, Score.value).join(Score, Score.job_id == Job.id)
            .where(Job.evaluation_id == evaluation.id, Score.scorer == evaluation.scorer).order_by(Job.id))
    return {(prompt, seed): value for prompt, seed, value in session.exec(stmt)}
