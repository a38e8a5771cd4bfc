"""Session-first crud for start-up recovery: close the work a killed studio left open."""
from __future__ import annotations

from sqlmodel import Session, select

from studio.db.models import Job, utcnow

INTERRUPTED = "interrupted: the studio stopped while this job ran; submit it again (POST /api/jobs/{id}/resubmit)"


def close_interrupted_jobs(session: Session) -> list[int]:
    """Mark every job still running as interrupted (no studio is running it any more); their ids. Queued jobs stay
    queued: the job queue runs them again."""
    jobs = list(session.exec(select(Job).where(Job.status == "running")))
    now = utcnow()
    for job in jobs:
        job.status, job.error, job.error_code = "interrupted", INTERRUPTED, "interrupted"
        job.finished_at, job.elapsed_s, job.output_file, job.codes_file = now, None, None, None
        session.add(job)
    session.commit()
    return [job.id for job in jobs]
