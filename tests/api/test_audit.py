"""Who did what (issue 14) through REST: every kind of record names the person whose request made it (two different
people per kind), a member sees and manages their own jobs only (another's is a 404), an admin sees everyone's and
filters History and the queue by user, and an adapter's change log is served newest first.

The accounts lane owns the auth middleware; here a test-only ASGI middleware puts the actor on each request from a
header, as the auth middleware does (`scope["state"]["actor"]`)."""
from __future__ import annotations

import io
import shutil
import time

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from sqlmodel import select

from studio.db.engine import session_scope
from studio.db.models import (ABPair, ABTest, ABVote, AdapterChange, AudioUpload, CustomModel, Dataset, Evaluation,
                              GenerationConfigChange, Job, Rating, TrainingRun)
from studio.server import build_api
from studio.services.datasets import CreateDatasetRequest
from studio.services.evaluation import PromptSet
from studio.users import Actor
from tests.adapters_factory import make_lora
from tests.conftest import LOCAL, job_names, seed_history
from tests.live import held_decoding
from tests.tone_dataset import write_tone_folder

HEADER = "x-test-actor"


class ActAs:
    """Test-only: the actor of a request from its X-Test-Actor header ('name:role'); none without it (the local
    person, as a studio without auth)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            value = dict(scope["headers"]).get(HEADER.encode())
            if value:
                name, role = value.decode().split(":")
                scope.setdefault("state", {})["actor"] = Actor(name, role)
        await self.app(scope, receive, send)


def as_(who: str, role: str) -> dict:
    return {HEADER: f"{who}:{role}"}


@pytest.fixture(scope="module")
def studio(make_module_ctx, tiny_folder, tmp_path_factory):
    imports = tmp_path_factory.mktemp("imports")
    make_lora(tiny_folder, imports / "lora")
    for name in ("tones-ann", "tones-ben", "runs"):
        write_tone_folder(imports / name, n=2, seconds=1.0)
    for who in ("ann", "ben"):
        shutil.copytree(tiny_folder, imports / f"model-{who}")
    ctx = make_module_ctx(import_roots=(imports,), eval_model="studio-tiny-clap")
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    ctx.evaluation.prompt_set = PromptSet(duration_s=0.5, prompts=[{"prompt": "jazz trio", "seed": 7}])
    dataset = ctx.datasets.create(CreateDatasetRequest(source="folder", path="runs", model_id="studio-tiny")).id
    with session_scope(ctx.engine) as s:
        test = ABTest(name="blind", model_id="studio-tiny", prompts=["x"], seeds_per_prompt=1, duration_s=1,
                      secret="s", status="ready")
        s.add(test)
        s.commit()
        s.add(ABPair(abtest_id=test.id, position=0, prompt="x", seed=1))
        s.commit()
        test_id = test.id
    app = build_api(ctx, load_model=False)
    app.add_middleware(ActAs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ctx.training, "_kick", lambda: None)  # runs stay queued: recorded, never trained here
        with TestClient(app, base_url=LOCAL) as client:
            client.ctx, client.ids = ctx, {"dataset": dataset, "abtest": test_id}
            yield client


def _one(ctx, stmt):
    with session_scope(ctx.engine) as s:
        return s.exec(stmt).first()


def _wav() -> bytes:
    out = io.BytesIO()
    sf.write(out, np.zeros(16000, np.float32), 32000, format="WAV")
    return out.getvalue()


# Each kind of record: (role of the people who make it, make it as `who` over REST and return who it names).
def job(c, h, who):
    job_id = c.post("/api/jobs", json={"prompt": f"{who}'s beat", "duration_s": 0.5, "seed": 1}, headers=h).json()[
        "job_id"]
    return _one(c.ctx, select(Job.submitted_by).where(Job.id == job_id))


def rating(c, h, who):
    job_id = c.post("/api/generate", json={"prompt": "to rate", "duration_s": 0.5, "seed": 2}, headers=h).json()[
        "job_id"]
    assert c.put(f"/api/jobs/{job_id}/rating", json={"stars": 4}, headers=h).json()["mine"] == 4
    return _one(c.ctx, select(Rating.user).where(Rating.job_id == job_id))


def vote(c, h, who):
    test_id = c.ids["abtest"]
    # signed in, the voter is the signed-in person whatever name the body gives
    r = c.post(f"/api/abtests/{test_id}/votes", json={"pair": 1, "choice": "none"}, headers=h)
    assert r.status_code == 200, r.text
    return _one(c.ctx, select(ABVote.listener).where(ABVote.abtest_id == test_id).order_by(ABVote.id.desc()))


def upload(c, h, who):
    r = c.post("/api/uploads", files={"file": (f"{who}.wav", _wav(), "audio/wav")}, headers=h)
    return _one(c.ctx, select(AudioUpload.uploaded_by).where(AudioUpload.id == r.json()["id"]))


def settings_change(c, h, who):
    temperature = 0.9 if who == "ann" else 0.8
    assert c.put("/api/models/studio-tiny/config", json={"temperature": temperature}, headers=h).status_code == 200
    return _one(c.ctx, select(GenerationConfigChange.changed_by).order_by(GenerationConfigChange.id.desc()))


def adapter_registered(c, h, who):
    r = c.post("/api/adapters", json={"source": "folder", "path": "lora", "name": f"lora-{who}",
                                       "allow_duplicate": True}, headers=h)
    assert r.status_code == 201, r.text
    return _one(c.ctx, select(AdapterChange.changed_by).where(AdapterChange.adapter_id == r.json()["id"]))


def adapter_changed(c, h, who):
    adapter_id = c.get("/api/adapters").json()[0]["id"]
    c.patch(f"/api/adapters/{adapter_id}", json={"description": f"tuned by {who}"}, headers=h)
    [latest, *_] = c.get(f"/api/adapters/{adapter_id}/changes", headers=h).json()
    assert latest["action"] == "described" and latest["details"]["description"][1] == f"tuned by {who}"
    return latest["changed_by"]


def training_run(c, h, who):
    r = c.post("/api/training/runs", json={"dataset_id": c.ids["dataset"], "name": f"run-{who}"}, headers=h)
    assert r.status_code == 201, r.text
    assert c.post(f"/api/training/runs/{r.json()['id']}/stop", headers=h).json()["status"] == "stopped"
    return _one(c.ctx, select(TrainingRun.created_by).where(TrainingRun.id == r.json()["id"]))


def dataset(c, h, who):
    r = c.post("/api/datasets", json={"source": "folder", "path": f"tones-{who}", "name": who}, headers=h)
    return _one(c.ctx, select(Dataset.created_by).where(Dataset.id == r.json()["id"]))


def evaluation(c, h, who):
    r = c.post("/api/evaluations", json={}, headers=h)
    assert r.status_code == 202, r.text
    return _one(c.ctx, select(Evaluation.created_by).where(Evaluation.id == r.json()["id"]))


def custom_model(c, h, who):
    r = c.post("/api/models", json={"source": "folder", "path": f"model-{who}", "id": f"model-{who}"}, headers=h)
    assert r.status_code == 200, r.text
    return _one(c.ctx, select(CustomModel.added_by).where(CustomModel.id == f"model-{who}"))


def abtest(c, h, who):
    r = c.post("/api/abtests", json={"name": f"{who}'s test", "side_a": {}, "side_b": {"overrides": {
        "temperature": 0.5}}, "prompts": ["x"], "seeds_per_prompt": 1, "duration_s": 0.5}, headers=h)
    return _one(c.ctx, select(ABTest.created_by).where(ABTest.id == r.json()["id"]))


RECORDS = [("member", job), ("member", rating), ("member", vote), ("member", upload), ("admin", settings_change),
           ("admin", adapter_registered), ("admin", adapter_changed), ("admin", training_run), ("admin", dataset),
           ("admin", evaluation), ("admin", custom_model), ("admin", abtest)]


@pytest.mark.parametrize("role, make", RECORDS, ids=[m.__name__ for _, m in RECORDS])
def test_every_kind_of_record_names_who_made_it(studio, role, make):
    assert [make(studio, as_(who, role), who) for who in ("ann", "ben")] == ["ann", "ben"]


@pytest.fixture(scope="module")
def history(make_module_ctx):
    """Seeded History (piano, failed: alice's; drone: bob's; jazz, waiting: local's) behind the actor middleware."""
    ctx = make_module_ctx()
    ids = seed_history(ctx)
    app = build_api(ctx, load_model=False)
    app.add_middleware(ActAs)
    with TestClient(app, base_url=LOCAL) as client:
        client.ids = ids
        yield client


ALICE, BOB, ROOT = as_("alice", "member"), as_("bob", "member"), as_("root", "admin")


@pytest.mark.parametrize("headers, query, expected", [
    (ALICE, "", ["failed", "piano"]),
    (BOB, "", ["drone"]),
    (ROOT, "", ["waiting", "failed", "jazz", "drone", "piano"]),
    ({}, "", ["waiting", "failed", "jazz", "drone", "piano"]),  # no auth: the local person sees everything
    (ROOT, "?user=bob", ["drone"]),
    (ROOT, "?submitted_by=bob", ["drone"]),  # the former name of the filter still works
    (ALICE, "?user=bob", []),  # a member naming another gets nothing of theirs
    (ALICE, "?source=all", ["failed", "piano"]),
])
def test_history_is_a_members_own_and_an_admins_everyones(history, headers, query, expected):
    r = history.get(f"/api/jobs{query}", headers=headers)
    assert [job_names(history.ids)[j["id"]] for j in r.json()] == expected
    assert r.headers["X-Total-Count"] == str(len(expected))


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/api/jobs/{id}", None), ("GET", "/api/jobs/{id}/audio", None), ("GET", "/api/jobs/{id}/events", None),
    ("GET", "/api/jobs/{id}/rating", None), ("PUT", "/api/jobs/{id}/rating", {"stars": 1}),
    ("DELETE", "/api/jobs/{id}/rating", None), ("DELETE", "/api/jobs/{id}", None),
    ("POST", "/api/jobs/{id}/cancel", None), ("POST", "/api/jobs/{id}/resubmit", None),
    ("POST", "/api/jobs/{id}/score", None),
])
def test_another_members_job_is_a_404_on_every_route(history, method, path, body):
    """(Continuing another's job is refused alike: tests/services/test_ownership.py, with a model loaded.)"""
    piano = history.ids["piano"]
    r = history.request(method, path.format(id=piano), json=body, headers=BOB)
    assert (r.status_code, r.json()["detail"]["code"]) == (404, "job_not_found")
    assert history.get(f"/api/jobs/{piano}", headers=ALICE).json()["rating"]["count"] == 2  # nothing changed


def idle(c) -> None:
    deadline = time.monotonic() + 60
    while c.get("/api/queue").json()["items"]:  # what the other tests queued (clips of tests, evaluations)
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_queue_route_lists_a_members_own_jobs_and_filters_by_user(studio):
    c = studio
    idle(c)
    ann, ben, root = as_("ann", "member"), as_("ben", "member"), as_("root", "admin")
    with held_decoding(c.ctx) as running:
        c.post("/api/jobs", json={"prompt": "root's", "duration_s": 0.5, "seed": 5}, headers=root)
        assert running.wait(20)
        for h, prompt in ((ann, "ann's"), (ben, "ben's")):
            c.post("/api/jobs", json={"prompt": prompt, "duration_s": 0.5, "seed": 5}, headers=h)
        seen = {who: [(i["prompt"], i["position"]) for i in c.get("/api/queue", headers=h).json()["items"]]
                for who, h in (("ann", ann), ("ben", ben))}
        assert seen == {"ann": [("ann's", 1)], "ben": [("ben's", 2)]}  # places in the whole queue
        only_ben = c.get("/api/queue?user=ben", headers=root).json()["items"]
        assert [i["prompt"] for i in only_ben] == ["ben's"]
        assert [i["prompt"] for i in c.get("/api/queue", headers=root).json()["items"]] == ["root's", "ann's",
                                                                                          "ben's"]
    idle(c)


def test_an_unknown_adapters_change_log_is_a_404(studio):
    r = studio.get("/api/adapters/999999/changes")
    assert r.status_code == 404 and r.json()["detail"]["code"] == "adapter_not_found"
