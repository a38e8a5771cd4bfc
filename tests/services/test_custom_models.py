"""Custom models: added from the (fake) hub or a folder inside an import root, refused when the studio cannot run
them (with a code, nothing recorded), removed with or without their files, kept across a restart; and the built-in
stereo model through generation, streaming, adapters and the downmix."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from studio.db.custom_models import list_custom_models
from studio.db.engine import session_scope
from studio.errors import StudioError
from studio.runtime import hub as hub_module
from studio.runtime.tiny import build_tiny_stereo_model
from studio.services.custom_models import AddModelRequest
from tests.conftest import TINY, registry_dict
from tests.fakehub import serve_repos

STEREO = {"source": {"builtin": "studio-tiny-stereo"}, "channels": 2, "codebooks": 8, "parameters": 1265214}


@pytest.fixture(scope="module")
def stereo_folder(tmp_path_factory) -> Path:
    return build_tiny_stereo_model(tmp_path_factory.mktemp("stereo-build") / "studio-tiny-stereo")


def _files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if p.is_file()}


def _stored(ctx) -> list[str]:
    with session_scope(ctx.engine) as session:
        return [row.id for row in list_custom_models(session)]


def _imports(ctx) -> Path:
    root = ctx.settings.data_dir / "imports"
    root.mkdir(exist_ok=True)
    return root


def _leftovers(ctx) -> list[Path]:
    tmp = ctx.settings.tmp_dir
    return [p for p in tmp.iterdir() if p.name.startswith("custom-model-")] if tmp.is_dir() else []


def _switch(ctx, model_id: str):
    events = list(ctx.models.switch(model_id))
    assert events[-1].stage == "ready", events[-1].message
    return events


def test_add_from_the_hub_reads_the_config_alone_then_downloads_at_the_first_switch(make_ctx, tiny_folder):
    with serve_repos({"someone/tiny-finetune": tiny_folder}) as hub:
        ctx = make_ctx(hf_endpoint=hub.url)
        before = ctx.registry.ids()
        added = ctx.custom_models.add(AddModelRequest(source="hub", repo_id="someone/tiny-finetune",
                                                      display_name="My fine-tune"))
        assert hub.requested_files("GET") == {"config.json"}  # no weights fetched to add it
        assert (added.id, added.display_name, added.source) == ("tiny-finetune", "My fine-tune",
                                                                "hub:someone/tiny-finetune")
        assert (added.channels, added.codebooks, added.sample_rate, added.frame_rate) == (1, 4, 32000, 50)
        assert added.parameters == TINY["parameters"] and added.conditioning == ["text"]
        assert added.download_gb == pytest.approx((tiny_folder / "model.safetensors").stat().st_size / 1e9, abs=0.01)
        assert ctx.registry.ids() == [*before, "tiny-finetune"] and _stored(ctx) == ["tiny-finetune"]
        info = ctx.models.get("tiny-finetune")
        assert info.custom and not info.available and info.hub_repo == "someone/tiny-finetune"
        assert ctx.gen_config.get("tiny-finetune").values["top_k"] == 250  # settings seeded like any model
        events = _switch(ctx, "tiny-finetune")
        downloads = [e for e in events if e.stage == "downloading" and e.bytes_total]
        assert downloads and downloads[-1].bytes_done == downloads[-1].bytes_total  # byte progress to the end
        assert "model.safetensors" in hub.requested_files("GET")
    result = ctx.generation.generate(_request(0.5))
    assert result.model_id == "tiny-finetune" and sf.info(result.output_file).duration == pytest.approx(0.5)
    assert not _leftovers(ctx)


def _request(duration_s: float, **fields):
    from studio.services.generation import GenerateRequest

    return GenerateRequest(prompt="rock piano", duration_s=duration_s, seed=1, **fields)


def test_add_from_a_folder_uses_it_in_place_and_derives_stereo(make_ctx, stereo_folder):
    ctx = make_ctx()
    folder = _imports(ctx) / "my-stereo"
    shutil.copytree(stereo_folder, folder)
    preview = ctx.custom_models.inspect(AddModelRequest(source="folder", path=str(folder)))
    assert _stored(ctx) == [] and "my-stereo" not in ctx.registry.ids()  # inspecting stores nothing
    added = ctx.custom_models.add(AddModelRequest(source="folder", path="my-stereo"))  # relative to a root
    assert added == preview
    assert (added.channels, added.codebooks, added.parameters) == (2, 8, STEREO["parameters"])
    assert ctx.models.get("my-stereo").available and ctx.models.get("my-stereo").folder == str(folder.resolve())
    _switch(ctx, "my-stereo")
    assert sf.info(ctx.generation.generate(_request(0.5)).output_file).channels == 2
    assert not any(ctx.settings.models_dir.glob("my-stereo*"))  # used where it is, never copied


def _config(folder: Path, **changes) -> bytes:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    return json.dumps(config).encode()


def _weights(folder: Path) -> bytes:
    return (folder / "model.safetensors").read_bytes()


# (case, files of the repo / folder as a function of studio-tiny's folder, code, HTTP status)
REFUSALS = [
    ("other architecture", lambda f: {"config.json": _config(f, architectures=["T5ForConditionalGeneration"],
                                                             model_type="t5"), "model.safetensors": _weights(f)},
     "unsupported_architecture", 400),
    ("no architecture", lambda f: {"config.json": b'{"hidden_size": 8}', "model.safetensors": _weights(f)},
     "unsupported_architecture", 400),
    ("pickled weights only", lambda f: {"config.json": _config(f), "pytorch_model.bin": b"\x80\x04pickle"},
     "pickled_weights", 400),
    ("no weights", lambda f: {"config.json": _config(f), "README.md": b"hello"}, "missing_weights", 400),
    ("weights in a subfolder only", lambda f: {"config.json": _config(f), "sub/model.safetensors": _weights(f)},
     "missing_weights", 400),
    ("no config", lambda f: {"model.safetensors": _weights(f)}, "missing_config", 400),
    ("config not JSON", lambda f: {"config.json": b"{nope", "model.safetensors": _weights(f)}, "invalid_config", 400),
    ("odd stereo codebooks", lambda f: {"config.json": _config(f, decoder={
        **json.loads((f / "config.json").read_text())["decoder"], "audio_channels": 2, "num_codebooks": 5}),
        "model.safetensors": _weights(f)}, "unsupported_config", 400),
    ("absurd layers", lambda f: {"config.json": _config(f, decoder={
        **json.loads((f / "config.json").read_text())["decoder"], "num_hidden_layers": 10**6}),
        "model.safetensors": _weights(f)}, "unsupported_config", 400),
]


def _nothing_recorded(ctx, ids_before):
    assert ctx.registry.ids() == ids_before and _stored(ctx) == [] and not _leftovers(ctx)


def _repo(case: str) -> str:
    return "someone/bad-" + case.replace(" ", "-")


@pytest.fixture(scope="module")
def refusing(make_module_ctx, tiny_folder):
    """One studio and one fake hub for the tables of refusals (each refusal changes nothing, which each asserts):
    every refused case is a repo of the hub, studio-tiny a good one."""
    repos = {_repo(case): files(tiny_folder) for case, files, _, _ in REFUSALS}
    with serve_repos({**repos, "someone/tiny": tiny_folder}) as hub:
        yield make_module_ctx(hf_endpoint=hub.url), hub


@pytest.mark.parametrize("case,files,code,status", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_what_the_studio_cannot_run_is_refused_from_the_hub_and_from_a_folder(refusing, tiny_folder, case, files,
                                                                              code, status):
    ctx, hub = refusing
    before = ctx.registry.ids()
    hub.reset()
    with pytest.raises(StudioError) as info:
        ctx.custom_models.add(AddModelRequest(source="hub", repo_id=_repo(case)))
    assert (info.value.code, info.value.status) == (code, status), info.value.message
    assert not hub.requested_files("GET") - {"config.json"}  # weights never fetched, pickles least of all
    _nothing_recorded(ctx, before)
    folder = _imports(ctx) / _repo(case).split("/")[1]
    folder.mkdir()
    for name, data in files(tiny_folder).items():
        (folder / name).parent.mkdir(exist_ok=True)
        (folder / name).write_bytes(data)
    with pytest.raises(StudioError) as info:
        ctx.custom_models.add(AddModelRequest(source="folder", path=str(folder)))
    assert (info.value.code, info.value.status) == (code, status), info.value.message
    _nothing_recorded(ctx, before)


REQUEST_REFUSALS = [
    ("bad repo id", dict(source="hub", repo_id="not a repo"), "invalid_repo_id", 400),
    ("bad revision", dict(source="hub", repo_id="a/b", revision="../x"), "invalid_revision", 400),
    ("unknown repo", dict(source="hub", repo_id="someone/missing"), "repo_not_found", 404),
    ("unknown revision", dict(source="hub", repo_id="someone/tiny", revision="v9"), "revision_not_found", 404),
    ("no path", dict(source="folder"), "missing_path", 400),
    ("outside the roots", dict(source="folder", path="/etc"), "path_not_allowed", 400),
    ("missing folder", dict(source="folder", path="nowhere-here"), "folder_not_found", 400),
    ("id taken", dict(source="hub", repo_id="someone/tiny", id="studio-tiny"), "model_exists", 409),
    ("bad id", dict(source="hub", repo_id="someone/tiny", id="Bad Id!"), "invalid_model_id", 400),
    ("repo already listed", dict(source="hub", repo_id="test-org/tiny-musicgen"), "model_exists", 409),
]


@pytest.mark.parametrize("case,fields,code,status", REQUEST_REFUSALS, ids=[r[0] for r in REQUEST_REFUSALS])
def test_bad_requests_are_refused_with_a_code(refusing, case, fields, code, status):
    ctx, _hub = refusing
    before = ctx.registry.ids()
    with pytest.raises(StudioError) as info:
        ctx.custom_models.add(AddModelRequest(**fields))
    assert (info.value.code, info.value.status) == (code, status), info.value.message
    _nothing_recorded(ctx, before)


def test_a_locked_studio_refuses_adding_and_removing(make_ctx, tiny_folder):
    ctx = make_ctx(custom_models=False)
    folder = _imports(ctx) / "tiny-copy"
    shutil.copytree(tiny_folder, folder)
    for call in (lambda: ctx.custom_models.add(AddModelRequest(source="folder", path=str(folder))),
                 lambda: ctx.custom_models.inspect(AddModelRequest(source="folder", path=str(folder))),
                 lambda: ctx.custom_models.remove("studio-tiny")):
        with pytest.raises(StudioError) as info:
            call()
        assert (info.value.code, info.value.status) == ("custom_models_locked", 409)
    assert _stored(ctx) == []


def test_remove_keeps_or_deletes_the_files_and_is_refused_while_in_use(make_ctx, tiny_folder):
    with serve_repos({"someone/keep": tiny_folder, "someone/drop": tiny_folder}) as hub:
        ctx = make_ctx(hf_endpoint=hub.url)
        for repo in ("someone/keep", "someone/drop"):
            ctx.custom_models.add(AddModelRequest(source="hub", repo_id=repo))
            _switch(ctx, repo.split("/")[1])
    cache = ctx.settings.hf_cache_dir
    assert hub_module.cached_snapshot("someone/keep", None, cache) is not None
    with pytest.raises(StudioError) as info:  # loaded
        ctx.custom_models.remove("drop")
    assert info.value.code == "model_loaded" and "drop" in ctx.registry.ids()
    with pytest.raises(StudioError) as info:  # registry.yaml's own
        ctx.custom_models.remove("studio-tiny")
    assert info.value.code == "not_custom"
    with pytest.raises(StudioError) as info:
        ctx.custom_models.remove("no-such-model")
    assert info.value.code == "model_not_found"

    kept = ctx.custom_models.remove("keep", delete_files=False)
    assert not kept.files_deleted and "keep" not in ctx.registry.ids() and _stored(ctx) == ["drop"]
    assert hub_module.cached_snapshot("someone/keep", None, cache) is not None  # still cached
    _switch(ctx, "studio-tiny")
    dropped = ctx.custom_models.remove("drop", delete_files=True)
    assert dropped.files_deleted and dropped.bytes_freed > 0
    assert hub_module.cached_snapshot("someone/drop", None, cache) is None
    assert _stored(ctx) == [] and ctx.registry.ids() == [m["id"] for m in registry_dict()["models"]]


def test_remove_is_refused_while_jobs_wait_for_the_model(make_ctx, tiny_folder):
    from tests.live import held_decoding
    from studio.services.generation import JobRequest

    ctx = make_ctx()
    shutil.copytree(tiny_folder, _imports(ctx) / "waited")
    ctx.custom_models.add(AddModelRequest(source="folder", path="waited"))
    _switch(ctx, "waited")
    with held_decoding(ctx) as running:
        job = ctx.generation.submit(JobRequest(prompt="first", duration_s=0.5, seed=1))
        assert running.wait(20)
        switch = ctx.models.switch("studio-tiny")  # queued behind the job: 'waited' is still needed
        with pytest.raises(StudioError) as info:
            ctx.custom_models.remove("waited")
        # still loaded while its job runs (the switch waits behind it); jobs accepted for a model run on it, so
        # the queue's own check (model_in_use) guards what a switch in between could leave waiting
        assert info.value.code == "model_loaded" and "waited" in ctx.registry.ids()
    ctx.generation.wait(job.job_id)
    assert list(switch)[-1].stage == "ready"
    assert ctx.custom_models.remove("waited").id == "waited"


def test_custom_models_survive_a_restart(make_ctx, tiny_folder, tmp_path):
    ctx = make_ctx(data_dir=tmp_path / "data")
    shutil.copytree(tiny_folder, _imports(ctx) / "kept-model")
    ctx.custom_models.add(AddModelRequest(source="folder", path="kept-model", display_name="Kept"))
    ctx.close()
    again = make_ctx(data_dir=tmp_path / "data", model="kept-model")  # --model may name it
    assert again.models.initial_choice()[0] == "kept-model"
    info = again.models.get("kept-model")
    assert info.custom and info.display_name == "Kept" and info.available
    _switch(again, "kept-model")
    assert again.generation.generate(_request(0.5)).model_id == "kept-model"


# ---- studio-tiny-stereo through every path ------------------------------------------------------------------------
@pytest.fixture
def stereo_ctx(make_ctx, stereo_folder, tmp_path):
    ctx = make_ctx(registry_dict(**{"studio-tiny-stereo": STEREO}))
    shutil.copytree(stereo_folder, ctx.settings.models_dir / "studio-tiny-stereo")
    _switch(ctx, "studio-tiny-stereo")
    return ctx


def test_stereo_tiny_generates_streams_and_downmixes(stereo_ctx):
    from studio.services.generation import JobRequest
    from studio.services.job_events import AudioChunk

    ctx = stereo_ctx
    job = ctx.generation.submit(JobRequest(prompt="rock piano", duration_s=1.5, seed=2))
    items = list(ctx.generation.follow(job.job_id))
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    assert chunks and all(c.audio.shape[1] == 2 for c in chunks)  # streamed in stereo
    assert sum(len(c.audio) for c in chunks) == 48000
    result = ctx.generation.result(job.job_id)
    audio, rate = sf.read(result.output_file)
    assert audio.shape == (48000, 2) and rate == 32000
    assert not (audio[:, 0] == audio[:, 1]).all()  # two channels decoded apart, not one copied
    mono = ctx.generation.generate(_request(1.5, settings={"downmix_to_mono": True}))
    assert sf.info(mono.output_file).channels == 1


def test_stereo_tiny_takes_an_adapter(stereo_ctx, stereo_folder, tmp_path):
    from studio.services.adapters import RegisterAdapterRequest
    from tests.adapters_factory import make_lora

    ctx = stereo_ctx
    folder = _imports(ctx) / "stereo-lora"
    make_lora(stereo_folder, folder, base_name="studio-tiny-stereo")
    adapter = ctx.adapters.register(RegisterAdapterRequest(source="folder", path=str(folder)))
    assert adapter.base_model == "studio-tiny-stereo"
    base = ctx.generation.generate(_request(1.0))
    adapted = ctx.generation.generate(_request(1.0, adapter_id=adapter.id))
    a, b = sf.read(base.output_file)[0], sf.read(adapted.output_file)[0]
    assert a.shape == b.shape == (32000, 2) and adapted.adapter_id == adapter.id
    assert not (a == b).all()  # the LoRA changed the stereo output


def test_a_removed_models_jobs_keep_their_results(make_ctx, stereo_folder):
    """History outlives a custom model: its finished jobs still answer (settings, audio), after a restart too."""
    ctx = make_ctx()
    shutil.copytree(stereo_folder, _imports(ctx) / "short-lived")
    ctx.custom_models.add(AddModelRequest(source="folder", path="short-lived"))
    _switch(ctx, "short-lived")
    done = ctx.generation.generate(_request(0.5, settings={"downmix_to_mono": True}))
    _switch(ctx, "studio-tiny")
    ctx.custom_models.remove("short-lived")
    again = ctx.generation.result(done.job_id)
    assert again.model_id == "short-lived" and again.settings["downmix_to_mono"] is True
    assert again.output_file.is_file() and ctx.jobs.get(done.job_id).status == "succeeded"
