"""The REST API: models, switching over SSE, generation validation (every bad request a 4xx with a code), jobs."""
from __future__ import annotations

import io
import json

import pytest
import soundfile as sf

from tests.conftest import rest_client


def test_models_lists_capabilities(client):
    models = {m["id"]: m for m in client.get("/api/models").json()}
    tiny = models["studio-tiny"]
    for key in ("id", "display_name", "max_duration_s", "sample_rate", "memory_gb", "parameters", "available",
                "loaded", "max_tokens", "channels", "generation"):
        assert key in tiny
    assert tiny["loaded"] is True and tiny["available"] is True and tiny["max_tokens"] == 1500
    assert models["tiny-hub"]["available"] is False and models["tiny-hub"]["loaded"] is False


def test_current_model(client):
    body = client.get("/api/models/current").json()
    assert body["model"]["id"] == "studio-tiny" and body["state"] == "idle"


def test_generate_returns_a_wav_of_the_requested_duration(client):
    r = client.post("/api/generate", json={"prompt": "warm lofi piano", "duration_s": 2, "seed": 11})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_id"] == "studio-tiny" and body["seed"] == 11 and body["duration_s"] == 2
    assert body["sample_rate"] == 32000
    wav = client.get(body["audio_url"])
    assert wav.status_code == 200 and wav.headers["content-type"] == "audio/wav"
    name = f"warm-lofi-piano_job{body['job_id']}.wav"  # a download named after the prompt and job
    assert wav.headers["content-disposition"].endswith(f'filename="{name}"')
    data, rate = sf.read(io.BytesIO(wav.content))
    assert rate == 32000 and len(data) == 64000
    job = client.get(f"/api/jobs/{body['job_id']}").json()
    assert job["status"] == "succeeded" and job["prompt"] == "warm lofi piano" and job["seed"] == 11
    assert job["settings"]["top_k"] == 250 and job["audio_url"] == body["audio_url"]
    # what the file measures, as stored with the job (normalisation is off: no note)
    assert job["loudness_lufs"] == body["loudness_lufs"] and job["true_peak_dbtp"] == body["true_peak_dbtp"]
    assert body["loudness_lufs"] < 0 and body["loudness_note"] is None


SEED_CASES = [
    # (case, the model's seed policy, the request's seed, the seed expected: None = a random one)
    ("none, random policy", "random", None, None),
    ("-1, random policy", "random", -1, None),
    ("none, fixed policy", "fixed", None, 99),
    ("-1 wins over a fixed policy", "fixed", -1, None),
    ("given, fixed policy", "fixed", 5, 5),
    ("given, random policy", "random", 5, 5),
]


@pytest.mark.parametrize("policy,seed,expected", [c[1:] for c in SEED_CASES], ids=[c[0] for c in SEED_CASES])
def test_one_meaning_per_seed_value(shared_client, policy, seed, expected):
    """-1 always means a random seed, none means the model's seed policy, on the page and the API alike."""
    client = shared_client  # each case sets the policy it needs
    assert client.put("/api/models/studio-tiny/config", json={"seed_policy": policy, "seed": 99}).status_code == 200
    body = {"prompt": "x", "duration_s": 0.5} | ({} if seed is None else {"seed": seed})
    seeds = [client.post("/api/generate", json=body).json()["seed"] for _ in range(2)]
    if expected is None:
        assert seeds[0] != seeds[1] and all(0 <= s < 2**32 for s in seeds)  # random: two draws differ
        assert 99 not in seeds
    else:
        assert seeds == [expected, expected]


def test_settings_override_is_applied_and_recorded(client):
    body = client.post("/api/generate", json={"prompt": "x", "duration_s": 0.5, "seed": 1,
                                              "settings": {"top_k": 50, "temperature": 0.7}}).json()
    job = client.get(f"/api/jobs/{body['job_id']}").json()
    # The job records every setting it used: the stored ones with the request's overrides.
    stored = client.get("/api/models/studio-tiny/config").json()["values"]
    assert job["settings"] == {**stored, "top_k": 50, "temperature": 0.7}


@pytest.mark.parametrize("raw", [b"{bad json", b"", b"null"])
def test_malformed_bodies(shared_client, raw):
    client = shared_client
    r = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]["code"] in {"invalid_json", "invalid_body"}


def test_no_model_loaded(make_ctx):
    with rest_client(make_ctx()) as c:
        assert c.get("/api/models/current").json()["model"] is None
        r = c.post("/api/generate", json={"prompt": "x", "duration_s": 1})
        assert r.status_code == 409 and r.json()["detail"]["code"] == "no_model_loaded"


def test_limit_follows_the_loaded_model(make_ctx):
    from tests.conftest import registry_dict

    ctx = make_ctx(registry_dict(**{"tiny-short": {"max_duration_s": 5}}))
    with rest_client(ctx) as c:
        events = _switch(c, "tiny-short")
        assert events[-1]["stage"] == "ready"
        r = c.post("/api/generate", json={"prompt": "x", "duration_s": 6})
        assert r.status_code == 422 and r.json()["detail"]["max_duration_s"] == 5
        assert c.post("/api/generate", json={"prompt": "x", "duration_s": 5}).status_code == 200


def _switch(c, model_id):
    with c.stream("POST", "/api/models/current", json={"model_id": model_id}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]


def test_switch_streams_server_sent_events(make_ctx):
    """A real switch streams its stages and ends ready on the new model; switching to the loaded model is a no-op
    that says so (nothing is unloaded or loaded again)."""
    from tests.conftest import registry_dict

    ctx = make_ctx(registry_dict(**{"tiny-b": {"display_name": "Tiny B"}}))
    with rest_client(ctx) as c:
        assert _switch(c, "studio-tiny")[-1]["stage"] == "ready"
        events = _switch(c, "tiny-b")
        stages = [e["stage"] for e in events]
        assert stages[0] == "checking" and {"unloading", "loading"} <= set(stages) and stages[-1] == "ready"
        assert events[-1]["model_id"] == "tiny-b" and events[-1]["fraction"] == 1.0
        assert c.get("/api/models/current").json()["model"]["id"] == "tiny-b"
        with ctx.manager.use() as model:
            loaded = model.model
        again = _switch(c, "tiny-b")
        assert [e["stage"] for e in again][-1] == "ready" and "already loaded" in again[-1]["message"]
        assert not {"unloading", "loading"} & {e["stage"] for e in again}
        with ctx.manager.use() as model:
            assert model.model is loaded  # the same weights in memory: nothing was reloaded


def test_switch_errors(client):
    r = client.post("/api/models/current", json={"model_id": "nope"})
    assert r.status_code == 404 and r.json()["detail"]["code"] == "model_not_found"
    assert client.post("/api/models/current", json={}).status_code == 422
    events = _switch(client, "huge")
    assert events[-1]["stage"] == "error" and events[-1]["code"] == "insufficient_memory"
    assert client.get("/api/models/current").json()["model"]["id"] == "studio-tiny"


def test_jobs_newest_first_and_404s(client):
    ids = [client.post("/api/generate", json={"prompt": f"p{i}", "duration_s": 0.5, "seed": i}).json()["job_id"]
           for i in range(3)]
    listed = [j["id"] for j in client.get("/api/jobs").json()]
    assert listed == ids[::-1]
    assert client.get("/api/jobs/9999").status_code == 404
    assert client.get("/api/jobs/9999/audio").json()["detail"]["code"] == "job_not_found"
    assert client.get("/api/nope").json()["detail"]["code"] == "unknown_route"


def test_openapi_documents_the_routes(client):
    doc = client.get("/openapi.json").json()
    for path in ("/api/models", "/api/models/current", "/api/generate", "/api/jobs", "/api/jobs/{job_id}"):
        assert path in doc["paths"]
    schema = doc["components"]["schemas"]["GenerateRequest"]
    assert {"prompt"} <= set(schema["required"])


def test_models_say_which_do_not_fit_in_memory(client):
    models = {m["id"]: m for m in client.get("/api/models").json()}
    assert models["studio-tiny"]["fits_memory"] is True and models["studio-tiny"]["memory_note"] is None
    assert models["huge"]["fits_memory"] is False and "needs about" in models["huge"]["memory_note"]


def test_job_times_are_utc(client):
    job_id = client.post("/api/generate", json={"prompt": "x", "duration_s": 0.5, "seed": 1}).json()["job_id"]
    for job in (client.get(f"/api/jobs/{job_id}").json(), client.get("/api/jobs").json()[0]):
        assert job["created_at"].endswith(("Z", "+00:00")) and job["finished_at"].endswith(("Z", "+00:00"))
        assert job["elapsed_s"] >= 0
