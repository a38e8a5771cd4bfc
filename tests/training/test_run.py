"""`python -m studio.training.run <folder>` as the studio starts it: a kill -9 mid-run, a resume in a new process
that continues the same trajectory, the stop file's latency, and a spec that cannot be used. Each subprocess start
costs seconds: everything that can be is tested in-process (test_trainer.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.training import layout
from studio.training.layout import write_json_atomic
from studio.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]


def start(folder: Path) -> subprocess.Popen:
    log = open(folder / layout.LOG_FILE, "ab")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    try:
        return subprocess.Popen([sys.executable, "-m", "studio.training.run", str(folder)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def wait_for(folder: Path, proc: subprocess.Popen, condition, timeout: float = 60.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = layout.read_events(folder / layout.EVENTS_FILE)[0]
        if condition(events):
            return events
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early ({proc.returncode}): "
                                 f"{(folder / layout.LOG_FILE).read_text()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out")


def steps(events) -> dict[int, float]:
    return {e.step: e.loss for e in events if e.kind == "step"}


def test_kill_then_resume_in_a_new_process_continues_the_same_trajectory(make_spec):
    # a constant rate after warm-up: the losses do not depend on the total, so a long run can be cut short
    fields = dict(max_steps=100_000, checkpoint_every=10, lr_scheduler="constant", batch_size=1, clip_duration_s=1.0)
    folder, spec = make_spec("run", **fields)
    proc = start(folder)
    wait_for(folder, proc, lambda ev: any(e.kind == "checkpoint" for e in ev) and max(steps(ev), default=0) >= 13)
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: no done event, maybe a half-written line or checkpoint
    proc.wait()
    resumable = [s for s in layout.checkpoint_steps(folder)
                 if (layout.checkpoint_folder(folder, s) / layout.TRAINER_STATE_FILE).is_file()]
    last = resumable[-1]

    write_json_atomic(folder / layout.SPEC_FILE, spec.model_copy(update={"resume_from": last}))
    proc = start(folder)
    events = wait_for(folder, proc, lambda ev: max(steps(ev), default=0) >= last + 5)
    (folder / layout.STOP_FILE).touch()
    seen = max(steps(layout.read_events(folder / layout.EVENTS_FILE)[0]))  # done, or written since the stop
    assert proc.wait(timeout=60) == 0  # the interpreter's exit after it (seconds on a loaded machine, at nice 10)
    events = layout.read_events(folder / layout.EVENTS_FILE)[0]
    done = events[-1]
    assert (done.kind, done.status) == ("done", "stopped")
    # the stop takes effect at the end of the step under way (how fast that is: bench, not a timed assertion)
    assert done.step <= seen + 1
    assert [e.kind for e in events].count("resumed") == 1
    got = steps(events)
    assert sorted(got) == list(range(1, done.step + 1))  # one loss per step: the killed part after `last` dropped
    assert layout.checkpoint_steps(folder)[-1] == done.step
    assert not [p.name for p in (folder / layout.CHECKPOINTS_DIR).iterdir() if p.name.startswith(".")]

    # the same run uninterrupted, in-process, to the step the resumed one stopped at
    whole, whole_spec = make_spec("whole", **{**fields, "max_steps": done.step})
    Trainer(whole, whole_spec).run()
    expected = steps(layout.read_events(whole / layout.EVENTS_FILE)[0])
    for step in range(1, done.step + 1):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


@pytest.mark.parametrize("case, rc, code", [
    ("garbage", 1, "bad_spec"),
    ("unknown_field", 1, "bad_spec"),
    ("no_folder", 2, None),
])
def test_a_spec_that_cannot_be_used_fails_cleanly(make_spec, tmp_path, case, rc, code):
    folder, spec = make_spec()
    if case == "garbage":
        (folder / layout.SPEC_FILE).write_text("{not json")
    elif case == "unknown_field":
        (folder / layout.SPEC_FILE).write_text(json.dumps({**spec.model_dump(mode="json"), "surprise": 1}))
    else:
        folder = tmp_path / "nowhere"
    result = subprocess.run([sys.executable, "-m", "studio.training.run", str(folder)], cwd=ROOT, timeout=60,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == rc, result.stderr
    if code:
        done = layout.read_events(folder / layout.EVENTS_FILE)[0][-1]
        assert (done.kind, done.status, done.code) == ("done", "failed", code)
        assert "spec.json" in done.message
