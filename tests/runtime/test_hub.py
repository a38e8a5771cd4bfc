"""Hub downloads end to end: the studio's real code path (manager -> store -> huggingface_hub.snapshot_download)
against a fake hub on 127.0.0.1 (tests/fakehub.py) serving studio-tiny as the repo of the 'tiny-hub' model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

from studio.services.generation import GenerateRequest
from tests.conftest import registry_dict, rest_client
from tests.fakehub import Failure, FakeHub, serve_repos

REPO = "test-org/tiny-musicgen"
CACHE_FOLDER = "models--test-org--tiny-musicgen"
# Served beside the model but never wanted: audiocraft's pickled checkpoint and repo clutter.
UNWANTED = {"pytorch_model.bin": b"\x80\x04\x95pickled audiocraft checkpoint\x00" * 4096,
            "README.md": b"# tiny musicgen\n", ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}


def _served_files(tiny_folder: Path) -> dict[str, bytes]:
    return {**{p.name: p.read_bytes() for p in tiny_folder.iterdir() if p.is_file()}, **UNWANTED}


def _model_bytes(tiny_folder: Path) -> int:
    """What the studio must download: the transformers folder (json + safetensors), nothing else."""
    return sum(p.stat().st_size for p in tiny_folder.iterdir() if p.is_file())


@pytest.fixture
def hub(tiny_folder) -> FakeHub:
    with serve_repos({REPO: _served_files(tiny_folder)}) as fake:
        yield fake


@pytest.fixture
def slow_hub(hub, monkeypatch) -> FakeHub:
    """The hub serving in 64 KiB chunks, 5 ms apart (~0.4 s for the model), and huggingface_hub reading in 64 KiB
    chunks instead of 10 MB ones (progress is counted per chunk read): several byte reports per download."""
    hub.chunk_size, hub.delay = 64 * 1024, 0.005
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    return hub


def _generate(ctx, seed=1):
    return ctx.generation.generate(GenerateRequest(prompt="x", duration_s=1.0, seed=seed))


def _available(ctx, model_id: str) -> bool:
    return next(m for m in ctx.models.list_models() if m.id == model_id).available


def _byte_events(events):
    return [e for e in events if e.stage == "downloading" and e.bytes_total]


def test_switch_downloads_with_byte_progress_then_loads_and_generates(make_ctx, slow_hub, tiny_folder):
    ctx = make_ctx(hf_endpoint=slow_hub.url)
    events = list(ctx.manager.switch("tiny-hub"))
    stages = [e.stage for e in events]

    assert stages[0] == "checking" and stages[-1] == "ready", [e.message for e in events]
    first_loading = stages.index("loading")
    assert all(s != "downloading" for s in stages[first_loading:]), stages  # downloaded, then loaded
    progress = _byte_events(events)
    assert len(progress) >= 3, f"expected several byte reports, got {[e.message for e in progress]}"
    assert stages.index("downloading") < first_loading
    done = [e.bytes_done for e in progress]
    assert done == sorted(done), f"bytes_done went backwards: {done}"
    assert progress[-1].bytes_done == progress[-1].bytes_total == _model_bytes(tiny_folder)
    assert progress[-1].fraction == 1.0
    assert all(0 <= e.fraction <= 1 and e.model_id == "tiny-hub" for e in progress)

    assert ctx.manager.status().model_id == "tiny-hub"
    assert ctx.manager.status().state == "idle"
    result = _generate(ctx)
    assert result.model_id == "tiny-hub" and result.output_file.is_file()


def test_download_lands_in_the_hf_cache_and_skips_pickles(make_ctx, hub, tiny_folder):
    ctx = make_ctx(hf_endpoint=hub.url)
    assert ctx.manager.switch_and_wait("tiny-hub").stage == "ready"

    repo_cache = Path(ctx.settings.hf_cache_dir) / CACHE_FOLDER
    commit = hub.repo(REPO).commit
    assert (repo_cache / "refs" / "main").read_text() == commit
    snapshot = repo_cache / "snapshots" / commit
    wanted = {p.name for p in tiny_folder.iterdir() if p.is_file()}
    assert {p.name for p in snapshot.iterdir()} == wanted
    assert (snapshot / "model.safetensors").read_bytes() == (tiny_folder / "model.safetensors").read_bytes()
    assert (snapshot / "model.safetensors").resolve().parent == repo_cache / "blobs"  # hub cache layout
    assert not list(Path(ctx.settings.hf_cache_dir).rglob("*.incomplete"))

    asked = hub.requested_files()
    assert asked == wanted, f"the studio asked the hub for {sorted(asked)}"
    assert not set(UNWANTED) & asked, "pickled weights / clutter were requested"
    assert not list(Path(ctx.settings.hf_cache_dir).rglob("pytorch_model.bin"))
    assert not list(Path(ctx.settings.data_dir).rglob("pytorch_model.bin"))
    for name in wanted:
        assert len(hub.gets(name)) == 1, f"{name} was downloaded {len(hub.gets(name))} times"


def test_a_cached_model_needs_no_hub_at_all(make_ctx, hub):
    first = make_ctx(hf_endpoint=hub.url)
    assert _available(first, "tiny-hub") is False
    assert hub.requests == [], "checking availability must not touch the network"
    assert first.manager.switch_and_wait("tiny-hub").stage == "ready"
    assert _available(first, "tiny-hub") is True

    hub.reset()
    second = make_ctx(hf_endpoint=hub.url)  # a fresh studio sharing the same HF cache
    assert second.settings.hf_cache_dir == first.settings.hf_cache_dir
    info = {m.id: m for m in second.models.list_models()}
    assert info["tiny-hub"].available is True and info["tiny-hub"].loaded is False
    for target in ("studio-tiny", "tiny-hub"):
        events = list(second.manager.switch(target))
        assert events[-1].stage == "ready", events[-1].message
        assert "downloading" not in [e.stage for e in events]
    assert second.manager.status().model_id == "tiny-hub"
    assert _generate(second).model_id == "tiny-hub"
    assert hub.requests == [], f"a cached model made requests: {[(r.method, r.path) for r in hub.requests]}"


@pytest.mark.parametrize("rules", [
    [Failure(status=500)],
    [Failure(drop_after=2_000_000, times=1), Failure(status=503)],  # cut midway; the resumed request fails
], ids=["server-error", "dropped-midway-then-server-error"])
def test_failed_download_keeps_the_current_model(make_ctx, slow_hub, rules):
    ctx = make_ctx(hf_endpoint=slow_hub.url)
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    note = ctx.manager.status().note  # why Studio Tiny is loaded
    slow_hub.fail("model.safetensors", *rules)

    events = list(ctx.manager.switch("tiny-hub"))
    final = events[-1]
    assert final.stage == "error" and final.code == "download_failed", final
    assert "Tiny Hub" in final.message and "Studio Tiny stays loaded" in final.message, final.message
    assert [e.stage for e in events].count("error") == 1
    assert not {"unloading", "loading"} & {e.stage for e in events}, "the current model was touched"
    if rules[0].drop_after:
        assert any(e.bytes_done for e in _byte_events(events)), "no byte progress before the connection broke"
    assert len(slow_hub.gets("model.safetensors")) == len(rules)

    status = ctx.manager.status()
    assert status.model_id == "studio-tiny" and status.state == "idle"
    assert status.note == note and status.progress == final  # the failure is the switch's, the note the model's
    assert _generate(ctx).model_id == "studio-tiny"
    assert _available(ctx, "tiny-hub") is False  # a partial snapshot is not a usable model
    assert not list(Path(ctx.settings.hf_cache_dir).rglob("*.incomplete")), "partial download left on disk"


def test_retry_after_a_failed_download_fetches_only_what_is_missing(make_ctx, hub, tiny_folder):
    ctx = make_ctx(hf_endpoint=hub.url)
    hub.fail("model.safetensors")
    final = ctx.manager.switch_and_wait("tiny-hub")
    assert final.code == "download_failed" and "No model is loaded" in final.message
    assert ctx.manager.status().model_id is None

    hub.clear_failures()
    hub.reset()
    assert ctx.manager.switch_and_wait("tiny-hub").stage == "ready"
    assert hub.requested_files("GET") == {"model.safetensors"}, "files already downloaded were fetched again"
    assert _generate(ctx).model_id == "tiny-hub"


def test_a_dropped_connection_is_resumed(make_ctx, slow_hub, tiny_folder):
    ctx = make_ctx(hf_endpoint=slow_hub.url)
    slow_hub.fail("model.safetensors", Failure(drop_after=1_000_000, times=1))
    events = list(ctx.manager.switch("tiny-hub"))
    assert events[-1].stage == "ready", events[-1].message

    first, resumed = slow_hub.gets("model.safetensors")
    assert first.range is None and resumed.range and resumed.range.startswith("bytes=") and resumed.status == 206
    done = [e.bytes_done for e in _byte_events(events)]
    assert done == sorted(done) and done[-1] == _model_bytes(tiny_folder)
    snapshot = Path(ctx.settings.hf_cache_dir) / CACHE_FOLDER / "snapshots" / slow_hub.repo(REPO).commit
    assert (snapshot / "model.safetensors").read_bytes() == (tiny_folder / "model.safetensors").read_bytes()


def test_unknown_repo_and_unreachable_hub_are_reported(make_ctx, hub):
    reg = registry_dict(**{"ghost": {"source": {"hub": "test-org/no-such-repo"}}})
    ctx = make_ctx(reg, hf_endpoint=hub.url)
    final = ctx.manager.switch_and_wait("ghost")
    assert final.code == "download_failed" and "test-org/no-such-repo was not found" in final.message, final.message

    hub.close()  # the hub goes away: connection refused
    final = ctx.manager.switch_and_wait("tiny-hub")
    assert final.code == "download_failed" and "cannot be reached" in final.message, final.message
    assert ctx.manager.status().state == "idle"


def test_rest_switch_streams_download_progress(make_ctx, slow_hub, tiny_folder):
    ctx = make_ctx(hf_endpoint=slow_hub.url)
    with rest_client(ctx) as client:
        with client.stream("POST", "/api/models/current", json={"model_id": "tiny-hub"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in response.iter_lines() if line]
        assert all(line.startswith("data: ") for line in lines), lines
        events = [json.loads(line[len("data: "):]) for line in lines]

        assert events[0]["stage"] == "checking" and events[-1]["stage"] == "ready"
        assert all(e["model_id"] == "tiny-hub" for e in events)
        progress = [e for e in events if e["stage"] == "downloading" and "bytes_total" in e]
        assert len(progress) >= 2, events
        assert progress[-1]["bytes_done"] == progress[-1]["bytes_total"] == _model_bytes(tiny_folder)
        assert [e["stage"] for e in events].index("loading") > [e["stage"] for e in events].index("downloading")

        current = client.get("/api/models/current").json()
        assert current["model"]["id"] == "tiny-hub" and current["state"] == "idle"
        models = {m["id"]: m for m in client.get("/api/models").json()}
        assert models["tiny-hub"]["available"] and models["tiny-hub"]["loaded"]
