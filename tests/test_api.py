"""The REST API: models, switching over SSE, generation validation (every bad request a 4xx with a code), jobs."""
from __future__ import annotations

import io
import json

import pytest
import soundfile as sf

from tests.conftest import LOCAL


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
    data, rate = sf.read(io.BytesIO(wav.content))
    assert rate == 32000 and len(data) == 64000
    job = client.get(f"/api/jobs/{body['job_id']}").json()
    assert job["status"] == "succeeded" and job["prompt"] == "warm lofi piano" and job["seed"] == 11
    assert job["settings"]["top_k"] == 250 and job["audio_url"] == body["audio_url"]


def test_seed_is_chosen_and_reported_when_missing(client):
    body = client.post("/api/generate", json={"prompt": "x", "duration_s": 0.5}).json()
    assert isinstance(body["seed"], int)


def test_settings_override_is_applied_and_recorded(client):
    body = client.post("/api/generate", json={"prompt": "x", "duration_s": 0.5, "seed": 1,
                                              "settings": {"top_k": 50, "temperature": 0.7}}).json()
    job = client.get(f"/api/jobs/{body['job_id']}").json()
    # The job records every setting it used: the stored ones with the request's overrides.
    stored = client.get("/api/models/studio-tiny/config").json()["values"]
    assert job["settings"] == {**stored, "top_k": 50, "temperature": 0.7}


BAD_REQUESTS = [
    # (case, body, status, code)
    ("over the model's limit", {"prompt": "x", "duration_s": 31}, 400, "duration_exceeds_limit"),
    ("zero duration", {"prompt": "x", "duration_s": 0}, 400, "invalid_duration"),
    ("negative duration", {"prompt": "x", "duration_s": -3}, 400, "invalid_duration"),
    ("shorter than a frame", {"prompt": "x", "duration_s": 0.001}, 400, "invalid_duration"),
    ("empty prompt", {"prompt": "", "duration_s": 1}, 400, "empty_prompt"),
    ("blank prompt", {"prompt": "   \n", "duration_s": 1}, 400, "empty_prompt"),
    ("over-long prompt", {"prompt": "a" * 1001, "duration_s": 1}, 400, "prompt_too_long"),
    ("unknown setting", {"prompt": "x", "duration_s": 1, "settings": {"beam_size": 4}}, 400, "unknown_setting"),
    ("setting out of bounds", {"prompt": "x", "duration_s": 1, "settings": {"top_p": 2}}, 400, "invalid_setting"),
    ("setting of wrong type", {"prompt": "x", "duration_s": 1, "settings": {"top_k": "many"}}, 400,
     "invalid_setting"),
    ("negative seed", {"prompt": "x", "duration_s": 1, "seed": -1}, 400, "invalid_seed"),
    ("huge seed", {"prompt": "x", "duration_s": 1, "seed": 2**40}, 400, "invalid_seed"),
    ("missing prompt", {"duration_s": 1}, 422, "invalid_body"),
    ("duration as text", {"prompt": "x", "duration_s": "long"}, 422, "invalid_body"),
    ("prompt as number", {"prompt": 5, "duration_s": 1}, 422, "invalid_body"),
    ("settings as list", {"prompt": "x", "duration_s": 1, "settings": [1]}, 422, "invalid_body"),
    ("body is a list", [1, 2], 422, "invalid_body"),
    ("misspelt field", {"prompt": "x", "duration_s": 1, "sed": 4}, 422, "invalid_body"),
]


@pytest.mark.parametrize("body,status,code", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_bad_generate_requests_are_4xx_with_a_code(client, body, status, code):
    r = client.post("/api/generate", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail["code"] == code and detail["message"]
    assert client.get("/api/jobs").json() == []  # nothing recorded for a refused request


def test_over_limit_error_names_the_max(client):
    detail = client.post("/api/generate", json={"prompt": "x", "duration_s": 45}).json()["detail"]
    assert detail["max_duration_s"] == 30 and "30 s" in detail["message"]


@pytest.mark.parametrize("raw", [b"{bad json", b"", b"null"])
def test_malformed_bodies(client, raw):
    r = client.post("/api/generate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]["code"] in {"invalid_json", "invalid_body"}


def test_no_model_loaded(make_ctx):
    from fastapi.testclient import TestClient

    from studio.server import build_app

    with TestClient(build_app(make_ctx(), load_model=False), base_url=LOCAL) as c:
        assert c.get("/api/models/current").json()["model"] is None
        r = c.post("/api/generate", json={"prompt": "x", "duration_s": 1})
        assert r.status_code == 409 and r.json()["detail"]["code"] == "no_model_loaded"


def test_limit_follows_the_loaded_model(make_ctx):
    from fastapi.testclient import TestClient

    from studio.server import build_app
    from tests.conftest import registry_dict

    ctx = make_ctx(registry_dict(**{"tiny-short": {"max_duration_s": 5}}))
    with TestClient(build_app(ctx, load_model=False), base_url=LOCAL) as c:
        events = _switch(c, "tiny-short")
        assert events[-1]["stage"] == "ready"
        r = c.post("/api/generate", json={"prompt": "x", "duration_s": 6})
        assert r.status_code == 400 and r.json()["detail"]["max_duration_s"] == 5
        assert c.post("/api/generate", json={"prompt": "x", "duration_s": 5}).status_code == 200


def _switch(c, model_id):
    with c.stream("POST", "/api/models/current", json={"model_id": model_id}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]


def test_switch_streams_server_sent_events(client):
    events = _switch(client, "studio-tiny")
    assert events[-1]["stage"] == "ready" and "already loaded" in events[-1]["message"]


def test_switch_errors(client):
    r = client.post("/api/models/current", json={"model_id": "nope"})
    assert r.status_code == 404 and r.json()["detail"]["code"] == "model_not_found"
    assert client.post("/api/models/current", json={}).status_code == 422
    events = _switch(client, "huge")
    assert events[-1]["stage"] == "error" and events[-1]["code"] == "insufficient_memory"
    assert client.get("/api/models/current").json()["model"]["id"] == "studio-tiny"


def test_busy_is_423(client, ctx):
    with ctx.manager.use("generating"):
        r = client.post("/api/generate", json={"prompt": "x", "duration_s": 1})
        assert r.status_code == 423 and r.json()["detail"]["code"] == "busy"
        r = client.post("/api/models/current", json={"model_id": "studio-tiny"})
        assert r.status_code == 423
        assert client.get("/api/models/current").json()["state"] == "generating"


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
