"""POST/GET /api/models/import: audiocraft checkpoints (the committed fixtures, written by audiocraft 1.3.0) imported
from a folder, an upload or the hub, as a client would; what the imported model then does in the whole studio
(switch, queue, streaming, an adapter trained on it); refusals; nothing left behind by a failed import."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import time
import zipfile

import pytest
import torch

from studio.services.datasets import CreateDatasetRequest
from tests.audiocraft_support import CODEC_REPO, FIXTURES, T5_REPO, write_reference_repos
from tests.conftest import rest_client
from tests.fakehub import serve_repos
from tests.melody_support import write_tune
from tests.tone_dataset import write_tone_folder
from tests.training_support import FAST, wait_status
from studio.services.model_import import ImportRequest


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_folder):
    refs = write_reference_repos(tiny_folder, tmp_path_factory.mktemp("refs"))
    with serve_repos({T5_REPO: refs[T5_REPO], CODEC_REPO: refs[CODEC_REPO], "someone/ac-mono": FIXTURES / "mono",
                      "someone/ac-adapter": FIXTURES / "peft_adapter", "someone/ac-solver": FIXTURES / "solver"}
                     ) as served:
        yield served


@pytest.fixture(scope="module")
def studio(make_module_ctx, hub):
    """One studio for the module (each test imports under its own ids); its import root holds the fixtures."""
    ctx = make_module_ctx(hf_endpoint=hub.url)
    imports = ctx.settings.data_dir / "imports"
    for name in ("mono", "solver", "stereo", "melody", "lora_merged", "peft_adapter"):
        shutil.copytree(FIXTURES / name, imports / name)
    shutil.copytree(ctx.settings.models_dir / "studio-tiny", imports / "a-transformers-model")
    (imports / "nothing-here").mkdir()
    with rest_client(ctx) as client:
        client.ctx = ctx
        yield client


def events(response) -> list[dict]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


def imported_dir(client):
    return client.ctx.settings.models_dir / "imported"


def test_import_a_folder_then_switch_generate_stream_and_train_an_adapter_on_it(studio):
    client = studio
    r = client.post("/api/models/import", json={"source": "folder", "path": "mono", "id": "ac-mono",
                                                 "display_name": "My <b>audiocraft</b> tune"})
    seen = events(r)
    stages = [e["stage"] for e in seen]
    assert stages[0] == "checking" and stages[-1] == "ready", seen[-1]
    assert stages.index("downloading") < stages.index("converting") < stages.index("registering")
    downloads = [e for e in seen if e["stage"] == "downloading" and e.get("bytes_total")]
    assert downloads and downloads[-1]["bytes_done"] == downloads[-1]["bytes_total"]
    report = seen[-1]["report"]
    checkpoint = FIXTURES / "mono" / "state_dict.bin"
    assert report["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert report["layout"] == "exported" and report["audiocraft_version"] == "1.3.0"
    assert report["configuration"]["dim"] == 8 and report["configuration"]["codebooks"] == 4
    assert report["codec"] == CODEC_REPO and report["text_encoder"].startswith(T5_REPO)
    assert any("do not apply to the converted model" in n for n in report["notes"])
    model = report["model"]
    assert model["id"] == "ac-mono" and model["display_name"] == "My <b>audiocraft</b> tune"
    assert model["provenance"]["sha256"] == report["sha256"] and model["provenance"]["layout"] == "exported"
    assert model["provenance"]["checkpoint"] == f"folder:{client.ctx.settings.data_dir / 'imports' / 'mono' / 'state_dict.bin'}"
    listed = {m["id"]: m for m in client.get("/api/models").json()}
    assert listed["ac-mono"]["custom"] and listed["ac-mono"]["max_duration_s"] == 30
    assert client.get("/api/models/import").json()[0]["state"] == "ready"
    assert [p.name for p in imported_dir(client).iterdir()] == ["ac-mono"]

    switch = client.post("/api/models/current", json={"model_id": "ac-mono"})
    assert '"stage": "ready"' in switch.text.strip().splitlines()[-1], switch.text
    job = client.post("/api/jobs", json={"prompt": "rock beat", "duration_s": 2, "seed": 3}).json()
    assert job["model_id"] == "ac-mono", job
    with client.stream("GET", job["events_url"]) as stream:
        names = [line[6:].strip() for line in stream.iter_lines() if line.startswith("event:")]
    assert "audio" in names and names[-1] == "succeeded", names
    done = client.get(f"/api/jobs/{job['job_id']}").json()
    assert done["status"] == "succeeded" and done["model_id"] == "ac-mono" and done["duration_s"] == 2

    # an adapter trained on it, by the studio's own training run
    ctx = client.ctx
    write_tone_folder(ctx.settings.data_dir / "imports" / "tones", n=2, seconds=1.5)
    dataset = ctx.datasets.create(CreateDatasetRequest(source="folder", path="tones", name="tones-ac",
                                                       model_id="ac-mono"))
    run = client.post("/api/training/runs", json={"dataset_id": dataset.id, "name": "on-ac",
                                                  "config": {**FAST, "audition_prompts": 0}})
    assert run.status_code == 201, run.text
    assert wait_status(ctx, run.json()["id"], ("succeeded", "failed")).status == "succeeded"
    adapter = next(a for a in client.get("/api/adapters").json() if a["name"] == "on-ac")
    assert adapter["base_model"] == "ac-mono" and adapter["compatible"]
    r = client.post("/api/generate", json={"prompt": "rock beat", "duration_s": 1, "seed": 3,
                                           "adapter_id": adapter["id"]})
    assert r.status_code == 200 and r.json()["adapter_id"] == adapter["id"], r.text
    client.post("/api/models/current", json={"model_id": "studio-tiny"})


def test_an_upload_archive_and_a_bare_checkpoint_file(studio, tmp_path):
    client = studio
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(FIXTURES / "solver" / "checkpoint.th", "my-solver-run/checkpoint.th")
        zf.writestr("my-solver-run/notes.txt", "ignored")
    r = client.post("/api/models/import", files={"archive": ("my-solver-run.zip", buf.getvalue())},
                    data={"id": "ac-solver-upload"})
    seen = events(r)
    assert seen[-1]["stage"] == "ready", seen[-1]
    assert seen[-1]["report"]["layout"] == "solver" and seen[-1]["report"]["checkpoint"].startswith(
        "upload:my-solver-run.zip/")
    # the checkpoint file itself (torch.save's own zip), stereo in float16, its id from the file name
    r = client.post("/api/models/import",
                    files={"archive": ("stereo-tune.bin", (FIXTURES / "stereo" / "state_dict.bin").read_bytes())})
    seen = events(r)
    assert seen[-1]["stage"] == "ready", seen[-1]
    model = seen[-1]["report"]["model"]
    assert model["id"] == "stereo-tune" and model["channels"] == 2 and model["codebooks"] == 8
    # a checkpoint file with only audiocraft's own name, twice: numbered ids, nothing refused
    for expected_id in ("audiocraft-import", "audiocraft-import-2"):
        seen = events(client.post("/api/models/import", files={
            "archive": ("state_dict.bin", (FIXTURES / "mono" / "state_dict.bin").read_bytes())}))
        assert seen[-1]["stage"] == "ready" and seen[-1]["report"]["model"]["id"] == expected_id, seen[-1]
        assert seen[-1]["report"]["model"]["display_name"] == expected_id  # not audiocraft's 'state_dict'
    assert not list(client.ctx.settings.tmp_dir.glob("import-*"))  # uploads and work folders removed


def test_import_from_the_hub_and_a_melody_model(studio, tmp_path):
    client = studio
    seen = events(client.post("/api/models/import", json={"source": "hub", "repo_id": "someone/ac-mono",
                                                            "id": "ac-hub"}))
    assert seen[-1]["stage"] == "ready", seen[-1]
    assert seen[-1]["report"]["checkpoint"] == "hub:someone/ac-mono@main/state_dict.bin"
    assert any(e["stage"] == "downloading" and "someone/ac-mono" in e["message"] for e in seen)
    seen = events(client.post("/api/models/import", json={"source": "folder", "path": "melody/state_dict.bin",
                                                            "id": "ac-melody"}))
    assert seen[-1]["stage"] == "ready", seen[-1]
    model = seen[-1]["report"]["model"]
    assert model["conditioning"] == ["text", "melody"]
    assert model["architecture"] == "MusicgenMelodyForConditionalGeneration"
    assert any("demucs" in n for n in seen[-1]["report"]["notes"])
    # it follows a melody through the studio, like MusicGen Melody
    hum = write_tune(tmp_path / "hum.wav", [220.0, 330.0, 440.0], each_s=0.3)
    upload = client.post("/api/uploads", files={"file": ("hum.wav", hum.read_bytes())}).json()
    switch = client.post("/api/models/current", json={"model_id": "ac-melody"})
    assert '"stage": "ready"' in switch.text.strip().splitlines()[-1], switch.text
    r = client.post("/api/generate", json={"prompt": "calm piano", "duration_s": 1, "seed": 1,
                                           "melody_upload_id": upload["id"]})
    assert r.status_code == 200 and r.json()["melody"]["upload_id"] == upload["id"], r.text
    client.post("/api/models/current", json={"model_id": "studio-tiny"})


@pytest.mark.parametrize("body,status,code", [
    ({"source": "folder", "path": "/etc"}, 400, "path_not_allowed"),
    ({"source": "folder", "path": "../../etc"}, 400, "path_not_allowed"),
    ({"source": "folder"}, 400, "missing_path"),
    ({"source": "folder", "path": "no-such-folder"}, 400, "folder_not_found"),
    ({"source": "folder", "path": "nothing-here"}, 400, "missing_checkpoint"),
    ({"source": "folder", "path": "peft_adapter"}, 400, "peft_adapter"),
    ({"source": "folder", "path": "a-transformers-model"}, 400, "transformers_model"),
    ({"source": "folder", "path": "mono/expected.json"}, 400, "missing_checkpoint"),
    ({"source": "hub", "repo_id": "not a repo"}, 400, "invalid_repo_id"),
    ({"source": "hub", "repo_id": "a/b", "revision": "../x"}, 400, "invalid_revision"),
    ({"source": "folder", "path": "mono", "id": "Not An Id"}, 400, "invalid_model_id"),
    ({"source": "folder", "path": "mono", "id": "studio-tiny"}, 409, "model_exists"),
    ({"source": "upload"}, 400, "missing_archive"),
    ({"source": "folder", "path": "mono", "extra": 1}, 422, "invalid_body"),
    ({"source": "ftp", "path": "mono"}, 422, "invalid_body"),
])
def test_refusals_come_before_anything_runs(studio, body, status, code):
    client = studio
    before = {m["id"] for m in client.get("/api/models").json()}
    running = len(client.get("/api/models/import").json())
    r = client.post("/api/models/import", json=body)
    assert r.status_code == status and r.json()["detail"]["code"] == code, r.text
    assert {m["id"] for m in client.get("/api/models").json()} == before
    assert len(client.get("/api/models/import").json()) == running  # no import was started


def test_a_malicious_checkpoint_fails_in_the_stream_and_leaves_nothing(studio, tmp_path):
    client = studio
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').close()",)

    folder = client.ctx.settings.data_dir / "imports" / "evil"
    folder.mkdir()
    pkg = torch.load(FIXTURES / "mono" / "state_dict.bin", weights_only=True)
    pkg["best_state"]["linears.0.weight"] = Evil()
    torch.save(pkg, folder / "state_dict.bin")
    before = {m["id"] for m in client.get("/api/models").json()}
    seen = events(client.post("/api/models/import", json={"source": "folder", "path": "evil"}))
    assert seen[-1]["stage"] == "error" and seen[-1]["code"] == "unsafe_checkpoint"
    assert "exec" in seen[-1]["message"] and "Nothing from it was run" in seen[-1]["message"]
    assert not marker.exists()
    assert {m["id"] for m in client.get("/api/models").json()} == before
    assert not (imported_dir(client) / "evil").exists() and not list(imported_dir(client).glob(".import-*"))
    assert not list(client.ctx.settings.tmp_dir.glob("import-*"))


def test_an_unsupported_option_names_itself_in_the_error_event(studio):
    folder = studio.ctx.settings.data_dir / "imports" / "layer-scale"
    folder.mkdir()
    pkg = torch.load(FIXTURES / "mono" / "state_dict.bin", weights_only=True)
    pkg["xp.cfg"] = pkg["xp.cfg"].replace("layer_scale: null", "layer_scale: 0.0001")
    torch.save(pkg, folder / "state_dict.bin")
    seen = events(studio.post("/api/models/import", json={"source": "folder", "path": "layer-scale"}))
    assert seen[-1]["stage"] == "error" and seen[-1]["code"] == "unsupported_option"
    assert seen[-1]["details"] == {"option": "transformer_lm.layer_scale", "value": 0.0001}


def test_a_text_encoder_of_the_wrong_width_is_refused_before_its_weights_download(studio, hub):
    folder = studio.ctx.settings.data_dir / "imports" / "wrong-t5"
    folder.mkdir()
    pkg = torch.load(FIXTURES / "mono" / "state_dict.bin", weights_only=True)
    proj = "condition_provider.conditioners.description.output_proj.weight"
    pkg["best_state"][proj] = torch.zeros(8, 64)
    torch.save(pkg, folder / "state_dict.bin")
    shutil.rmtree(studio.ctx.settings.hf_cache_dir, ignore_errors=True)  # nothing cached: all would download
    hub.reset()
    seen = events(studio.post("/api/models/import", json={"source": "folder", "path": "wrong-t5"}))
    assert seen[-1]["stage"] == "error" and seen[-1]["code"] == "invalid_checkpoint_tensors", seen[-1]
    assert seen[-1]["details"]["key"] == proj
    fetched = [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    assert fetched and all(p.endswith("/config.json") for p in fetched), fetched


@pytest.mark.parametrize("body,code", [
    ({"source": "hub", "repo_id": "someone/ac-adapter", "id": "x1"}, "peft_adapter"),
    ({"source": "hub", "repo_id": "someone/missing", "id": "x2"}, "repo_not_found"),
])
def test_hub_refusals_arrive_as_error_events(studio, body, code):
    seen = events(studio.post("/api/models/import", json=body))
    assert seen[-1]["stage"] == "error" and seen[-1]["code"] == code, seen[-1]


def test_one_import_at_a_time(studio):
    service = studio.ctx.model_import
    assert service._busy.acquire(blocking=False)
    try:
        r = studio.post("/api/models/import", json={"source": "folder", "path": "mono", "id": "ac-busy"})
        assert r.status_code == 409 and r.json()["detail"]["code"] == "import_running"
    finally:
        service._busy.release()


def test_an_archive_that_is_not_a_checkpoint(studio):
    r = studio.post("/api/models/import", files={"archive": ("notes.tar.gz", b"\x1f\x8bnot gzip at all")})
    seen = events(r)
    assert seen[-1]["stage"] == "error" and seen[-1]["code"] in ("invalid_archive", "missing_checkpoint")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"hello"
        info = tarfile.TarInfo("folder/readme.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    seen = events(studio.post("/api/models/import", files={"archive": ("folder.tar.gz", buf.getvalue())}))
    assert seen[-1]["stage"] == "error" and seen[-1]["code"] == "missing_checkpoint"
    # a checkpoint file that is not one: named as sent (the server stores it as 'upload')
    seen = events(studio.post("/api/models/import", files={"archive": ("my-tune.bin", b"not a torch file")}))
    assert seen[-1]["stage"] == "error" and seen[-1]["code"] == "unreadable_checkpoint", seen[-1]
    assert seen[-1]["message"].startswith("my-tune.bin is not"), seen[-1]
    assert any(e["message"] == "Reading my-tune.bin (sha256)" for e in seen), seen
    assert not list(studio.ctx.settings.tmp_dir.glob("import-*"))


def test_an_archive_unpacking_far_beyond_its_size_is_refused_before_the_disk_fills(studio):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb/state_dict.bin", b"\0" * (200 * 2**20))  # 200 MB of zeros: a ~200 KB archive
    seen = events(studio.post("/api/models/import", files={"archive": ("bomb.zip", buf.getvalue())}))
    assert seen[-1]["stage"] == "error" and seen[-1]["code"] in ("archive_too_large", "file_too_large"), seen[-1]
    assert not list(studio.ctx.settings.tmp_dir.glob("import-*"))


def test_removing_an_imported_model_deletes_its_converted_folder(studio):
    client = studio
    seen = events(client.post("/api/models/import", json={"source": "folder", "path": "lora_merged",
                                                            "id": "ac-remove"}))
    assert seen[-1]["stage"] == "ready", seen[-1]
    folder = imported_dir(client) / "ac-remove"
    assert folder.is_dir()
    gone = client.delete("/api/models/ac-remove", params={"delete_files": "false"})
    assert gone.status_code == 200 and gone.json()["files_deleted"] is True and gone.json()["bytes_freed"] > 0
    assert not folder.exists()
    # and it can be imported again under the same id
    seen = events(client.post("/api/models/import", json={"source": "folder", "path": "lora_merged",
                                                            "id": "ac-remove"}))
    assert seen[-1]["stage"] == "ready", seen[-1]
    assert client.delete("/api/models/ac-remove").status_code == 200


def test_a_locked_model_list_refuses_imports(make_ctx):
    ctx = make_ctx(custom_models=False)
    with rest_client(ctx) as client:
        r = client.post("/api/models/import", json={"source": "folder", "path": "mono"})
        assert r.status_code == 409 and r.json()["detail"]["code"] == "custom_models_locked"


def test_an_imported_model_and_its_provenance_survive_a_restart_and_leftovers_go(make_ctx, hub):
    ctx = make_ctx(hf_endpoint=hub.url)
    shutil.copytree(FIXTURES / "mono", ctx.settings.data_dir / "imports" / "mono")
    final = None
    for final in ctx.model_import.start(ImportRequest(source="folder", path="mono", id="ac-restart")):
        pass
    assert final.stage == "ready", final
    data_dir = ctx.settings.data_dir
    ctx.close()
    # what a studio killed mid-import leaves: a half-written conversion and a work folder
    (data_dir / "models" / "imported" / ".import-abc123").mkdir()
    (data_dir / "models" / "imported" / ".import-abc123" / "model.safetensors").write_bytes(b"half")
    (data_dir / "tmp" / "import-xyz").mkdir(parents=True)
    (data_dir / "models" / "imported" / "killed-before-recorded").mkdir()  # converted, never recorded
    again = make_ctx(hf_endpoint=hub.url, data_dir=data_dir)
    listed = {m.id: m for m in again.custom_models.list()}
    assert listed["ac-restart"].provenance["layout"] == "exported"
    assert not (data_dir / "models" / "imported" / ".import-abc123").exists()
    assert not (data_dir / "tmp" / "import-xyz").exists()
    assert not (data_dir / "models" / "imported" / "killed-before-recorded").exists()
    assert (data_dir / "models" / "imported" / "ac-restart").is_dir()
    assert again.manager.switch_and_wait("ac-restart").stage == "ready"


def test_the_stream_may_be_dropped_the_import_goes_on(studio):
    client = studio
    service = client.ctx.model_import
    stream = service.start(ImportRequest(source="folder", path="mono", id="ac-dropped"))
    assert next(stream).stage == "checking"
    stream.close()  # the client went away
    deadline = time.monotonic() + 30
    while service.statuses()[0].state == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.statuses()[0].state == "ready"
    assert "ac-dropped" in {m["id"] for m in client.get("/api/models").json()}
