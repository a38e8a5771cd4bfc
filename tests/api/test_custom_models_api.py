"""POST /api/models, POST /api/models/inspect, DELETE /api/models/{id}: the REST side of custom models."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import rest_client
from tests.fakehub import serve_repos


def test_add_list_switch_and_remove_over_rest(make_ctx, tiny_folder):
    with serve_repos({"someone/rest-model": tiny_folder}) as hub:
        ctx = make_ctx(hf_endpoint=hub.url)
        with rest_client(ctx) as client:
            body = {"source": "hub", "repo_id": "someone/rest-model", "revision": "main", "id": "rest-model"}
            preview = client.post("/api/models/inspect", json=body)
            assert preview.status_code == 200 and preview.json()["codebooks"] == 4
            assert "rest-model" not in [m["id"] for m in client.get("/api/models").json()]
            added = client.post("/api/models", json=body)
            assert added.status_code == 200, added.text
            assert added.json()["source"] == "hub:someone/rest-model@main"
            listed = {m["id"]: m for m in client.get("/api/models").json()}
            assert listed["rest-model"]["custom"] and not listed["studio-tiny"]["custom"]
            assert listed["rest-model"]["architecture"] == "MusicgenForConditionalGeneration"
            again = client.post("/api/models", json=body)
            assert again.status_code == 409 and again.json()["detail"]["code"] == "model_exists"
            switch = client.post("/api/models/current", json={"model_id": "rest-model"})
            assert '"stage": "ready"' in switch.text.strip().splitlines()[-1]
            refused = client.delete("/api/models/rest-model")
            assert refused.status_code == 409 and refused.json()["detail"]["code"] == "model_loaded"
            client.post("/api/models/current", json={"model_id": "studio-tiny"})
            removed = client.delete("/api/models/rest-model", params={"delete_files": "true"})
            assert removed.status_code == 200 and removed.json()["files_deleted"] is True
            assert client.get("/api/models/rest-model").status_code == 404


@pytest.mark.parametrize("body,status,code", [
    ({"source": "hub", "repo_id": "x"}, 400, "invalid_repo_id"),
    ({"source": "folder", "path": "/etc"}, 400, "path_not_allowed"),
    ({"source": "ftp", "repo_id": "a/b"}, 422, "invalid_body"),
    ({"source": "hub", "repo_id": "a/b", "weights": "x"}, 422, "invalid_body"),
])
def test_bad_bodies_answer_a_code(shared_client, body, status, code):
    answer = shared_client.post("/api/models", json=body)
    assert answer.status_code == status and answer.json()["detail"]["code"] == code, answer.text


def test_registry_models_cannot_be_deleted(shared_client):
    answer = shared_client.delete("/api/models/musicgen-small")
    assert answer.status_code in (404, 409)
    answer = shared_client.delete("/api/models/studio-tiny")
    assert answer.status_code == 409 and answer.json()["detail"]["code"] == "not_custom"


def test_a_locked_list_answers_409(make_ctx, tiny_folder):
    ctx = make_ctx(custom_models=False)
    (ctx.settings.data_dir / "imports").mkdir(exist_ok=True)
    shutil.copytree(tiny_folder, ctx.settings.data_dir / "imports" / "m")
    with rest_client(ctx) as client:
        answer = client.post("/api/models", json={"source": "folder", "path": "m"})
        assert answer.status_code == 409 and answer.json()["detail"]["code"] == "custom_models_locked"
