"""Session-first crud for training datasets and their clips."""
from __future__ import annotations

from sqlmodel import Session, col, func, select

from studio.db.engine import for_update
from studio.db.models import Dataset, DatasetClip, TrainingRun, utcnow

# A run in one of these states will read the dataset's clips: the dataset may not be deleted meanwhile
ACTIVE_RUN_STATES = ("queued", "running", "stopping")


def add_dataset(session: Session, dataset: Dataset, clips: list[DatasetClip]) -> Dataset:
    """Record a dataset and its clips, all or none."""
    session.add(dataset)
    session.flush()
    for clip in clips:
        clip.dataset_id = dataset.id
    session.add_all(clips)
    session.commit()
    session.refresh(dataset)
    return dataset


def get_dataset(session: Session, dataset_id: int, *, lock: bool = False) -> Dataset | None:
    """lock: the row stays locked until the transaction ends (db.engine.for_update: first in the session)."""
    if not lock:
        return session.get(Dataset, dataset_id)
    return session.exec(for_update(session, select(Dataset).where(Dataset.id == dataset_id))).first()


def list_datasets(session: Session) -> list[Dataset]:
    """Live datasets, newest first."""
    stmt = select(Dataset).where(col(Dataset.deleted_at).is_(None)).order_by(col(Dataset.id).desc())
    return list(session.exec(stmt))


def clips_of(session: Session, dataset_id: int) -> list[DatasetClip]:
    stmt = select(DatasetClip).where(DatasetClip.dataset_id == dataset_id).order_by(DatasetClip.position)
    return list(session.exec(stmt))


def get_clip(session: Session, dataset_id: int, clip_id: int) -> DatasetClip | None:
    clip = session.get(DatasetClip, clip_id)
    return clip if clip is not None and clip.dataset_id == dataset_id else None


def clip_counts(session: Session) -> dict[int, tuple[int, int, float]]:
    """dataset id -> (clips used, clips excluded, seconds used), for listings in one query."""
    stmt = (select(DatasetClip.dataset_id, DatasetClip.excluded, func.count(), func.sum(DatasetClip.duration_s))
            .group_by(DatasetClip.dataset_id, DatasetClip.excluded))
    counts: dict[int, list] = {}
    for dataset_id, excluded, n, seconds in session.exec(stmt):
        entry = counts.setdefault(dataset_id, [0, 0, 0.0])
        if excluded:
            entry[1] += n
        else:
            entry[0] += n
            entry[2] += seconds or 0.0
    return {k: (v[0], v[1], v[2]) for k, v in counts.items()}


def save_dataset(session: Session, dataset: Dataset, clips: list[DatasetClip] = ()) -> Dataset:
    """Store changes to a dataset and (some of) its clips in one commit."""
    dataset.updated_at = utcnow()
    session.add(dataset)
    session.add_all(clips)
    session.commit()
    session.refresh(dataset)
    return dataset


def active_runs_using(session: Session, dataset_id: int) -> list[int]:
    """The ids of the queued or running training runs on this dataset."""
    stmt = select(TrainingRun.id).where(TrainingRun.dataset_id == dataset_id,
                                        col(TrainingRun.status).in_(ACTIVE_RUN_STATES)).order_by(TrainingRun.id)
    return list(session.exec(stmt))


def live_folders(session: Session) -> set[str]:
    """The folders (relative to the data directory) of the datasets not deleted."""
    return set(session.exec(select(Dataset.folder).where(col(Dataset.deleted_at).is_(None))))
