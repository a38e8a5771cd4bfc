"""Training runs in tests: a dataset recorded straight into the database from synthetic tones (the dataset service's
own creation is tested by its lane), and waiting on runs."""
from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone

import numpy as np
import soundfile as sf

from studio.db.engine import session_scope
from studio.db.models import Dataset, DatasetClip
from studio.services.datasets import DatasetSummary, TrainingClip
from tests.tone_dataset import KINDS, tone

FAST = {"max_steps": 6, "checkpoint_every": 3, "batch_size": 2, "clip_duration_s": 1.0, "warmup_steps": 0,
        "learning_rate": 1e-3, "audition_prompts": 1, "audition_duration_s": 1.0, "threads": 1, "r": 4,
        "lora_alpha": 8}


def seed_dataset(ctx, n: int = 4, seconds: float = 1.5, name: str = "tones") -> int:
    """A dataset of n tone clips (the two kinds alternating) at studio-tiny's rate, recorded as the dataset service
    records one; its id."""
    folder = ctx.settings.data_dir / "datasets" / f"seeded-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(n):
        kind = list(KINDS)[i % len(KINDS)]
        audio = tone(kind, seconds, 32000, seed=i)
        path = folder / f"clip_{i:03d}.wav"
        sf.write(path, audio, 32000, subtype="FLOAT")
        digest = hashlib.sha256(np.ascontiguousarray(audio, np.float32).tobytes()).hexdigest()
        clips.append((path, kind, digest))
    content = hashlib.sha256("".join(h + c for _, c, h in clips).encode()).hexdigest()
    with session_scope(ctx.engine) as s:
        ds = Dataset(name=name, model_id="studio-tiny", sample_rate=32000, channels=1, max_clip_s=30, overlap_s=0,
                     source="test", folder=str(folder.relative_to(ctx.settings.data_dir)), report={},
                     content_hash=content, version=3)
        s.add(ds)
        s.commit()
        s.refresh(ds)
        for i, (path, caption, digest) in enumerate(clips):
            s.add(DatasetClip(dataset_id=ds.id, position=i, source_file=path.name, start_s=0, duration_s=seconds,
                              caption=caption, file=str(path.relative_to(ctx.settings.data_dir)), hash=digest))
        s.commit()
        return ds.id


def use_seeded_datasets(ctx) -> None:
    """Until the dataset service is merged in: training_clips read from the records (its contract)."""
    from sqlmodel import select

    from studio.errors import NotFound

    def training_clips(dataset_id: int):
        with session_scope(ctx.engine) as s:
            ds = s.get(Dataset, dataset_id)
            if ds is None or ds.deleted_at is not None:
                raise NotFound(f"There is no dataset {dataset_id}.", code="dataset_not_found")
            rows = list(s.exec(select(DatasetClip).where(DatasetClip.dataset_id == dataset_id)
                               .order_by(DatasetClip.position)))
            used = [r for r in rows if not r.excluded]
            now = datetime.now(timezone.utc)
            summary = DatasetSummary(id=ds.id, name=ds.name, model_id=ds.model_id, sample_rate=ds.sample_rate,
                                     max_clip_s=ds.max_clip_s, overlap_s=ds.overlap_s, clips=len(used),
                                     excluded=len(rows) - len(used), total_minutes=0.1, version=ds.version,
                                     content_hash=ds.content_hash, source=ds.source, created_by=ds.created_by,
                                     created_at=now, updated_at=now)
            from studio.errors import InvalidRequest
            if not used:
                raise InvalidRequest("No clip left.", code="dataset_empty")
            return summary, [TrainingClip(clip_id=r.id, file=ctx.settings.data_dir / r.file, caption=r.caption,
                                          hash=r.hash) for r in used]

    ctx.datasets.training_clips = training_clips


def wait_status(ctx, run_id: int, statuses: tuple[str, ...], timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = ctx.training.get(run_id)
        if info.status in statuses:
            return info
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} stayed {ctx.training.get(run_id).status}; log:\n"
                         f"{(ctx.settings.data_dir / ctx.training.get(run_id).url).as_posix()}")


def wait_auditions(ctx, run_id: int, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = ctx.training.get(run_id)
        clips = [c for cp in info.checkpoints for c in cp.auditions]
        if clips and all(c.status in ("succeeded", "failed", "cancelled") for c in clips):
            return info
        time.sleep(0.2)
    raise AssertionError(f"auditions of run {run_id} not over: {ctx.training.get(run_id).checkpoints}")
