"""The studio as a Hugging Face Space: started with the environment a Space sets (SYSTEM=spaces, SPACE_ID), a temp
folder standing for the persistent storage /data, and a stand-in ZeroGPU decorator (tests/fixtures/fake_spaces)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from studio.config import PROJECT_ROOT, parse_settings
from studio.registry import load_registry, parse_registry
from studio.runtime.memory import Hardware
from studio.runtime.zerogpu import MAX_S, MIN_S, gpu_seconds
from studio.services.models import default_model
from studio.space import (NO_PERSISTENT_STORAGE, STORAGE_ENV, admin_login_hint, prepare_environment,
                          storage_warning)
from tests.conftest import LOCAL, registry_dict, rest_client
from tests.live import free_port

ROOT = Path(__file__).resolve().parents[1]
FAKE_SPACES = ROOT / "tests" / "fixtures" / "fake_spaces"
REGISTRY = load_registry(PROJECT_ROOT / "registry.yaml")


# ---- the default model for the hardware: a pure function over the registry -------------------------------------
@pytest.mark.parametrize("hardware,expected", [
    (Hardware("zerogpu", half=True), "musicgen-small"),  # a big shared GPU, time-limited: the fastest
    (Hardware("cuda", 15.6, 15.0, half=True), "musicgen-small"),  # a T4 (16 GB cards report a little less)
    (Hardware("cuda", 24.0, 22.0, half=True), "musicgen-medium"),
    (Hardware("cuda", 80.0, 60.0, half=True), "musicgen-medium"),  # never large by default: medium is plenty
    (Hardware("cuda", 24.0, 20.0, half=False), "musicgen-medium"),  # float32: 11 GB needed, 20 free
    (Hardware("cuda", 24.0, 8.0, half=False), "musicgen-small"),  # medium does not fit what is free
    (Hardware("cuda", 80.0, 3.0, half=True), "musicgen-small"),  # a busy big GPU: what fits
    (Hardware("cuda", 8.0, 1.0, half=True), "studio-tiny"),  # nothing fits
    (Hardware("cpu", 16.0, 10.0), "musicgen-small"),  # the registry's default
    (Hardware("cpu", 4.0, 2.0), "studio-tiny"),  # too little memory for it
    (Hardware("mps", 32.0, 20.0), "musicgen-small"),
], ids=lambda v: v if isinstance(v, str) else f"{v.kind}-{v.total_gb:g}-{v.free_gb:g}-{'half' if v.half else 'fp32'}")
def test_default_model_by_hardware(hardware, expected):
    model_id, why = default_model(REGISTRY, hardware)
    assert model_id == expected
    assert why


def test_default_model_says_why_for_a_person():
    assert "slow" in default_model(REGISTRY, Hardware("cpu", 16.0, 10.0))[1]  # CPU generation is slow: said
    assert "ZeroGPU" in default_model(REGISTRY, Hardware("zerogpu"))[1]
    assert "24 GB" in default_model(REGISTRY, Hardware("cuda", 24.0, 22.0, half=True))[1]
    # a registry without the MusicGen entries: its own default
    assert default_model(parse_registry(registry_dict()), Hardware("zerogpu"))[0] == "studio-tiny"


def test_gpu_duration_follows_the_job_within_zerogpus_limits():
    small = REGISTRY.get("musicgen-small").parameters
    large = REGISTRY.get("musicgen-large").parameters
    steps_30s = 30 * 50 + 3
    assert MIN_S < gpu_seconds(steps_30s, None, small) < MAX_S  # a 30 s clip of Small: about a minute
    assert gpu_seconds(steps_30s, None, small) < gpu_seconds(steps_30s, None, large)
    assert gpu_seconds(50, None, small) == MIN_S  # a second of music still asks for the minimum
    assert gpu_seconds(steps_30s * 6, None, large) == MAX_S  # never more than ZeroGPU grants
    assert gpu_seconds(1000, 0.05, small) == int(15 + 1.5 * 1000 * 0.05)  # the measured speed wins over the guess


# ---- settings on a Space: where the data goes ------------------------------------------------------------------
def _space_env(storage: Path, **extra) -> dict:
    return {"SYSTEM": "spaces", "SPACE_ID": "owner/name", STORAGE_ENV: str(storage), **extra}


def test_a_space_keeps_its_data_on_persistent_storage(tmp_path):
    storage = tmp_path / "data"
    storage.mkdir()
    s = parse_settings([], environ=_space_env(storage))
    assert (s.host, s.port) == ("0.0.0.0", 7860)
    assert s.data_dir == storage / "text2song" and s.space_storage == storage
    assert s.login_required and storage_warning(s) is None
    env: dict = {}
    prepare_environment(s, env)
    assert env["HF_HOME"] == str(storage / ".huggingface")
    # an explicit choice wins: the data directory, the cache, a Space's own HF_HOME
    explicit = parse_settings(["--data-dir", str(tmp_path / "mine"), "--hf-cache-dir", str(tmp_path / "hf")],
                              environ=_space_env(storage))
    assert explicit.data_dir == tmp_path / "mine"
    assert "lost when the Space restarts" in storage_warning(explicit)  # not on the storage: said
    env = {}
    prepare_environment(explicit, env)
    assert env == {}
    env = {"HF_HOME": "/elsewhere"}
    prepare_environment(s, env)
    assert env == {"HF_HOME": "/elsewhere"}


@pytest.mark.parametrize("storage", ["missing", "a-file"])
def test_a_space_without_persistent_storage_says_everything_is_lost(tmp_path, storage):
    path = tmp_path / storage
    if storage == "a-file":
        path.write_text("not a folder")
    s = parse_settings([], environ=_space_env(path))
    assert s.space_storage is None and s.data_dir == PROJECT_ROOT / "adapters_db"  # today's default
    assert NO_PERSISTENT_STORAGE in storage_warning(s)
    env: dict = {}
    prepare_environment(s, env)
    assert "HF_HOME" not in env


def test_off_a_space_nothing_changes(tmp_path):
    s = parse_settings([], environ={STORAGE_ENV: str(tmp_path)})
    assert (s.host, s.space_id, s.space_storage, s.zero_gpu) == ("127.0.0.1", None, None, False)
    assert storage_warning(s) is None and not s.login_required


# ---- in process: the page's notice, the GPU function, the login -------------------------------------------------
ADMIN = ("root", "root-pass-1")


def _gradio_config(ctx) -> dict:
    from fastapi.testclient import TestClient

    from studio.server import build_app

    with TestClient(build_app(ctx, load_model=False), base_url=LOCAL) as c:
        assert c.get("/config").status_code == 401  # a Space opens nothing without a login
        return c.get("/config", auth=ADMIN).json()


def test_the_page_warns_admins_of_a_space_without_persistent_storage(make_ctx, tmp_path):
    ctx = make_ctx(space_id="owner/name", auth=ADMIN)
    notes = [c for c in _gradio_config(ctx)["components"] if c.get("props", {}).get("elem_id") == "storage-warning"]
    assert len(notes) == 1 and NO_PERSISTENT_STORAGE in notes[0]["props"]["value"]
    assert "admin-only" in notes[0]["props"]["elem_classes"]  # hidden from members when the page loads
    storage = tmp_path / "storage"
    storage.mkdir()
    kept = make_ctx(space_id="owner/name", space_storage=storage, data_dir=storage / "text2song", auth=ADMIN)
    assert not [c for c in _gradio_config(kept)["components"]
                if c.get("props", {}).get("elem_id") == "storage-warning"]


@pytest.fixture
def fake_spaces(monkeypatch):
    sys.path.insert(0, str(FAKE_SPACES))
    monkeypatch.delitem(sys.modules, "spaces", raising=False)
    import spaces

    yield spaces
    sys.path.remove(str(FAKE_SPACES))
    sys.modules.pop("spaces", None)


def test_on_a_space_generation_runs_in_the_gpu_function(make_ctx, fake_spaces):
    from studio.services.generation import GenerateRequest

    ctx = make_ctx(space_id="owner/name")
    wrapped = [c for c in fake_spaces.calls if c["event"] == "wrapped"]
    assert [(c["name"], c["generator"], c["dynamic"]) for c in wrapped] == [("LocalWorker._gpu_events", True, True)]
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    steps = []
    result = ctx.generation.generate(GenerateRequest(prompt="calm piano", duration_s=0.5, seed=3),
                                     on_step=lambda done, total: steps.append((done, total)))
    assert result.output_file.is_file() and steps  # progress crossed from the GPU function
    calls = [c for c in fake_spaces.calls if c["event"] == "call"]
    assert len(calls) == 1 and MIN_S <= calls[0]["duration"] <= MAX_S
    # the same seed off a Space gives the same audio: the GPU function changes where the work runs, not the work
    import soundfile as sf

    plain = make_ctx()
    assert plain.manager.switch_and_wait("studio-tiny").stage == "ready"
    again = plain.generation.generate(GenerateRequest(prompt="calm piano", duration_s=0.5, seed=3))
    assert (sf.read(result.output_file)[0] == sf.read(again.output_file)[0]).all()
    assert len([c for c in fake_spaces.calls if c["event"] == "call"]) == 1  # off a Space: not wrapped


def test_a_job_cancelled_while_its_batch_runs_in_the_gpu_function_is_cancelled(make_ctx, fake_spaces):
    """On ZeroGPU the GPU process may not see a cancel in time: the studio drops what that row still sends."""
    from studio.errors import Cancelled
    from studio.services.generation import JobRequest
    from tests.live import held_decoding

    ctx = make_ctx(space_id="owner/name")
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    with held_decoding(ctx) as running:
        accepted = ctx.generation.submit(JobRequest(prompt="two takes", duration_s=2, seed=1, variations=2))
        assert running.wait(20)
        cancelled, kept = accepted.job_ids
        assert ctx.generation.cancel_job(cancelled) == "running"
    with pytest.raises(Cancelled):
        ctx.generation.wait(cancelled)
    assert ctx.generation.wait(kept).output_file.is_file()
    assert ctx.jobs.get(kept).batch_size == 2 and not ctx.jobs.get(cancelled).has_audio


def test_a_space_without_any_login_opens_nothing(make_ctx):
    ctx = make_ctx(space_id="owner/name", host="0.0.0.0")
    with rest_client(ctx) as c:
        assert c.get("/api/models/current").status_code == 401


def test_the_first_admin_hint_names_the_secret():
    hint = admin_login_hint("owner/name")
    assert "STUDIO_AUTH=USER:PASS" in hint and "https://huggingface.co/spaces/owner/name/settings" in hint


# ---- python app.py as a Space starts it ------------------------------------------------------------------------
def _request(url: str, body: dict | None = None, auth: tuple[str, str] | None = None, timeout: float = 60):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"} if body is not None else {})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _space_process(tmp_path: Path, storage: Path, *argv: str, **env) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "HF_", "SPACE"))}
    environ.update(_space_env(storage), PYTHONPATH=os.pathsep.join([str(FAKE_SPACES), str(ROOT)]),
                   FAKE_SPACES_LOG=str(tmp_path / "spaces.jsonl"), HF_HUB_OFFLINE="1", **env)
    return subprocess.Popen([sys.executable, "app.py", *argv], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_app_started_as_a_space(tmp_path, tiny_folder):
    """SYSTEM=spaces, SPACE_ID, persistent storage, the admin secret, no internet: it serves 0.0.0.0, keeps its
    data and the HF cache on the storage, asks for a login, loads what it can and generates in the GPU function."""
    storage = tmp_path / "storage"
    shutil.copytree(tiny_folder, storage / "text2song" / "models" / "studio-tiny")  # built once per session
    port = free_port()
    admin = ("owner", "pass-word")
    proc = _space_process(tmp_path, storage, "--port", str(port), STUDIO_AUTH=":".join(admin))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            try:
                status, body = _request(f"{base}/api/models/current", auth=admin, timeout=5)
                if status == 200 and (cur := json.loads(body))["model"] and cur["state"] == "idle":
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.3)
        else:
            pytest.fail("the Space never loaded a model")
        # offline, the Space's model (MusicGen Small on this CPU) cannot be downloaded: studio-tiny, saying why
        assert cur["model"]["id"] == "studio-tiny"
        assert "MusicGen Small could not be loaded" in cur["note"], cur["note"]
        assert _request(f"{base}/api/models/current")[0] == 401  # nothing without the login
        assert _request(f"{base}/")[0] == 401
        status, body = _request(f"{base}/api/generate", {"prompt": "calm piano", "duration_s": 0.5}, auth=admin)
        assert status == 200, body
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"http://0.0.0.0:{port}" in output
    assert "no persistent storage" not in output and "No admin account yet" not in output
    assert (storage / "text2song" / "studio.db").is_file()  # the data directory on the storage
    calls = [json.loads(line) for line in (tmp_path / "spaces.jsonl").read_text().splitlines()]
    assert [c["name"] for c in calls if c["event"] == "wrapped"] == ["LocalWorker._gpu_events"]
    run = [c for c in calls if c["event"] == "call"]
    assert len(run) == 1 and MIN_S <= run[0]["duration"] <= MAX_S  # called for the generation, with a duration
    assert run[0]["hf_home"] == str(storage / ".huggingface")  # the HF cache on the storage


def test_a_space_without_storage_or_admin_says_so_at_start(tmp_path):
    """The warnings come before anything heavy loads (here the start then stops: no such GPU)."""
    proc = _space_process(tmp_path, tmp_path / "no-storage", "--data-dir", str(tmp_path / "data"),
                          "--device", "cuda:7")
    output = proc.communicate(timeout=90)[0]
    assert NO_PERSISTENT_STORAGE in output
    assert admin_login_hint("owner/name") in output  # no STUDIO_AUTH secret and no account yet
    assert "cannot start" in output and proc.returncode != 0
