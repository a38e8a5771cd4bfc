"""Session-first crud for training runs, their checkpoints and their audition clips."""
from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col, select

from studio.db.models import Job, TrainingCheckpoint, TrainingRun, utcnow
from studio.db.recovery import claim_unowned, mine

ACTIVE = ("queued", "running", "stopping")


def add_run(session: Session, run: TrainingRun) -> TrainingRun:
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def get_run(session: Session, run_id: int) -> TrainingRun | None:
    return session.get(TrainingRun, run_id)


def save_run(session: Session, run: TrainingRun) -> TrainingRun:
    session.add(run)
    session.commit()
    session.refresh(run)
    return run


def set_status_if(session: Session, run_id: int, statuses: tuple[str, ...], status: str) -> bool:
    """Move a run to `status` only while it is in one of `statuses`, in one statement (a run that ended meanwhile
    keeps its end); True when it moved."""
    stmt = (update(TrainingRun).where(col(TrainingRun.id) == run_id, col(TrainingRun.status).in_(statuses))
            .values(status=status))
    moved = session.execute(stmt).rowcount
    session.commit()
    return moved == 1


def list_runs(session: Session, *, status: str | None = None, model_id: str | None = None) -> list[TrainingRun]:
    stmt = select(TrainingRun)
    if status is not None:
        stmt = stmt.where(TrainingRun.status == status)
    if model_id is not None:
        stmt = stmt.where(TrainingRun.model_id == model_id)
    return list(session.exec(stmt.order_by(col(TrainingRun.id).desc())))


def runs_with_status(session: Session, *statuses: str, runner: str | None = None) -> list[TrainingRun]:
    """Oldest first: the order queued runs start in. runner: this studio's own runs only (and those no studio
    owns, which it takes): a run's folder is in the data directory of the studio that created it."""
    claim_unowned(session, TrainingRun, runner, *statuses)
    stmt = (select(TrainingRun).where(col(TrainingRun.status).in_(statuses), mine(TrainingRun.runner, runner))
            .order_by(TrainingRun.id))
    return list(session.exec(stmt))


def runs_using_dataset(session: Session, dataset_id: int, statuses: tuple[str, ...] = ACTIVE) -> list[TrainingRun]:
    stmt = select(TrainingRun).where(TrainingRun.dataset_id == dataset_id, col(TrainingRun.status).in_(statuses))
    return list(session.exec(stmt))


def checkpoints_of(session: Session, run_id: int) -> list[TrainingCheckpoint]:
    stmt = select(TrainingCheckpoint).where(TrainingCheckpoint.run_id == run_id).order_by(TrainingCheckpoint.step)
    return list(session.exec(stmt))


def get_checkpoint(session: Session, run_id: int, step: int) -> TrainingCheckpoint | None:
    stmt = select(TrainingCheckpoint).where(TrainingCheckpoint.run_id == run_id, TrainingCheckpoint.step == step)
    return session.exec(stmt).first()


def record_checkpoint(session: Session, run_id: int, step: int, loss: float | None, folder: str) -> bool:
    """Record a checkpoint once (events are read again after a resume or a restart); True when it is new."""
    if get_checkpoint(session, run_id, step) is not None:
        return False
    session.add(TrainingCheckpoint(run_id=run_id, step=step, loss=loss, folder=folder, created_at=utcnow()))
    session.commit()
    return True


def audition_jobs(session: Session, run_id: int) -> list[Job]:
    stmt = select(Job).where(Job.training_run_id == run_id).order_by(Job.id)
    return list(session.exec(stmt))


def existing_runs(session: Session, run_ids: list[int]) -> set[int]:
    if not run_ids:
        return set()
    return set(session.exec(select(TrainingRun.id).where(col(TrainingRun.id).in_(run_ids))))
