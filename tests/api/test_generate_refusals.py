"""POST /api/generate refuses bad values the way every route does: one status and code per kind of mistake
(422 naming each field; settings refused exactly like PUT /api/models/{id}/config), strict types, nothing recorded.
One read-only studio serves the whole table."""
from __future__ import annotations

import json
import shutil

import pytest

from studio.config import Settings
from studio.context import build_context
from studio.registry import parse_registry
from tests.conftest import registry_dict, rest_client


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_folder):
    data_dir = tmp_path_factory.mktemp("refusals")
    shutil.copytree(tiny_folder, data_dir / "models" / "studio-tiny")
    ctx = build_context(Settings(data_dir=data_dir, load_at_start=False, device="cpu",
                                 hf_cache_dir=data_dir / "hf-cache"), parse_registry(registry_dict()))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    with rest_client(ctx) as c:
        yield c
    ctx.engine.dispose()


BAD_REQUESTS = [
    # (case, body, code, the field named in `errors`); every one is 422
    ("over the model's limit", {"prompt": "x", "duration_s": 31}, "duration_exceeds_limit", "duration_s"),
    ("zero duration", {"prompt": "x", "duration_s": 0}, "invalid_duration", "duration_s"),
    ("negative duration", {"prompt": "x", "duration_s": -3}, "invalid_duration", "duration_s"),
    ("shorter than a frame", {"prompt": "x", "duration_s": 0.001}, "invalid_duration", "duration_s"),
    ("empty prompt", {"prompt": "", "duration_s": 1}, "empty_prompt", "prompt"),
    ("blank prompt", {"prompt": "   \n", "duration_s": 1}, "empty_prompt", "prompt"),
    ("over-long prompt", {"prompt": "a" * 1001, "duration_s": 1}, "prompt_too_long", "prompt"),
    ("lone surrogate in the prompt", {"prompt": "piano \ud800", "duration_s": 1}, "invalid_body", "prompt"),
    ("NUL in the prompt", {"prompt": "piano\x00", "duration_s": 1}, "invalid_body", "prompt"),
    ("seed below -1", {"prompt": "x", "duration_s": 1, "seed": -2}, "invalid_body", "seed"),
    ("huge seed", {"prompt": "x", "duration_s": 1, "seed": 2**40}, "invalid_body", "seed"),
    ("seed as text", {"prompt": "x", "duration_s": 1, "seed": "7"}, "invalid_body", "seed"),
    ("seed as float", {"prompt": "x", "duration_s": 1, "seed": 7.0}, "invalid_body", "seed"),
    ("seed as boolean", {"prompt": "x", "duration_s": 1, "seed": True}, "invalid_body", "seed"),
    ("duration as boolean", {"prompt": "x", "duration_s": True}, "invalid_body", "duration_s"),
    ("duration as text", {"prompt": "x", "duration_s": "5"}, "invalid_body", "duration_s"),
    ("prompt as number", {"prompt": 5, "duration_s": 1}, "invalid_body", "prompt"),
    ("missing prompt", {"duration_s": 1}, "invalid_body", "prompt"),
    ("adapter id as text", {"prompt": "x", "duration_s": 1, "adapter_id": "1"}, "invalid_body", "adapter_id"),
    ("adapter id beyond 64 bits", {"prompt": "x", "duration_s": 1, "adapter_id": 2**70}, "invalid_body",
     "adapter_id"),
    ("misspelt field", {"prompt": "x", "duration_s": 1, "sed": 4}, "invalid_body", "sed"),
    ("settings as list", {"prompt": "x", "duration_s": 1, "settings": [1]}, "invalid_body", "settings"),
    # settings: refused exactly like the same values in PUT /api/models/{id}/config
    ("unknown setting", {"prompt": "x", "duration_s": 1, "settings": {"beam_size": 4}}, "invalid_settings",
     "beam_size"),
    ("setting out of bounds", {"prompt": "x", "duration_s": 1, "settings": {"top_p": 2}}, "invalid_settings",
     "top_p"),
    ("setting of wrong type", {"prompt": "x", "duration_s": 1, "settings": {"top_k": "5"}}, "invalid_settings",
     "top_k"),
    ("int for a boolean setting", {"prompt": "x", "duration_s": 1, "settings": {"do_sample": 1}},
     "invalid_settings", "do_sample"),
]


@pytest.mark.parametrize("body,code,field", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_bad_generate_requests_are_422_naming_the_field(client, body, code, field):
    # sent as ASCII JSON: a lone surrogate travels as the escape "\ud800", as a script would send it
    r = client.post("/api/generate", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == code and detail["message"]
    assert field in [e["field"].split(".")[0] for e in detail["errors"]], detail
    assert client.get("/api/jobs").json() == []  # nothing recorded for a refused request


@pytest.mark.parametrize("settings", [{"top_p": 2}, {"top_k": "5"}, {"beam_size": 4}, {"temperature": 0},
                                      {"output_format": "ogg"}, {"default_duration_s": 31}],
                         ids=["bounds", "type", "unknown", "exclusive minimum", "option", "model limit"])
def test_a_bad_setting_is_refused_alike_by_generate_and_by_the_config_put(client, settings):
    generate = client.post("/api/generate", json={"prompt": "x", "duration_s": 1, "settings": settings})
    put = client.put("/api/models/studio-tiny/config", json=settings)
    assert generate.status_code == put.status_code == 422
    g, p = generate.json()["detail"], put.json()["detail"]
    assert g["code"] == p["code"] == "invalid_settings"
    assert g["errors"] == p["errors"]


def test_over_limit_error_names_the_max_in_the_studios_words(client):
    detail = client.post("/api/generate", json={"prompt": "x", "duration_s": 45}).json()["detail"]
    assert detail["max_duration_s"] == 30
    assert detail["message"] == "45 s is over Studio Tiny's limit of 30 s."


def test_openapi_lists_job_status_values_and_the_seed_range(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    status = schemas["JobResponse"]["properties"]["status"]
    assert status["enum"] == ["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    assert schemas["CurrentModel"]["properties"]["state"]["enum"] == ["idle", "switching", "generating"]
    assert "ready" in schemas["ProgressEvent"]["properties"]["stage"]["enum"]
    seed = next(s for s in schemas["GenerateRequest"]["properties"]["seed"]["anyOf"] if s.get("type") == "integer")
    assert seed["minimum"] == -1 and seed["maximum"] == 2**32 - 1
    assert "-1: a random seed" in schemas["GenerateRequest"]["properties"]["seed"]["description"]
