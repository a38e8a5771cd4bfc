"""Session-first crud for jobs."""
from __future__ import annotations

from sqlmodel import Session, select

from studio.db.models import Job, JobStatus, utcnow


def create_job(session: Session, **fields) -> Job:
    job = Job(**fields)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def finish_job(session: Session, job: Job, status: JobStatus, *, error: str | None = None,
               output_file: str | None = None, loudness_lufs: float | None = None,
               true_peak_dbtp: float | None = None) -> Job:
    job.status, job.error, job.output_file = status, error, output_file
    job.loudness_lufs, job.true_peak_dbtp = loudness_lufs, true_peak_dbtp
    job.finished_at = utcnow()
    created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=job.finished_at.tzinfo)
    job.elapsed_s = round((job.finished_at - created).total_seconds(), 3)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def get_job(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def list_jobs(session: Session, limit: int = 50, offset: int = 0) -> list[Job]:
    stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).offset(offset).limit(limit)
    return list(session.exec(stmt))
