"""The evaluation routes: a job's score, evaluation models (downloaded from the fake hub with byte progress), and
evaluation runs; refusals as tables."""
from __future__ import annotations

import json
import time

import pytest
from huggingface_hub import constants as hf_constants

from studio.runtime.clap import build_tiny_clap
from studio.services.evaluation import PromptSet
from tests.conftest import rest_client
from tests.fakehub import serve_repos

CLAP_REPO = "test-org/tiny-clap"  # the test registry's 'tiny-clap-hub', its default evaluation model
PICKLE = {"pytorch_model.bin": b"\x80\x04\x95pickled weights\x00" * 1024}


def _generate(client, seed=1) -> int:
    r = client.post("/api/generate", json={"prompt": "lofi beat", "duration_s": 1.0, "seed": seed})
    assert r.status_code == 200, r.text
    return r.json()["job_id"]


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory):
    return build_tiny_clap(tmp_path_factory.mktemp("served-clap") / "clap")


def test_a_hub_clap_downloads_with_byte_progress_and_then_scores(make_ctx, clap_folder, monkeypatch):
    files = {**{p.name: p.read_bytes() for p in clap_folder.iterdir()}, **PICKLE}
    with serve_repos({CLAP_REPO: files}, chunk_size=8 * 1024, delay=0.02) as hub:
        monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 8 * 1024)  # several byte reports
        ctx = make_ctx(hf_endpoint=hub.url)
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
        with rest_client(ctx) as client:
            job_id = _generate(client)
            assert client.post(f"/api/jobs/{job_id}/score").status_code == 409  # not downloaded yet
            with client.stream("POST", "/api/evaluation/models/current", json={"model_id": "tiny-clap-hub"}) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                events = [json.loads(line[len("data: "):]) for line in r.iter_lines() if line]
            assert events[0]["stage"] == "checking" and events[-1]["stage"] == "ready", events
            progress = [e for e in events if e["stage"] == "downloading" and e.get("bytes_total")]
            assert len(progress) >= 2, events
            done = [e["bytes_done"] for e in progress]
            assert done == sorted(done) and done[-1] == progress[-1]["bytes_total"] == sum(
                p.stat().st_size for p in clap_folder.iterdir())
            assert "pytorch_model.bin" not in hub.requested_files("GET")  # pickles are never fetched

            models = client.get("/api/evaluation/models").json()
            assert models["current"] == "tiny-clap-hub"
            assert {m["id"]: (m["available"], m["in_use"]) for m in models["models"]} == {
                "studio-tiny-clap": (True, False), "tiny-clap-hub": (True, True)}
            score = client.post(f"/api/jobs/{job_id}/score")
            assert score.status_code == 200, score.text
            assert score.json()["scorer"] == "tiny-clap-hub" and -1 <= score.json()["value"] <= 1
    # the downloaded checkpoint and the one built here are the same files, loaded by the same code: same score
    local = make_ctx(eval_model="studio-tiny-clap", data_dir=ctx.settings.data_dir)
    assert local.evaluation.score_job(job_id).value == pytest.approx(score.json()["value"], abs=1e-6)


def test_the_default_hub_clap_once_in_the_cache_is_used_without_asking(make_ctx, clap_folder):
    with serve_repos({CLAP_REPO: {p.name: p.read_bytes() for p in clap_folder.iterdir()}}) as hub:
        first = make_ctx(hf_endpoint=hub.url)
        assert list(first.evaluation.use_model("tiny-clap-hub"))[-1].stage == "ready"
    again = make_ctx(hf_cache_dir=first.settings.hf_cache_dir)  # a new start, offline, nothing chosen
    assert again.evaluation.models().current == "tiny-clap-hub"


def test_a_hub_clap_without_safetensors_is_refused_and_its_pickle_never_fetched(make_ctx, clap_folder):
    files = {"config.json": (clap_folder / "config.json").read_bytes(), **PICKLE}
    with serve_repos({CLAP_REPO: files}) as hub:
        ctx = make_ctx(hf_endpoint=hub.url)
        final = list(ctx.evaluation.use_model("tiny-clap-hub"))[-1]
        assert final.stage == "error" and final.code == "no_safetensors" and "pickled" in final.message
        assert "pytorch_model.bin" not in hub.requested_files("GET")
    assert ctx.evaluation.models().current is None


def test_a_failed_download_says_why_and_changes_nothing(make_ctx):
    ctx = make_ctx(hf_endpoint="http://127.0.0.1:9")  # a closed port: the hub cannot be reached
    events = list(ctx.evaluation.use_model("tiny-clap-hub"))
    assert events[-1].stage == "error" and "cannot be reached" in events[-1].message
    assert events[-1].code == "hub_unreachable"
    assert ctx.evaluation.models().current is None


def test_an_evaluation_run_over_rest(make_ctx):
    ctx = make_ctx(eval_model="studio-tiny-clap")
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    ctx.evaluation.prompt_set = PromptSet(duration_s=1.0, prompts=[{"prompt": "jazz trio", "seed": 7}])
    with rest_client(ctx) as client:
        models = client.get("/api/evaluation/models").json()
        assert models["current"] == "studio-tiny-clap" and "mean nothing" in models["note"]
        r = client.post("/api/evaluations", json={})
        assert r.status_code == 202, r.text
        run = r.json()
        assert run["status"] == "running" and run["model_id"] == "studio-tiny" and run["total"] == 1
        deadline = time.monotonic() + 60
        while run["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            run = client.get(f"/api/evaluations/{run['id']}").json()
        assert run["status"] == "succeeded" and run["n"] == 1 and run["done"] == 1
        clip = run["clips"][0]
        assert (clip["prompt"], clip["seed"], clip["status"]) == ("jazz trio", 7, "succeeded")
        assert run["mean_score"] == pytest.approx(clip["score"])
        # the clip's score is the job's score
        assert client.post(f"/api/jobs/{clip['job_id']}/score").json()["value"] == clip["score"]
        assert [e["id"] for e in client.get("/api/evaluations", params={"model_id": "studio-tiny"}).json()] == [
            run["id"]]
        assert client.post(f"/api/evaluations/{run['id']}/cancel").json()["status"] == "succeeded"  # over already
        same = client.get(f"/api/evaluations/{run['id']}/compare/{run['id']}").json()
        assert same["pairs"] == [[clip["score"], clip["score"]]]
        assert same["test"]["verdict"] == "not_enough_data" and same["test"]["more_needed"] > 0


REFUSALS = [
    # (case, method, path, body, status, code)
    ("no evaluation model: score", "POST", "/api/jobs/{job}/score", None, 409, "no_evaluation_model"),
    ("no evaluation model: run", "POST", "/api/evaluations", {}, 409, "no_evaluation_model"),
    ("unknown job", "POST", "/api/jobs/99999/score", None, 404, "job_not_found"),
    ("unknown evaluation", "GET", "/api/evaluations/99999", None, 404, "evaluation_not_found"),
    ("cancel unknown evaluation", "POST", "/api/evaluations/99999/cancel", None, 404, "evaluation_not_found"),
    ("compare unknown evaluations", "GET", "/api/evaluations/99998/compare/99999", None, 404,
     "evaluation_not_found"),
    ("compare with id zero", "GET", "/api/evaluations/1/compare/0", None, 422, "invalid_parameter"),
    ("unknown evaluation model", "POST", "/api/evaluation/models/current", {"model_id": "nope"}, 404,
     "evaluation_model_not_found"),
    ("a generation model is no evaluation model", "POST", "/api/evaluation/models/current",
     {"model_id": "studio-tiny"}, 404, "evaluation_model_not_found"),
    ("unknown model", "POST", "/api/evaluations", {"model_id": "nope"}, 404, "model_not_found"),
    ("model not loaded", "POST", "/api/evaluations", {"model_id": "tiny-hub"}, 409, "model_not_loaded"),
    ("adapter id as text", "POST", "/api/evaluations", {"adapter_id": "1"}, 422, "invalid_body"),
    ("adapter id zero", "POST", "/api/evaluations", {"adapter_id": 0}, 422, "invalid_body"),
    ("model id a number", "POST", "/api/evaluations", {"model_id": 5}, 422, "invalid_body"),
    ("unknown field", "POST", "/api/evaluations", {"prompts": ["x"]}, 422, "invalid_body"),
    ("model id missing", "POST", "/api/evaluation/models/current", {}, 422, "invalid_body"),
    ("job id zero", "POST", "/api/jobs/0/score", None, 422, "invalid_parameter"),
    ("evaluation id beyond 64 bits", "GET", "/api/evaluations/99999999999999999999", None, 422,
     "invalid_parameter"),
]


@pytest.fixture(scope="module")
def refusing(shared_client):
    """The shared studio (Studio Tiny loaded, no evaluation model) with one generated job."""
    return shared_client, _generate(shared_client)


@pytest.mark.parametrize("method, path, body, status, code", [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_refusals(refusing, method, path, body, status, code):
    client, job_id = refusing
    r = client.request(method, path.format(job=job_id), json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail["code"] == code and detail["message"]
    if code == "no_evaluation_model":
        assert "--eval-model studio-tiny-clap" in detail["message"]
    assert client.get("/api/evaluations").json() == []  # nothing recorded by a refusal
