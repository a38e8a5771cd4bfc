"""The studio driven as a script would: the real app served by uvicorn, called with gradio_client and plain HTTP.

Covers the Gradio endpoints a script uses (/generate, /switch_model), their errors, and HTTP Basic auth on both the
REST API (which Gradio's auth= does not protect) and the Gradio routes.
"""
from __future__ import annotations

import base64
import re
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client
from gradio_client.exceptions import AppError, AuthenticationError

from studio.ui.common import NO_ADAPTER
from tests.live import serve

TINY_MAX_S = 30  # studio-tiny's max_duration_s in the test registry (tests/conftest.py)
DEFAULTS = dict(top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def ctx(make_module_ctx):
    """One served studio for the module (serving and connecting cost seconds): studio-tiny loaded, Tiny B to
    switch to. Tests that switch put studio-tiny back; tests that change adapters use their own."""
    from tests.conftest import registry_dict

    context = make_module_ctx(registry_dict(**{"tiny-b": {"display_name": "Tiny B"}}))
    assert context.manager.switch_and_wait("studio-tiny").stage == "ready"
    return context


@pytest.fixture(scope="module")
def url(ctx):
    with serve(ctx) as base:
        yield base


@pytest.fixture(scope="module")
def gclient(url):
    c = Client(url, verbose=False)
    yield c
    c.close()


def _generate(client: Client, prompt="warm lo-fi piano", duration_s=1.0, seed=123, **settings):
    s = {**DEFAULTS, **settings}
    return client.predict(prompt, duration_s, seed, s["top_k"], s["top_p"], s["temperature"], s["guidance_scale"],
                          NO_ADAPTER, api_name="/generate")


# ---- generation --------------------------------------------------------------------------------------------------
def test_generate_returns_wav_of_requested_duration_and_names_seed(gclient):
    audio_path, info = _generate(gclient, duration_s=1.5, seed=4242)
    path = Path(audio_path)
    assert path.is_file() and path.suffix == ".wav"
    wav, sr = sf.read(path)
    assert sf.info(str(path)).format == "WAV"
    assert sr == 32000
    assert len(wav) / sr == pytest.approx(1.5, abs=0.05)
    assert np.isfinite(wav).all()
    assert "4242" in info and "seed" in info.lower()


def test_same_seed_gives_identical_audio(gclient):
    a, _ = _generate(gclient, duration_s=1.0, seed=7)
    b, _ = _generate(gclient, duration_s=1.0, seed=7)
    assert Path(a) != Path(b)  # two jobs, two files ...
    wav_a, _ = sf.read(a)
    wav_b, _ = sf.read(b)
    np.testing.assert_array_equal(wav_a, wav_b)  # ... with the same samples


def test_over_limit_duration_is_refused_with_the_limit(gclient):
    with pytest.raises(AppError) as info:
        _generate(gclient, duration_s=TINY_MAX_S + 1, seed=1)
    text = str(info.value)
    assert f"{TINY_MAX_S}" in text and "31" in text, text
    assert "Traceback" not in text


def test_api_duration_limit_follows_the_loaded_model(make_ctx):
    from tests.conftest import registry_dict

    # the page is built while a 2 s model is loaded; the script then switches to studio-tiny (30 s)
    context = make_ctx(registry_dict(**{"tiny-short": {"display_name": "Tiny Short", "max_duration_s": 2}}))
    assert context.manager.switch_and_wait("tiny-short").stage == "ready"
    with serve(context) as base:
        c = Client(base, verbose=False)
        try:
            job = c.submit("studio-tiny", api_name="/switch_model")
            job.result(timeout=60)
            assert "ready" in job.outputs()[-1][0].lower()
            audio_path, _ = _generate(c, duration_s=3.0, seed=3)  # within studio-tiny's 30 s
            wav, sr = sf.read(audio_path)
            assert len(wav) / sr == pytest.approx(3.0, abs=0.05)
        finally:
            c.close()


def test_two_clients_generate_at_once_and_both_get_their_files(gclient, url):
    """Gradio no longer serialises generation (one job queue orders the work): a second client's request is
    queued while the first one's decodes, and each gets its own file."""
    other = Client(url, verbose=False)
    try:
        s = DEFAULTS
        jobs = [c.submit(prompt, 3.0, 5, s["top_k"], s["top_p"], s["temperature"], s["guidance_scale"], NO_ADAPTER,
                         api_name="/generate")
                for c, prompt in ((gclient, "first client piano"), (other, "second client drums"))]
        (path_a, info_a), (path_b, info_b) = [job.result(timeout=120) for job in jobs]
    finally:
        other.close()
    assert Path(path_a).name.startswith("first-client-piano_job") and Path(path_a).is_file()
    assert Path(path_b).name.startswith("second-client-drums_job") and Path(path_b).is_file()
    waits = [float(re.search(r"waited (\d+\.\d) s", i).group(1)) for i in (info_a, info_b)]
    batched = all("in a batch of 2" in i for i in (info_a, info_b))
    assert batched or max(waits) > 0, (info_a, info_b)  # the two requests were in the queue together


def _submit(client: Client, prompt: str, duration_s: float, takes: int = 1) -> dict:
    s = DEFAULTS
    return client.predict(prompt, duration_s, -1, s["top_k"], s["top_p"], s["temperature"], s["guidance_scale"],
                          NO_ADAPTER, True, takes, api_name="/submit_job")


def test_submit_job_answers_at_once_and_cancel_job_stops_it(gclient, ctx):
    from studio.errors import Cancelled

    running = _submit(gclient, "a long piece to cancel", 20.0)
    assert running["status"] in ("queued", "running") and running["job_ids"] == [running["job_id"]]
    assert running["events_url"] == f"/api/jobs/{running['job_id']}/events"
    takes = _submit(gclient, "two takes that wait", 1.0, takes=2)
    assert len(takes["job_ids"]) == 2 and len(set(takes["seeds"])) == 2
    assert takes["status"] == "queued" and takes["position"] >= 1
    for job_id in takes["job_ids"]:
        assert gclient.predict(job_id, api_name="/cancel_job") == {"job_id": job_id, "cancelled": True,
                                                                    "was": "queued"}
    stopped = gclient.predict(running["job_id"], api_name="/cancel_job")
    assert stopped["cancelled"] is True and stopped["was"] in ("queued", "running")
    for job_id in (running["job_id"], *takes["job_ids"]):
        with pytest.raises(Cancelled):
            ctx.generation.wait(job_id)
    again = gclient.predict(running["job_id"], api_name="/cancel_job")
    assert again == {"job_id": running["job_id"], "cancelled": False, "was": None}  # over already
    with pytest.raises(AppError, match="There is no job 999999"):
        gclient.predict(999999, api_name="/cancel_job")
    with pytest.raises(AppError, match="Takes must be a whole number from 1 to 4"):
        _submit(gclient, "x", 1.0, takes=5)


def test_unknown_adapter_is_refused(gclient):
    with pytest.raises(AppError, match="Unknown adapter 'no-such-adapter'"):
        gclient.predict("x", 1.0, 1, 250, 0.0, 1.0, 3.0, "no-such-adapter", api_name="/generate")
    with pytest.raises(AppError, match="There is no adapter 999"):
        gclient.predict("x", 1.0, 1, 250, 0.0, 1.0, 3.0, "999", api_name="/generate")


@pytest.fixture(scope="module")
def registered(ctx, tiny_folder):
    """lofi-piano for studio-tiny (the loaded model) and keys-hub for tiny-hub (another model)."""
    from studio.services.adapters import RegisterAdapterRequest
    from tests.adapters_factory import make_lora

    imports = ctx.settings.data_dir / "imports"
    make_lora(tiny_folder, imports / "lofi-piano", base_name="studio-tiny")
    make_lora(tiny_folder, imports / "keys-hub", base_name="test-org/tiny-musicgen", seed=1)
    lofi = ctx.adapters.register(RegisterAdapterRequest(source="folder", path="lofi-piano"))
    other = ctx.adapters.register(RegisterAdapterRequest(source="folder", path="keys-hub"))
    return lofi, other


def test_generate_with_an_adapter_by_id_or_label_names_it(registered, gclient, ctx):
    lofi, _ = registered
    used_before = ctx.adapters.get(lofi.id).usage_count
    base_audio, base_info = _generate(gclient, seed=5)
    assert "no adapter (base model)" in base_info
    s = DEFAULTS
    for value in (str(lofi.id), "lofi-piano v1"):
        audio, info = gclient.predict("warm lo-fi piano", 1.0, 5, s["top_k"], s["top_p"], s["temperature"],
                                      s["guidance_scale"], value, api_name="/generate")
        assert "adapter **lofi-piano v1**" in info, info
        assert not np.array_equal(sf.read(audio)[0], sf.read(base_audio)[0])  # same seed, the adapter's sound
    assert ctx.adapters.get(lofi.id).usage_count == used_before + 2


@pytest.mark.parametrize("change, message", [
    ("other", "cannot be used with Studio Tiny: Requires Tiny Hub"),
    ("inactive", "is inactive"),
    ("deleted", "was deleted"),
])
def test_adapters_the_page_would_not_offer_are_refused_by_the_server(registered, gclient, ctx, change, message):
    from studio.services.adapters import AdapterUpdate, RegisterAdapterRequest

    lofi, other = registered
    target = other
    if change != "other":  # a copy of lofi-piano of its own, so the module's lofi-piano stays usable
        target = ctx.adapters.register(RegisterAdapterRequest(source="folder", path="lofi-piano", name=change,
                                                              allow_duplicate=True))
    if change == "inactive":
        ctx.adapters.update(target.id, AdapterUpdate(active=False))
    elif change == "deleted":
        ctx.adapters.delete(target.id)
    with pytest.raises(AppError, match=message) as info:
        gclient.predict("x", 1.0, 1, 250, 0.0, 1.0, 3.0, str(target.id), api_name="/generate")
    assert "Traceback" not in str(info.value)


def test_register_adapter_endpoint(gclient, ctx, tiny_folder):
    from tests.adapters_factory import make_lora

    make_lora(tiny_folder, ctx.settings.data_dir / "imports" / "my-lora", base_name="studio-tiny", seed=5)
    out = gclient.predict("Folder on the server", "my-lora", None, "", "", "mine", 0, "scripted",
                          "From adapter_config.json", api_name="/register_adapter")
    assert "Registered **mine v1**" in out[0], out
    [a] = [a for a in ctx.adapters.list() if a.name == "mine"]
    assert (a.name, a.version, a.description, a.base_model) == ("mine", 1, "scripted", "studio-tiny")
    with pytest.raises(AppError, match="outside the folders adapters may be registered from"):
        gclient.predict("Folder on the server", "/etc", None, "", "", "", 0, "", "From adapter_config.json",
                        api_name="/register_adapter")


def test_import_audiocraft_endpoint(gclient, ctx, tiny_folder, tmp_path):
    """A script imports an audiocraft checkpoint (a .zip of the mono fixture's folder, uploaded) and gets the report
    as JSON; a file that is no checkpoint fails with the reason. The text encoder and codec it names are put in
    the studio's HF cache first (from the fake hub), as an earlier download would have."""
    import zipfile

    from gradio_client import handle_file

    from studio.runtime import hub
    from studio.services.model_import import REFERENCE_FILES
    from tests.audiocraft_support import CODEC_REPO, FIXTURES, T5_REPO, write_reference_repos
    from tests.fakehub import serve_repos

    repos = write_reference_repos(tiny_folder, tmp_path / "refs")
    with serve_repos({T5_REPO: repos[T5_REPO], CODEC_REPO: repos[CODEC_REPO]}) as fake:
        for repo in (T5_REPO, CODEC_REPO):
            hub.download_snapshot(repo, None, ctx.settings.hf_cache_dir, fake.url, lambda *_: None,
                                  allow_patterns=REFERENCE_FILES)
    archive = tmp_path / "scripted-mono.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("state_dict.bin", "compression_state_dict.bin"):
            zf.write(FIXTURES / "mono" / name, f"mono/{name}")
    out = gclient.predict("upload", "", "", "", handle_file(str(archive)), "", "Scripted mono",
                          api_name="/import_audiocraft")
    card, report = out[0], out[1]
    assert "was added" in card and "Converted from" in card, card
    assert report["model"]["id"] == "scripted-mono" and report["layout"] == "exported"
    assert ctx.registry.is_custom("scripted-mono")
    try:  # a script switches to it (its session's model list is the one the page was built with)
        job = gclient.submit("scripted-mono", api_name="/switch_model")
        job.result(timeout=60)
        assert "Scripted mono is ready" in job.outputs()[-1][0]
    finally:
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"  # as the module's other tests expect
    junk = tmp_path / "notes.bin"
    junk.write_text("not a checkpoint")
    with pytest.raises(AppError, match="not a readable PyTorch checkpoint"):
        gclient.predict("upload", "", "", "", handle_file(str(junk)), "", "", api_name="/import_audiocraft")


# ---- model switching -----------------------------------------------------------------------------------------------
def test_switch_model_streams_progress_and_ends_ready(gclient, ctx):
    try:
        job = gclient.submit("tiny-b", api_name="/switch_model")  # a real switch: another model
        job.result(timeout=60)
        outputs = job.outputs()
        assert len(outputs) >= 3, outputs  # progress updates (unloading, loading), then the final one
        assert any("Loading Tiny B" in status for status, _ in outputs[:-1]), outputs
        status, card = outputs[-1]
        assert "Tiny B is ready" in status, status
        assert "Tiny B" in card and "Studio Tiny" not in card
        assert ctx.manager.status().model_id == "tiny-b"
    finally:
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"  # as the module's other tests expect


def test_switch_to_unknown_model_fails_clearly(gclient):
    job = gclient.submit("no-such-model", api_name="/switch_model")
    with pytest.raises(AppError) as info:
        job.result(timeout=60)
    text = str(info.value)
    assert "no-such-model" in text, text
    assert "Traceback" not in text


# ---- auth ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def auth_url(make_module_ctx):
    """One served studio with --auth u:p and no model loaded (its last test loads one)."""
    context = make_module_ctx(auth=("u", "p"))
    with serve(context) as base:
        yield base


@pytest.mark.parametrize("path", ["api/models", "api/models/current", "openapi.json", "docs"])
def test_rest_api_and_docs_need_credentials(auth_url, path):
    status, body = _get(auth_url + path)
    assert status == 401, body
    detail = json.loads(body)["detail"]
    assert detail["code"] == "unauthorized" and detail["message"]
    assert _get(auth_url + path, auth=("u", "p"))[0] == 200


def test_a_wrong_password_is_refused(auth_url):
    # one wrong try: the studio throttles failed logins per client (tests/api/test_auth.py)
    status, body = _get(auth_url + "api/models", auth=("u", "wrong"))
    assert status == 401 and json.loads(body)["detail"]["code"] == "unauthorized"


def test_rest_models_with_credentials_lists_registry(auth_url):
    status, body = _get(auth_url + "api/models", auth=("u", "p"))
    assert status == 200
    assert "studio-tiny" in [m["id"] for m in json.loads(body)]


def test_gradio_client_needs_login(auth_url):
    with pytest.raises(AuthenticationError, match="login"):
        Client(auth_url, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(auth_url, auth=("u", "wrong"), verbose=False)
    c = Client(auth_url, auth=("u", "p"), verbose=False)
    try:
        # make_ctx does not load a model: the call reaches the handler and gets the studio's own error
        with pytest.raises(AppError, match="(?i)no model"):
            _generate(c, duration_s=1.0, seed=1)
        job = c.submit("studio-tiny", api_name="/switch_model")
        job.result(timeout=60)
        assert "ready" in job.outputs()[-1][0].lower()
        audio_path, info_text = _generate(c, duration_s=1.0, seed=9)
        assert Path(audio_path).is_file() and re.search(r"seed\D{0,12}\b9\b", info_text), info_text
    finally:
        c.close()


# ---- training ----------------------------------------------------------------------------------------------------
def test_a_script_trains_stops_resumes_and_registers_through_gradio_client(gclient, ctx):
    from tests.training_support import FAST, seed_dataset, wait_status

    dataset = seed_dataset(ctx, n=4, name="gc-tones")
    with pytest.raises(AppError, match="config.learning_rate"):  # refused, naming the field; nothing created
        gclient.predict({"dataset_id": dataset, "config": {"learning_rate": "fast"}}, api_name="/start_training_run")
    assert ctx.training.list() == []
    config = {**FAST, "max_steps": 100_000, "checkpoint_every": 5, "lr_scheduler": "constant", "audition_prompts": 0}
    run = gclient.predict({"dataset_id": dataset, "name": "gc-run", "config": config, "auto_register": False},
                          api_name="/start_training_run")
    assert run["status"] in ("queued", "running") and run["name"] == "gc-run"
    stopped = gclient.predict(run["id"], api_name="/stop_training_run")  # answers once the checkpoint is saved
    assert stopped["status"] == "stopped" and stopped["checkpoints"][-1]["resumable"] in (True, False)
    resumed = gclient.predict(run["id"], api_name="/resume_training_run")
    assert resumed["status"] in ("queued", "running")
    for _ in range(600):  # a minute at most
        if gclient.predict(run["id"], api_name="/training_run")["step"] >= 6:
            break
        time.sleep(0.1)
    final = gclient.predict(run["id"], api_name="/stop_training_run")
    assert final["status"] == "stopped" and final["step"] >= 6
    adapter = gclient.predict(run["id"], 0, api_name="/register_training_checkpoint")
    assert adapter["name"] == "gc-run" and adapter["training_run_id"] == str(run["id"])
    assert wait_status(ctx, run["id"], ("stopped",)).checkpoints[-1].adapter_id == adapter["id"]
