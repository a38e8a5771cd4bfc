"""Crash recovery: a studio killed with SIGKILL in the middle of its work (decoding, writing audio, receiving an
adapter, building studio-tiny) leaves jobs open and temporary files behind; the next start records the running jobs
as interrupted, runs the queued ones again and removes the files."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.db.recovery import INTERRUPTED
from studio.errors import CannotStart
from studio.runtime.tiny import build_tiny_model
from tests.adapters_factory import make_archive, make_lora
from tests.conftest import registry_dict

ROOT = Path(__file__).resolve().parents[1]

# One studio process doing four things at once, each stopped at a point inside its operation; the test then kills
# it with SIGKILL (no clean-up handler, no `finally` runs), exactly as `kill -9` or a power cut would.
CHILD = r'''
import json, os, shutil, sys, threading
from pathlib import Path

from studio.config import Settings
from studio.context import build_context
from studio.registry import parse_registry
from studio.services.adapters import RegisterAdapterRequest
from studio.services.generation import GenerateRequest, JobRequest
import studio.runtime.tiny as tiny

data_dir, archive, registry = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
hold = threading.Event()  # never set: each operation stays where it reported itself


def reached(what):
    print(what, flush=True)
    hold.wait()


def settings(folder):
    return Settings(data_dir=folder, load_at_start=False, device="cpu", hf_cache_dir=folder.parent / "hf-cache")


# Two studios on the same data (each with its own model): one is decoding, the other writing a job's audio.
decoding, writing = (build_context(settings(data_dir), parse_registry(registry)) for _ in range(2))
for ctx in (decoding, writing):
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"

real_write = Path.write_bytes  # the audio is encoded in memory, then written to "<name>.part" and renamed
def half_written(self, data):
    written = real_write(self, data)
    if self.name.endswith(".part"):  # the ".part" file is there, not yet renamed to its final name
        reached("writing audio")
    return written
Path.write_bytes = half_written

real_progress = decoding.queue.progress
def progress(job_id, done, total, eta_s):  # in the worker's thread: the decode stops here
    real_progress(job_id, done, total, eta_s)
    if done >= 3:
        decoding.generation.submit(JobRequest(prompt="blues", duration_s=0.5, seed=3))  # waits behind "rock"
        reached("decoding")
decoding.queue.progress = progress

def os_replace_held(src, dst):
    reached("building studio-tiny")
tiny.os.replace = os_replace_held  # studio-tiny is built in models/.tiny-*, then moved into place

def upload():
    spool = decoding.settings.tmp_dir / "upload-1"  # where the API receives an upload
    spool.mkdir(parents=True)
    shutil.copy(archive, spool / "archive")
    decoding.adapters.register(RegisterAdapterRequest(source="upload"), upload=spool / "archive",
                               upload_name="lofi.zip", on_progress=lambda f, m: reached("receiving an adapter"))

jobs = [lambda: decoding.generation.generate(GenerateRequest(prompt="rock", duration_s=20, seed=1)),
        lambda: writing.generation.generate(GenerateRequest(prompt="jazz", duration_s=0.5, seed=2)),
        lambda: tiny.build_tiny_model(data_dir / "models" / "second-tiny"),
        upload]
for job in jobs:
    threading.Thread(target=job, daemon=True).start()
hold.wait()
'''
STAGES = {"decoding", "writing audio", "building studio-tiny", "receiving an adapter"}


def test_a_studio_killed_mid_operation_is_recovered_at_the_next_start(tmp_path, tiny_folder, make_ctx):
    data_dir = tmp_path / "data"
    shutil.copytree(tiny_folder, data_dir / "models" / "studio-tiny")
    archive = make_archive(make_lora(tiny_folder, tmp_path / "lofi", base_name="studio-tiny"), tmp_path / "lofi.zip")
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data_dir), str(archive), json.dumps(registry_dict())],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reached: set[str] = set()
    deadline = time.monotonic() + 240
    try:
        while reached != STAGES and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            reached.add(line.strip())
        assert reached == STAGES, proc.stderr.read() if proc.poll() is not None else reached
        # While it runs, a second studio on the same data is refused: it would close the first one's live jobs.
        with pytest.raises(CannotStart) as info:
            make_ctx(data_dir=data_dir)
        assert info.value.message == (f"another Text2Song Studio (process {proc.pid}) is using the data directory "
                                      f"{data_dir}: stop it, or start this one with another --data-dir.")
        assert (data_dir / "tmp" / "upload-1").is_dir()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    # What a kill leaves: two jobs "running" forever, one queued, a half-written audio file and three temporary
    # folders.
    def leftovers():
        return sorted(str(p.relative_to(data_dir)) for pattern in ("tmp/*", "adapters/.incoming-*",
                                                                     "models/.tiny-*", "outputs/*.part")
                      for p in data_dir.glob(pattern))
    left = leftovers()
    assert any(p.startswith("adapters/.incoming-") for p in left) and any(p.startswith("models/.tiny-") for p in left)
    assert "tmp/upload-1" in left and any(p.endswith(".part") for p in left)
    size_left = sum(f.stat().st_size for p in left for f in [data_dir / p, *(data_dir / p).rglob("*")] if f.is_file())
    assert size_left > 0

    ctx = make_ctx(data_dir=data_dir)  # the next start on the same data
    with ctx.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT prompt, status, error, output_file, finished_at FROM job "
                                    "ORDER BY id").all()
    assert sorted((r[0], r[1], r[2], r[3]) for r in rows) == [("blues", "queued", None, None),
                                                            ("jazz", "interrupted", INTERRUPTED, None),
                                                            ("rock", "interrupted", INTERRUPTED, None)]
    assert all(r[4] is not None for r in rows if r[1] != "queued")
    assert leftovers() == [] and list((data_dir / "tmp").iterdir()) == []
    # The queued job runs again once the studio starts its work (loading its model first), nothing accepted lost.
    blues = next(i for i, r in enumerate(rows, 1) if r[0] == "blues")
    ctx.start_background_load().join(60)
    assert ctx.generation.wait(blues).prompt == "blues"
    interrupted = next(i for i, r in enumerate(rows, 1) if r[0] == "jazz")
    again = ctx.generation.resubmit(interrupted)  # an interrupted job is resubmittable: same request, new job
    assert ctx.generation.wait(again.job_id).seed == 2
    assert (data_dir / "models" / "studio-tiny" / "model.safetensors").is_file()  # nothing of value was removed
    assert not (data_dir / "models" / "second-tiny").exists()  # the interrupted build was never moved into place
    # The interrupted build does not block the next one.
    assert (build_tiny_model(data_dir / "models" / "second-tiny") / "model.safetensors").is_file()


@pytest.mark.parametrize("status,after", [("running", "interrupted"), ("queued", "queued"), ("succeeded", "succeeded"),
                                          ("failed", "failed"), ("cancelled", "cancelled")])
def test_only_running_jobs_are_interrupted_at_start(db_url, make_ctx, status, after):
    from studio.db.engine import session_scope
    from studio.db.jobs import create_job

    ctx = make_ctx()
    with session_scope(ctx.engine) as session:
        job = create_job(session, prompt="p", model_id="studio-tiny", settings={}, seed=1, duration_s=1.0,
                         sample_rate=32000, status=status, error=None if status != "failed" else "earlier error")
    again = make_ctx(data_dir=ctx.settings.data_dir)
    with again.engine.connect() as conn:
        row = conn.exec_driver_sql(f"SELECT status, error FROM job WHERE id = {job.id}").one()
    assert row[0] == after
    assert (row[1] == INTERRUPTED) is (after == "interrupted")
