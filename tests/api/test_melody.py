"""Melody over REST: upload a clip, POST /api/jobs (or /api/generate) with melody_upload_id on a melody model; a
text-only model refuses it with 409 melody_not_supported and records nothing; GET /api/jobs/{id} shows the melody."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import rest_client
from tests.melody_support import melody_ctx, tune


@pytest.fixture(scope="module")
def api(make_module_ctx):
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/runtime/test_melody_decode.py
    ctx = melody_ctx(make_module_ctx)
    with rest_client(ctx) as client:
        client.ctx = ctx
        yield client
    torch.set_num_threads(before)


def _upload(api, rate: int = 48000, fmt: str = "WAV") -> str:
    buf = io.BytesIO()
    sf.write(buf, np.stack([tune([392.0, 440.0], rate=rate)] * 2, axis=1), rate, format=fmt)
    r = api.post("/api/uploads", files={"file": (f"hum.{fmt.lower()}", buf.getvalue(), "application/octet-stream")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _switch(api, model_id: str) -> None:
    assert api.ctx.manager.switch_and_wait(model_id).stage == "ready"


def _count(api) -> int:
    return api.ctx.jobs.search().total


def test_a_text_only_model_refuses_a_melody_and_records_nothing(api):
    _switch(api, "studio-tiny")
    melody = _upload(api)
    before = _count(api)
    for route in ("/api/jobs", "/api/generate"):
        r = api.post(route, json={"prompt": "pop", "duration_s": 0.5, "melody_upload_id": melody})
        assert r.status_code == 409, r.text
        detail = r.json()["detail"]
        assert detail["code"] == "melody_not_supported" and detail["model_id"] == "studio-tiny"
    assert _count(api) == before


@pytest.mark.parametrize("body,status,code", [
    ({"melody_upload_id": "0" * 24}, 404, "upload_not_found"),
    ({"melody_upload_id": 12}, 422, None),
    ({"melody_upload_id": "x" * 65}, 422, None),
])
def test_bad_melody_ids_are_refused(api, body, status, code):
    _switch(api, "studio-tiny-melody")
    before = _count(api)
    r = api.post("/api/jobs", json={"prompt": "pop", "duration_s": 0.5, **body})
    assert r.status_code == status, r.text
    if code:
        assert r.json()["detail"]["code"] == code
    assert _count(api) == before


def test_a_melody_job_over_rest(api):
    _switch(api, "studio-tiny-melody")
    melody = _upload(api, rate=44100, fmt="FLAC")
    r = api.post("/api/generate", json={"prompt": "calm piano", "duration_s": 0.5, "seed": 3,
                                        "melody_upload_id": melody})
    assert r.status_code == 200, r.text
    assert r.json()["melody"] == {"upload_id": melody, "seconds": 1.0, "trimmed_from_s": None}
    job = api.get(f"/api/jobs/{r.json()['job_id']}").json()
    assert job["status"] == "succeeded" and job["melody"] == {"upload_id": melody, "seconds": 1.0,
                                                              "trimmed_from_s": None}
    assert api.get(r.json()["audio_url"]).status_code == 200
    plain = api.post("/api/generate", json={"prompt": "calm piano", "duration_s": 0.5, "seed": 3}).json()
    assert api.get(f"/api/jobs/{plain['job_id']}").json()["melody"] is None


def test_the_schema_documents_the_field(api):
    schema = api.get("/openapi.json").json()["components"]["schemas"]
    field = schema["JobRequest"]["properties"]["melody_upload_id"]
    assert "melody_not_supported" in field["description"]
    assert "melody" in schema["JobResponse"]["properties"]
