"""Training runs in tests: datasets of synthetic tones made by the dataset service, fast configurations, waiting on
runs."""
from __future__ import annotations

import time

from tests.tone_dataset import write_tone_folder

FAST = {"max_steps": 6, "checkpoint_every": 3, "batch_size": 2, "clip_duration_s": 1.0, "warmup_steps": 0,
        "learning_rate": 1e-3, "audition_prompts": 1, "audition_duration_s": 1.0, "threads": 1, "r": 4,
        "lora_alpha": 8}


def seed_dataset(ctx, n: int = 4, seconds: float = 1.5, name: str = "tones", exclude_all: bool = False) -> int:
    """A dataset of n tone clips (the two kinds alternating), created by the dataset service from a folder in the
    studio's import root, as a person would; its id."""
    from studio.services.datasets import ClipsEdit, CreateDatasetRequest

    folder = ctx.settings.data_dir / "imports" / name
    write_tone_folder(folder, n=n, seconds=seconds)
    info = ctx.datasets.create(CreateDatasetRequest(source="folder", path=str(folder), name=name,
                                                    model_id="studio-tiny"))
    if exclude_all:
        ctx.datasets.edit_clips(info.id, ClipsEdit(excluded=True))
    return info.id


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
