"""Session-first crud for start-up recovery: close the work a killed studio left open."""
from __future__ import annotations

from sqlmodel import Session, col, select

from studio.db.models import Job, utcnow

INTERRUPTED = "interrupted: the studio stopped while this job ran"
OPEN_STATUSES = ("queued", "running")  # a job in these states when the studio starts was cut off by a kill or crash


def close_interrupted_jobs(session: Session) -> list[int]:
    """Mark every job still queued or running as failed (no studio is running it any more); their ids."""
    jobs = list(session.exec(select(Job).where(col(Job.status).in_(OPEN_STATUSES))))
    now = utcnow()
    for job in jobs:
        job.status, job.error, job.finished_at, job.elapsed_s, job.output_file = "failed", INTERRUPTED, now, None, None
        session.add(job)
    session.commit()
    return [job.id for job in jobs]
