"""/api/training: refusals of run creation (each names what is wrong and creates nothing), unknown runs, the
configuration schema, and the SSE stream of a run that is over."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from studio.db.engine import session_scope
from studio.db.models import ABPair, ABTest, ABVote, TrainingRun
from tests.training_support import seed_dataset


@pytest.fixture(scope="module")
def studio(shared_client):
    ctx = shared_client.ctx
    ids = {"dataset": seed_dataset(ctx, n=2, name="tones"),
           "empty": seed_dataset(ctx, n=2, name="none-left", exclude_all=True)}
    with session_scope(ctx.engine) as s:
        open_test = ABTest(name="open", model_id="studio-tiny", prompts=["x"], seeds_per_prompt=1, duration_s=1,
                           secret="s", status="ready")
        tied = ABTest(name="tied", model_id="studio-tiny", prompts=["x"], seeds_per_prompt=1, duration_s=1,
                      secret="s", status="ready", closed_at=datetime.now(timezone.utc))
        s.add_all([open_test, tied])
        s.commit()
        pair = ABPair(abtest_id=tied.id, position=0, prompt="x", seed=1)
        s.add(pair)
        s.commit()
        s.add_all([ABVote(abtest_id=tied.id, pair_id=pair.id, listener="ann", choice="a"),
                   ABVote(abtest_id=tied.id, pair_id=pair.id, listener="bob", choice="b"),
                   ABVote(abtest_id=tied.id, pair_id=pair.id, listener="cy", choice="none")])
        s.commit()
        ids.update(open=open_test.id, tied=tied.id)
    return shared_client, ids


def _runs(ctx) -> int:
    with session_scope(ctx.engine) as s:
        from sqlmodel import func, select
        return s.exec(select(func.count()).select_from(TrainingRun)).one()


REFUSALS = [  # (body, status, code, field named in errors or None)
    ({"dataset_id": 999}, 404, "dataset_not_found", None),
    ({"dataset_id": "empty"}, 400, "dataset_empty", None),
    ({}, 422, "missing_dataset", "dataset_id"),
    ({"dataset_id": "dataset", "abtest_id": "open"}, 422, "invalid_method", "abtest_id"),
    ({"method": "dpo"}, 422, "missing_abtest", "abtest_id"),
    ({"method": "dpo", "abtest_id": "open"}, 409, "test_not_closed", None),
    ({"method": "dpo", "abtest_id": "tied"}, 409, "no_decisive_pairs", None),
    ({"method": "dpo", "abtest_id": 999}, 404, "abtest_not_found", None),
    ({"dataset_id": "dataset", "config": {"learning_rate": 5.0}}, 422, "invalid_config", "config.learning_rate"),
    ({"dataset_id": "dataset", "config": {"r": "8"}}, 422, "invalid_config", "config.r"),
    ({"dataset_id": "dataset", "config": {"rank": 8}}, 422, "invalid_config", "config.rank"),
    ({"dataset_id": "dataset", "config": {"target_modules": "everything"}}, 422, "invalid_config",
     "config.target_modules"),
    pytest.param({"dataset_id": "dataset", "config": {"device": "cuda"}}, 422, "invalid_config", "config.device",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a CUDA machine")),
    ({"dataset_id": "dataset", "audition_prompts": ["  "]}, 422, "invalid_prompt", "audition_prompts.0"),
    ({"dataset_id": "dataset", "start_adapter_id": 999}, 404, "adapter_not_found", None),
    ({"dataset_id": "dataset", "name": "  "}, 400, "invalid_name", None),
]


@pytest.mark.parametrize("body,status,code,field", REFUSALS)
def test_a_refused_run_says_why_and_creates_nothing(studio, body, status, code, field):
    client, ids = studio
    body = {k: ids.get(v, v) if isinstance(v, str) and k in ("dataset_id", "abtest_id") else v
            for k, v in body.items()}
    before = _runs(client.ctx)
    runs_dir = client.ctx.settings.data_dir / "training" / "runs"
    folders = set(runs_dir.iterdir()) if runs_dir.exists() else set()
    r = client.post("/api/training/runs", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail["code"] == code, detail
    if field is not None:
        assert field in [e["field"] for e in detail["errors"]], detail
    assert _runs(client.ctx) == before  # nothing half-created: no record, no folder
    assert (set(runs_dir.iterdir()) if runs_dir.exists() else set()) == folders


@pytest.mark.parametrize("method,path,code", [
    ("get", "/api/training/runs/999", "run_not_found"),
    ("get", "/api/training/runs/999/events", "run_not_found"),
    ("post", "/api/training/runs/999/stop", "run_not_found"),
    ("post", "/api/training/runs/999/resume", "run_not_found"),
    ("post", "/api/training/runs/999/register", "run_not_found"),
])
def test_an_unknown_run_is_a_404(studio, method, path, code):
    client, _ = studio
    r = client.request(method, path, json={} if method == "post" else None)
    assert r.status_code == 404 and r.json()["detail"]["code"] == code, r.text


def test_the_schema_is_the_training_configuration_grouped(studio):
    client, _ = studio
    schema = client.get("/api/training/config/schema").json()
    groups = {p["x-group"] for p in schema["properties"].values()}
    assert groups == {"Model", "LoRA", "Training", "Hardware", "Checkpointing", "DPO"}
    assert schema["properties"]["learning_rate"]["default"] == 1e-4


def test_a_run_over_streams_its_final_event_and_refuses_stop_resume_register(studio):
    client, ids = studio
    ctx = client.ctx
    with session_scope(ctx.engine) as s:  # a run recorded as over (no process), with no checkpoint
        run = TrainingRun(name="old", method="sft", model_id="studio-tiny", dataset_id=ids["dataset"],
                          folder="training/runs/x", status="succeeded", step=5, total_steps=5)
        s.add(run)
        s.commit()
        run_id = run.id
    with client.stream("GET", f"/api/training/runs/{run_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        data = [json.loads(line[5:]) for line in r.iter_lines() if line.startswith("data:")]
    assert [(d["event"], d["status"], d["step"]) for d in data] == [("done", "succeeded", 5)]
    assert client.post(f"/api/training/runs/{run_id}/stop").json()["detail"]["code"] == "run_not_running"
    assert client.post(f"/api/training/runs/{run_id}/resume").json()["detail"]["code"] == "run_not_resumable"
    r = client.post(f"/api/training/runs/{run_id}/register", json={})
    assert r.status_code == 409 and r.json()["detail"]["code"] == "no_checkpoint"
    listed = {x["id"]: x for x in client.get("/api/training/runs", params={"status": "succeeded"}).json()}
    assert listed[run_id]["url"] == f"/?run={run_id}" and listed[run_id]["dataset_name"] == "tones"
    assert run_id not in {x["id"] for x in client.get("/api/training/runs", params={"status": "failed"}).json()}
    assert client.get("/api/training/runs", params={"status": "bogus"}).status_code == 422


def test_a_run_through_the_api_streams_its_events_and_registers_a_chosen_checkpoint(studio):
    from tests.training_support import FAST

    client, ids = studio
    r = client.post("/api/training/runs", json={"dataset_id": ids["dataset"], "name": "api-run",
                                                "config": {**FAST, "audition_prompts": 0}})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "running" and run["config"]["max_steps"] == 6 and run["device_policy"]
    with client.stream("GET", f"/api/training/runs/{run['id']}/events") as stream:
        data = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    assert data[-1]["event"] == "done" and data[-1]["status"] == "succeeded", data[-1]
    assert [d["step"] for d in data if d["event"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert all("loss" in d and "lr" in d and "eta_s" in d for d in data if d["event"] == "step")
    shown = client.get(f"/api/training/runs/{run['id']}").json()
    assert shown["adapter_label"] == "api-run v1" and [c["step"] for c in shown["checkpoints"]] == [0, 3, 6]
    assert len(shown["loss_curve"]) == 6 and shown["log_tail"] is None
    r = client.post(f"/api/training/runs/{run['id']}/register", json={"step": 3, "description": "earlier"})
    assert r.status_code == 201, r.text
    adapter = r.json()
    assert adapter["label"] == "api-run v2" and adapter["description"] == "earlier"
    assert adapter["training_run_id"] == str(run["id"]) and adapter["training_metrics"]["steps"] == 3
    r = client.post(f"/api/training/runs/{run['id']}/register", json={"step": 4})
    assert r.status_code == 404 and r.json()["detail"]["code"] == "checkpoint_not_found"
    timeline = client.get("/api/adapters/timeline", params={"name": "api-run"}).json()
    assert {e["training_run_url"] for e in timeline} == {f"/?run={run['id']}"}
