"""Session-first crud for jobs."""
from __future__ import annotations

from sqlmodel import Session, col, select

from studio.db.models import Job, JobStatus, utcnow


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
