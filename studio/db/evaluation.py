"""Session-first crud for automatic scores and evaluation runs."""
from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from studio.db.models import Evaluation, Job, Score, utcnow
from studio.db.recovery import claim_unowned, mine


def get_score(session: Session, job_id: int, scorer: str) -> Score | None:
    return session.exec(select(Score).where(Score.job_id == job_id, Score.scorer == scorer)).first()


def scores_of(session: Session, job_ids: list[int], scorer: str | None = None) -> list[Score]:
    """The automatic scores of these jobs (by one scorer, or all), the one reader of the score table."""
    if not job_ids:
        return []
    stmt = select(Score).where(col(Score.job_id).in_(job_ids))
    if scorer is not None:
        stmt = stmt.where(Score.scorer == scorer)
    return list(session.exec(stmt.order_by(Score.job_id, Score.scorer)))


def add_score(session: Session, job_id: int, scorer: str, value: float) -> Score:
    """Store a job's score by `scorer` once: a score already there (another thread scored it first) is kept and
    returned."""
    existing = get_score(session, job_id, scorer)
    if existing is not None:
        return existing
    score = Score(job_id=job_id, scorer=scorer, value=value)
    session.add(score)
    try:
        session.commit()
    except IntegrityError:  # the unique (job, scorer) constraint: stored by someone else meanwhile
        session.rollback()
        return get_score(session, job_id, scorer)
    session.refresh(score)
    return score


def create_evaluation(session: Session, **fields) -> Evaluation:
    evaluation = Evaluation(**fields)
    session.add(evaluation)
    session.commit()
    session.refresh(evaluation)
    return evaluation


def get_evaluation(session: Session, evaluation_id: int) -> Evaluation | None:
    return session.get(Evaluation, evaluation_id)


def list_evaluations(session: Session, *, model_id: str | None = None, adapter_id: int | None = None,
                     base_only: bool = False, status: str | None = None, limit: int = 50,
                     offset: int = 0, runner: str | None = None) -> list[Evaluation]:
    """runner: this studio's own runs only (and those no studio owns, which it takes); None: every run."""
    stmt = select(Evaluation)
    if runner is not None:
        claim_unowned(session, Evaluation, runner, status or "running")
        stmt = stmt.where(mine(Evaluation.runner, runner))
    if model_id is not None:
        stmt = stmt.where(Evaluation.model_id == model_id)
    if adapter_id is not None:
        stmt = stmt.where(Evaluation.adapter_id == adapter_id)
    elif base_only:
        stmt = stmt.where(col(Evaluation.adapter_id).is_(None))
    if status is not None:
        stmt = stmt.where(Evaluation.status == status)
    stmt = stmt.order_by(col(Evaluation.created_at).desc(), col(Evaluation.id).desc()).offset(offset).limit(limit)
    return list(session.exec(stmt))


def jobs_of_evaluation(session: Session, evaluation_id: int) -> list[Job]:
    """Every job made for the run, oldest first (a clip run again after a restart has several)."""
    return list(session.exec(select(Job).where(Job.evaluation_id == evaluation_id).order_by(Job.id)))


def finish_evaluation(session: Session, evaluation: Evaluation, status: str, *, mean_score: float | None,
                      n: int, error: str | None = None) -> Evaluation:
    evaluation.status, evaluation.mean_score, evaluation.n, evaluation.error = status, mean_score, n, error
    evaluation.finished_at = utcnow()
    session.add(evaluation)
    session.commit()
    session.refresh(evaluation)
    return evaluation
