"""Session-first crud for start-up recovery: close the work a killed studio left open."""
from __future__ import annotations

from sqlalchemy import or_, true, update
from sqlmodel import Session, col, select

from studio.db.models import Job, utcnow

INTERRUPTED = "interrupted: the studio stopped while this job ran; submit it again (POST /api/jobs/{id}/resubmit)"


def mine(column, runner: str | None):
    """Rows of this studio (runner), or claimed by none (recorded before studios had ids). runner None: every row
    (a studio alone on its database)."""
    return true() if runner is None else or_(column == runner, column.is_(None))


def claim_unowned(session: Session, table, runner: str | None, *statuses: str) -> None:
    """Take for this studio the rows in `statuses` that no studio owns (recorded before studios had ids), in one
    conditional UPDATE: of two studios starting together, one takes each."""
    if runner is not None:
        session.execute(update(table).where(col(table.status).in_(statuses), col(table.runner).is_(None))
                        .values(runner=runner))
        session.commit()


def close_interrupted_jobs(session: Session, runner: str | None = None) -> list[int]:
    """Mark this studio's jobs still running as interrupted (it is not running them any more: it is starting);
    their ids. Queued jobs stay queued: the job queue runs them again. Jobs another studio sharing the database
    runs are left alone."""
    ids = list(session.exec(select(Job.id).where(Job.status == "running", mine(Job.runner, runner))))
    if ids:  # conditional: a job that finished meanwhile keeps its result
        session.execute(update(Job).where(col(Job.id).in_(ids), Job.status == "running").values(
            status="interrupted", error=INTERRUPTED, error_code="interrupted", finished_at=utcnow(), elapsed_s=None,
            output_file=None, codes_file=None))
    session.commit()
    return ids
