"""Session-first crud for jobs, their ratings and scores (as History reads them)."""
from __future__ import annotations

from typing import Literal, Sequence

from sqlalchemy import ColumnElement, delete as sa_delete, func
from sqlmodel import Session, col, select

from studio.db.engine import casefold
from studio.db.evaluation import scores_of
from studio.db.models import Job, JobStatus, Rating, Score, utcnow


def create_jobs(session: Session, rows: list[dict]) -> list[Job]:
    """Record jobs as queued, all or none (the variations of one request are accepted together)."""
    jobs = [Job(**fields) for fields in rows]
    session.add_all(jobs)
    session.commit()
    for job in jobs:
        session.refresh(job)
    return jobs


def create_job(session: Session, **fields) -> Job:
    return create_jobs(session, [fields])[0]


def mark_running(session: Session, job_ids: list[int], batch_size: int) -> None:
    now = utcnow()
    for job in session.exec(select(Job).where(col(Job.id).in_(job_ids))):
        job.status, job.started_at, job.batch_size = "running", now, batch_size
        session.add(job)
    session.commit()


def finish_job(session: Session, job: Job, status: JobStatus, *, error: str | None = None,
               error_code: str | None = None, output_file: str | None = None, codes_file: str | None = None,
               loudness_lufs: float | None = None, true_peak_dbtp: float | None = None) -> Job:
    job.status, job.error, job.error_code = status, error, error_code
    job.output_file, job.codes_file = output_file, codes_file
    job.loudness_lufs, job.true_peak_dbtp = loudness_lufs, true_peak_dbtp
    job.finished_at = utcnow()
    started = job.started_at
    if started is not None:
        started = started if started.tzinfo else started.replace(tzinfo=job.finished_at.tzinfo)
        job.elapsed_s = round((job.finished_at - started).total_seconds(), 3)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def get_job(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(session: Session, limit: int = 50, offset: int = 0) -> list[Job]:
    stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).offset(offset).limit(limit)
    return list(session.exec(stmt))


def queued_jobs(session: Session) -> list[Job]:
    """Jobs accepted and not started, oldest first (the order they run in)."""
    return list(session.exec(select(Job).where(Job.status == "queued").order_by(Job.id)))


# ---- History: search, ratings, scores, delete ------------------------------------------------------------------
JobSort = Literal["newest", "oldest", "best_rated", "worst_rated", "longest", "shortest"]


def _rating_stats():
    """Per job: the average stars and the number of ratings (jobs without ratings have no row)."""
    return (select(Rating.job_id.label("job_id"), func.avg(Rating.stars).label("average"),
                   func.count(Rating.id).label("count"))
            .group_by(Rating.job_id).subquery("rating_stats"))


def search_jobs(session: Session, where: Sequence[ColumnElement], *, min_rating: int | None = None,
                max_rating: int | None = None, rated: bool | None = None, sort: JobSort = "newest",
                limit: int = 50, offset: int = 0) -> tuple[list[tuple[Job, float | None, int]], int]:
    """(a page of (job, average stars, number of ratings), how many match in all). where: the caller's conditions
    on Job; the rating conditions apply to the average of every user's stars."""
    stats = _rating_stats()
    conditions = list(where)
    if rated is True:
        conditions.append(stats.c.count.is_not(None))
    elif rated is False:
        conditions.append(stats.c.count.is_(None))
    if min_rating is not None:
        conditions.append(stats.c.average >= min_rating)
    if max_rating is not None:
        conditions.append(stats.c.average <= max_rating)
    base = select(Job, stats.c.average, stats.c.count).outerjoin(stats, stats.c.job_id == Job.id).where(*conditions)
    total = session.exec(select(func.count()).select_from(base.subquery())).one()
    newest = (Job.created_at.desc(), Job.id.desc())
    order = {"newest": newest, "oldest": (Job.created_at.asc(), Job.id.asc()),
             "best_rated": (stats.c.average.desc().nulls_last(), stats.c.count.desc().nulls_last(), *newest),
             "worst_rated": (stats.c.average.asc().nulls_last(), stats.c.count.desc().nulls_last(), *newest),
             "longest": (Job.duration_s.desc(), *newest), "shortest": (Job.duration_s.asc(), *newest)}[sort]
    rows = session.exec(base.order_by(*order).offset(offset).limit(limit)).all()
    return [(job, None if avg is None else float(avg), int(count or 0)) for job, avg, count in rows], int(total)


def prompt_contains(text: str) -> ColumnElement:
    """The prompt holds `text`, whatever the case (any letter, not only ASCII); LIKE's wildcards `%` and `_` are
    plain characters here."""
    return casefold(Job.prompt).contains(text.casefold(), autoescape=True)


def find_job(session: Session, job_id: int, where: Sequence[ColumnElement] = ()) -> Job | None:
    """The job, if it meets the caller's conditions."""
    return session.exec(select(Job).where(Job.id == job_id, *where)).first()


def rating_stats(session: Session, job_ids: Sequence[int]) -> dict[int, tuple[float, int]]:
    """{job id: (average stars, number of ratings)} for the rated ones among job_ids."""
    if not job_ids:
        return {}
    rows = session.exec(select(Rating.job_id, func.avg(Rating.stars), func.count(Rating.id))
                        .where(col(Rating.job_id).in_(job_ids)).group_by(Rating.job_id)).all()
    return {job_id: (float(avg), int(count)) for job_id, avg, count in rows}


def user_ratings(session: Session, job_ids: Sequence[int], user: str) -> dict[int, int]:
    """{job id: stars} of one user's ratings among job_ids."""
    if not job_ids:
        return {}
    rows = session.exec(select(Rating.job_id, Rating.stars).where(col(Rating.job_id).in_(job_ids),
                                                                  Rating.user == user)).all()
    return {job_id: stars for job_id, stars in rows}


def job_scores(session: Session, job_ids: Sequence[int]) -> dict[int, dict[str, float]]:
    """{job id: {scorer: value}} of the automatic scores among job_ids."""
    out: dict[int, dict[str, float]] = {}
    for s in scores_of(session, list(job_ids)):
        out.setdefault(s.job_id, {})[s.scorer] = s.value
    return out


def set_rating(session: Session, job_id: int, user: str, stars: int) -> None:
    """A user's rating of a job, new or changed (one per user per job)."""
    rating = session.exec(select(Rating).where(Rating.job_id == job_id, Rating.user == user)).first()
    if rating is None:
        rating = Rating(job_id=job_id, user=user, stars=stars)
    else:
        rating.stars, rating.updated_at = stars, utcnow()
    session.add(rating)
    session.commit()


def delete_rating(session: Session, job_id: int, user: str) -> bool:
    """Remove a user's rating of a job; whether there was one."""
    result = session.execute(sa_delete(Rating).where(Rating.job_id == job_id, Rating.user == user))
    session.commit()
    return bool(result.rowcount)


def delete_job(session: Session, job: Job) -> None:
    """The job and everything recorded about it (ratings, scores), in one transaction."""
    session.execute(sa_delete(Rating).where(Rating.job_id == job.id))
    session.execute(sa_delete(Score).where(Score.job_id == job.id))
    session.delete(job)
    session.commit()
