"""Training runs stopped, killed and taken up again: stop saves a checkpoint within seconds and resume continues the
same trajectory as a run never stopped, without the server's memory growing; a trainer killed mid-run is
interrupted and a restarted studio resumes it; a studio that closes stops its run and the next start resumes it.
(Real subprocesses on the tiny model: a start costs ~4 s, so runs are few and short.)"""
from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from studio.db.engine import session_scope
from studio.db.models import TrainingRun
from studio.services.training import CreateRunRequest
from studio.training import layout
from tests.training_support import FAST, seed_dataset, wait_status


def _studio(make_ctx, load: bool = True, **overrides):
    ctx = make_ctx(**overrides)
    if load:
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    return ctx


def test_stop_saves_and_resume_continues_the_same_trajectory_without_touching_the_servers_memory(make_ctx):
    ctx = _studio(make_ctx)
    dataset = seed_dataset(ctx, n=4)
    config = {**FAST, "max_steps": 50, "checkpoint_every": 1000, "audition_prompts": 0, "lr_scheduler": "cosine",
              "warmup_steps": 5}
    rss = psutil.Process().memory_info().rss
    run = ctx.training.create(CreateRunRequest(dataset_id=dataset, config=config, auto_register=False))
    queued = ctx.training.create(CreateRunRequest(dataset_id=dataset, config=config, name="second"))
    assert queued.status == "queued"  # one run at a time
    assert ctx.training.stop(queued.id).status == "stopped"  # at once: it never started
    deadline = time.monotonic() + 60
    while ctx.training.get(run.id).step < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Training tones" in (ctx.queue.view().training or "")
    assert ctx.queue.worker._cpu_share == FAST["threads"]  # the worker decodes on the other cores meanwhile
    stopped = ctx.training.stop(run.id)  # returns once the run saved its checkpoint and ended
    assert stopped.status == "stopped" and 10 <= stopped.step < 50
    assert [c.step for c in stopped.checkpoints] == [0, stopped.step] and stopped.checkpoints[1].resumable
    assert ctx.queue.view().training is None and ctx.queue.worker._cpu_share == 0
    resumed = ctx.training.resume(run.id)
    assert resumed.status == "running"
    done = wait_status(ctx, run.id, ("succeeded", "failed", "interrupted"))
    assert done.status == "succeeded", done.error
    steps = [p.step for p in done.loss_curve]
    assert steps == list(range(1, 51))

    straight = ctx.training.create(CreateRunRequest(dataset_id=dataset, config=config, name="straight",
                                                    auto_register=False))
    other = wait_status(ctx, straight.id, ("succeeded", "failed"))
    assert other.status == "succeeded", other.error
    assert [p.loss for p in done.loss_curve] == pytest.approx([p.loss for p in other.loss_curve], rel=1e-4,
                                                               abs=1e-5)
    # the training ran in subprocesses: the server holds what it held (a thread would keep ~1 GB on a real model)
    assert psutil.Process().memory_info().rss - rss < 40 * 2**20
    assert ctx.training.get(queued.id).status == "stopped"


def test_a_killed_trainer_is_interrupted_and_a_restarted_studio_resumes_it(make_ctx, tmp_path):
    ctx = _studio(make_ctx, data_dir=tmp_path / "data")
    dataset = seed_dataset(ctx, n=4)
    config = {**FAST, "max_steps": 60, "checkpoint_every": 15, "audition_prompts": 0}
    run = ctx.training.create(CreateRunRequest(dataset_id=dataset, config=config, auto_register=False))
    folder = ctx.settings.data_dir / "training" / "runs" / str(run.id)
    deadline = time.monotonic() + 60
    while not layout.checkpoint_steps(folder) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(int((folder / "pid").read_text()), signal.SIGKILL)  # the trainer dies mid-run (OOM killer, ...)
    dead = wait_status(ctx, run.id, ("interrupted", "failed", "succeeded"), timeout=30)
    assert dead.status == "interrupted" and dead.error_code == "process_died", dead
    assert dead.log_tail and "start" in dead.log_tail
    last = layout.checkpoint_steps(folder)[-1]

    # the studio itself dies while the run is recorded running: the next studio resumes it on its own
    with session_scope(ctx.engine) as s:
        row = s.get(TrainingRun, run.id)
        row.status = "running"
        s.add(row)
        s.commit()
    ctx.close()
    again = make_ctx(data_dir=tmp_path / "data")
    assert again.training.resume_interrupted() == [run.id]
    done = wait_status(again, run.id, ("succeeded", "failed", "interrupted"))
    assert done.status == "succeeded", done.error
    assert [p.step for p in done.loss_curve] == list(range(1, 61))
    assert f"resume from {last}" in (folder / "train.log").read_text()
    checkpoints = layout.checkpoint_steps(folder)
    assert checkpoints == sorted(set(checkpoints)) and checkpoints[-1] == 60


def test_closing_the_studio_stops_the_run_and_the_next_start_resumes_it(make_ctx, tmp_path):
    ctx = _studio(make_ctx, data_dir=tmp_path / "data")
    dataset = seed_dataset(ctx, n=4)
    config = {**FAST, "max_steps": 100000, "checkpoint_every": 100000, "audition_prompts": 0}
    run = ctx.training.create(CreateRunRequest(dataset_id=dataset, config=config, auto_register=False))
    deadline = time.monotonic() + 60
    while ctx.training.get(run.id).step < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    ctx.close()
    closed = make_ctx(data_dir=tmp_path / "data")
    info = closed.training.get(run.id)
    assert info.status == "interrupted" and info.checkpoints[-1].resumable
    assert closed.training.resume_interrupted() == [run.id]
    assert closed.training.get(run.id).status == "running"
    assert closed.training.stop(run.id).status == "stopped"


def test_a_failed_run_says_why_with_its_log_and_can_be_resumed_once_fixed(make_ctx):
    ctx = _studio(make_ctx)
    dataset = seed_dataset(ctx, n=2)
    _, clips = ctx.datasets.training_clips(dataset)
    saved = clips[0].file.read_bytes()
    clips[0].file.write_bytes(b"not audio")  # the disk lost a clip after the dataset was made
    run = ctx.training.create(CreateRunRequest(dataset_id=dataset, config={**FAST, "audition_prompts": 0},
                                               auto_register=False))
    failed = wait_status(ctx, run.id, ("failed", "succeeded", "interrupted"))
    assert failed.status == "failed" and failed.error_code and failed.error_code != "process_died", failed
    assert failed.error and failed.log_tail and failed.checkpoints[1:] == []
    clips[0].file.write_bytes(saved)
    assert ctx.training.resume(run.id).status in ("queued", "running")
    assert wait_status(ctx, run.id, ("failed", "succeeded", "interrupted")).status == "succeeded"
