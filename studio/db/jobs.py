"""Session-first crud for jobs, their ratings and scores (as History reads them)."""
from __future__ import annotations

from typing import Literal, Sequence

from sqlalchemy import ColumnElement, delete as sa_delete, func, update
from sqlmodel import Session, col, select

from studio.db.engine import casefold, for_update, upsert
from studio.db.evaluation import scores_of
from studio.db.models import Job, JobStatus, Rating, Score, utcnow
from studio.db.recovery import mine


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


def mark_running(session: Session, job_ids: list[int], batch_size: int) -> list[int]:
    """queued -> running, as one conditional UPDATE: a job another writer moved meanwhile (cancelled, or run by
    another studio) is not taken. The ids moved."""
    moved = list(session.execute(
        update(Job).where(col(Job.id).in_(job_ids), Job.status == "queued")
        .values(status="running", started_at=utcnow(), batch_size=batch_size).returning(Job.id)).scalars())
    session.commit()
    return moved


def finish_job(session: Session, job: Job, status: JobStatus, *, expected: tuple[str, ...] = ("queued", "running"),
               error: str | None = None, error_code: str | None = None, output_file: str | None = None,
               codes_file: str | None = None, loudness_lufs: float | None = None,
               true_peak_dbtp: float | None = None) -> Job | None:
    """Close the job, only if it is still in one of the `expected` states: a conditional UPDATE, so two writers
    (the worker finishing it and a cancel, or two studios) never both close it. None (and nothing of this
    transaction committed) when it was no longer in those states."""
    finished = utcnow()
    started = job.started_at
    elapsed = None
    if started is not None:
        started = started if started.tzinfo else started.replace(tzinfo=finished.tzinfo)
        elapsed = round((finished - started).total_seconds(), 3)
    result = session.execute(
        update(Job).where(Job.id == job.id, col(Job.status).in_(expected))
        .values(status=status, error=error, error_code=error_code, output_file=output_file, codes_file=codes_file,
                loudness_lufs=loudness_lufs, true_peak_dbtp=true_peak_dbtp, finished_at=finished, elapsed_s=elapsed)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        session.rollback()
        return None
    session.commit()
    session.refresh(job)
    return job


def get_job(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(session: Session, limit: int = 50, offset: int = 0) -> list[Job]:
    stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).offset(offset).limit(limit)
    return list(session.exec(stmt))


def queued_jobs(session: Session, runner: str | None = None) -> list[Job]:
    """Jobs accepted and not started, oldest first (the order they run in). runner: this studio's id: its own
    jobs, after claiming those no studio claimed (recorded before studios had ids) in one conditional UPDATE, so
    that two studios starting together never both take one."""
    if runner is not None:
        session.execute(update(Job).where(Job.status == "queued", col(Job.runner).is_(None)).values(runner=runner))
        session.commit()
    return list(session.exec(select(Job).where(Job.status == "queued", mine(Job.runner, runner)).order_by(Job.id)))


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


def find_job(session: Session, job_id: int, where: Sequence[ColumnElement] = (), *, lock: bool = False) -> Job | None:
    """The job, if it meets the caller's conditions. lock: no other transaction moves or deletes it until this one
    ends (engine.for_update: PostgreSQL's row lock, SQLite's write lock; call it first in the session)."""
    stmt = select(Job).where(Job.id == job_id, *where)
    return session.exec(for_update(session, stmt) if lock else stmt).first()


def job_file_owners(session: Session, rel: str) -> list[str]:
    """Who submitted the jobs whose audio or codes file is `rel` (relative to the data directory)."""
    stmt = select(Job.submitted_by).where((Job.output_file == rel) | (Job.codes_file == rel))
    return list(session.exec(stmt))


def job_submitters(session: Session, where: Sequence[ColumnElement] = ()) -> list[str]:
    """The names that submitted jobs meeting the caller's conditions, in alphabetical order."""
    stmt = select(Job.submitted_by).where(*where).distinct().order_by(Job.submitted_by)
    return list(session.exec(stmt))


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
    now = utcnow()
    upsert(session, Rating, dict(job_id=job_id, user=user, stars=stars, created_at=now, updated_at=now),
           ["job_id", "user"], dict(stars=stars, updated_at=now))
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
