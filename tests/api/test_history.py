"""History over REST (issue 10): GET /api/jobs filters, paging (X-Total-Count) and refusals naming the parameter;
ratings per signed-in user; DELETE /api/jobs/{id}; a blind A/B test's clips unknown to every /api/jobs route;
"generate again" gives the same audio."""
from __future__ import annotations

import base64
import hashlib

import pytest

from tests.api.test_jobs import sse
from tests.conftest import rest_client, seed_history


@pytest.fixture(scope="module")
def seeded(make_module_ctx):
    ctx = make_module_ctx()
    ids = seed_history(ctx)
    with rest_client(ctx) as client:
        yield client, ids


def listed(client, query: str = "") -> tuple[list[str], int]:
    r = client.get(f"/api/jobs{query}")
    assert r.status_code == 200, r.text
    return [j["prompt"] for j in r.json()], int(r.headers["X-Total-Count"])


def test_listing_filters_pages_and_counts(seeded):
    client, ids = seeded
    prompts, total = listed(client, "?limit=2")
    assert prompts == ["still waiting", "noise that failed"] and total == 5
    assert listed(client, "?limit=2&offset=4") == (["Lo-Fi piano 50% beat"], 5)
    assert listed(client, f"?adapter={ids['gone']}") == (["Jazz trio at the Café"], 1)
    assert listed(client, "?adapter=none&status=succeeded") == (["Lo-Fi piano 50% beat"], 1)
    assert listed(client, "?q=50%25") == (["Lo-Fi piano 50% beat"], 1)
    assert listed(client, "?min_rating=2&max_rating=2&submitted_by=bob") == (["dark_ambient drone"], 1)
    assert listed(client, "?rated=false&sort=shortest&model=studio-tiny") == (["noise that failed", "still waiting"], 2)
    assert listed(client, "?source=evaluation") == (["eval piano"], 1)
    assert listed(client, f"?evaluation_id={ids['evaluation']}") == (["eval piano"], 1)
    assert listed(client, "?sort=best_rated&limit=1") == (["Lo-Fi piano 50% beat"], 5)


def test_a_listed_job_carries_rating_scores_adapter_and_audio(seeded):
    client, ids = seeded
    jobs = {j["id"]: j for j in client.get("/api/jobs").json()}
    piano = jobs[ids["piano"]]
    assert piano["rating"] == {"job_id": ids["piano"], "mine": None, "average": 4.0, "count": 2}  # 'local' asks
    assert piano["scores"] == {"clap-tiny": 0.25} and piano["seed"] == 100 and piano["submitted_by"] == "alice"
    assert piano["audio_url"] == f"/api/jobs/{ids['piano']}/audio" and piano["elapsed_s"] == 2.0
    jazz = jobs[ids["jazz"]]
    assert jazz["adapter_label"] == "Deleted Adapter" and jazz["adapter_deleted"] is True
    audio = client.get(jazz["audio_url"])  # the job of a deleted adapter stays playable
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert jobs[ids["failed"]]["audio_url"] is None and jobs[ids["failed"]]["rating"]["average"] is None


@pytest.mark.parametrize("query, field", [
    ("adapter=abc", "adapter"), ("adapter=0", "adapter"), ("adapter=-1", "adapter"),
    ("adapter=99999999999999999999", "adapter"), ("adapter=9999999999999999999", "adapter"),
    ("status=done", "status"), ("min_rating=0", "min_rating"), ("min_rating=6", "min_rating"),
    ("max_rating=x", "max_rating"), ("min_rating=5&max_rating=1", "min_rating"), ("rated=maybe", "rated"),
    ("sort=random", "sort"), ("source=mine", "source"), ("limit=0", "limit"), ("limit=501", "limit"),
    ("offset=-1", "offset"), ("evaluation_id=0", "evaluation_id"), ("q=a%00b", "q"),
    ("q=" + "x" * 1001, "q"), ("submitted_by=" + "x" * 201, "submitted_by"),
])
def test_bad_filter_values_are_422_naming_the_parameter(seeded, query, field):
    client, _ = seeded
    r = client.get(f"/api/jobs?{query}")
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "invalid_parameter" and [e["field"] for e in detail["errors"]] == [field]


def test_a_blind_ab_clip_is_unknown_to_every_jobs_route(seeded):
    client, ids = seeded
    clip = ids["ab"]
    for method, path, body in [("GET", f"/api/jobs/{clip}", None), ("GET", f"/api/jobs/{clip}/audio", None),
                               ("GET", f"/api/jobs/{clip}/events", None), ("GET", f"/api/jobs/{clip}/rating", None),
                               ("PUT", f"/api/jobs/{clip}/rating", {"stars": 5}),
                               ("DELETE", f"/api/jobs/{clip}/rating", None), ("DELETE", f"/api/jobs/{clip}", None),
                               ("POST", f"/api/jobs/{clip}/resubmit", None),
                               ("POST", f"/api/jobs/{clip}/cancel", None)]:
        r = client.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["detail"] == {"code": "job_not_found", "message": f"There is no job {clip}.",
                                      "job_id": clip}, path  # the same answer as a job that never existed
    for query in ("?source=all&limit=500", "?source=evaluation", "?q=secret&source=all"):
        assert clip not in [j["id"] for j in client.get(f"/api/jobs{query}").json()]


@pytest.mark.parametrize("body, code", [({"stars": 0}, "invalid_body"), ({"stars": 6}, "invalid_body"),
                                        ({"stars": "4"}, "invalid_body"), ({"stars": 4.5}, "invalid_body"),
                                        ({"stars": 4, "user": "eve"}, "invalid_body"), ({}, "invalid_body")])
def test_bad_ratings_are_refused(seeded, body, code):
    client, ids = seeded
    r = client.put(f"/api/jobs/{ids['jazz']}/rating", json=body)
    assert r.status_code == 422 and r.json()["detail"]["code"] == code
    assert client.get(f"/api/jobs/{ids['jazz']}").json()["rating"]["count"] == 0


@pytest.mark.parametrize("name", ["failed", "waiting"])
def test_only_a_succeeded_job_can_be_rated(seeded, name):
    client, ids = seeded
    r = client.put(f"/api/jobs/{ids[name]}/rating", json={"stars": 3})
    assert r.status_code == 409 and r.json()["detail"]["code"] == "job_not_rateable"


def test_two_signed_in_users_rate_the_same_job_each_their_own(make_ctx):
    """--auth: the rating belongs to the user who signed in (two fronts on one studio, one user each)."""
    ctx = make_ctx(auth=("alice", "pw-a"))
    ids = seed_history(ctx)
    ctx.accounts.bootstrap(("bob", "pw-b"))  # a second account (what --auth bob:pw-b does at a start)
    bob_ctx = ctx
    jazz = ids["jazz"]

    def basic(user, password):
        return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    with rest_client(ctx) as alice, rest_client(bob_ctx) as bob:
        a, b = basic("alice", "pw-a"), basic("bob", "pw-b")
        assert alice.put(f"/api/jobs/{jazz}/rating", json={"stars": 5}).status_code == 401  # signed in only
        assert alice.put(f"/api/jobs/{jazz}/rating", json={"stars": 5}, headers=a).json()["mine"] == 5
        r = bob.put(f"/api/jobs/{jazz}/rating", json={"stars": 2}, headers=b).json()
        assert r == {"job_id": jazz, "mine": 2, "average": 3.5, "count": 2}
        assert alice.get(f"/api/jobs/{jazz}", headers=a).json()["rating"] == {"job_id": jazz, "mine": 5,
                                                                               "average": 3.5, "count": 2}
        assert alice.put(f"/api/jobs/{jazz}/rating", json={"stars": 4}, headers=a).json()["average"] == 3.0
        assert bob.get("/api/jobs?min_rating=3&q=jazz", headers=b).json()[0]["rating"]["mine"] == 2
        assert bob.delete(f"/api/jobs/{jazz}/rating", headers=b).json() == {"job_id": jazz, "mine": None,
                                                                            "average": 4.0, "count": 1}
        assert alice.get(f"/api/jobs/{jazz}/rating", headers=a).json()["mine"] == 4


def test_delete_over_rest(make_ctx):
    ctx = make_ctx()
    ids = seed_history(ctx)
    with rest_client(ctx) as client:
        r = client.delete(f"/api/jobs/{ids['piano']}")
        assert r.status_code == 200 and len(r.json()["files_removed"]) == 2
        assert not list((ctx.settings.data_dir / "outputs").glob(f"piano_job{ids['piano']}*"))
        for path in (f"/api/jobs/{ids['piano']}", f"/api/jobs/{ids['piano']}/audio"):
            assert client.get(path).status_code == 404
        assert client.delete(f"/api/jobs/{ids['piano']}").status_code == 404
        r = client.delete(f"/api/jobs/{ids['waiting']}")
        assert r.status_code == 409 and r.json()["detail"]["code"] == "job_not_finished"
        assert client.get(f"/api/jobs/{ids['waiting']}").status_code == 200


def test_generate_again_gives_the_same_audio(ctx, client):
    """Studio Tiny: resubmitting a job (History's "Generate again") decodes the same codes and writes the same
    audio, as a new job with the same seed and settings."""
    first = client.post("/api/jobs", json={"prompt": "same again", "duration_s": 1.0, "seed": 11,
                                           "settings": {"temperature": 1.3}}).json()
    assert sse(client, first["job_id"])[-1][0] == "succeeded"
    again = client.post(f"/api/jobs/{first['job_id']}/resubmit")
    assert again.status_code == 202 and again.json()["seeds"] == [11]
    assert sse(client, again.json()["job_id"])[-1][0] == "succeeded"
    a, b = (client.get(f"/api/jobs/{j}").json() for j in (first["job_id"], again.json()["job_id"]))
    assert a["settings"] == b["settings"] and a["settings"]["temperature"] == 1.3 and b["seed"] == 11
    audio_a, audio_b = client.get(a["audio_url"]).content, client.get(b["audio_url"]).content
    assert len(audio_a) > 1000 and hashlib.sha256(audio_a).digest() == hashlib.sha256(audio_b).digest()
    outputs = ctx.settings.data_dir / "outputs"
    codes_a, codes_b = (next(outputs.glob(f"*_job{j['id']}.codes.safetensors")).read_bytes() for j in (a, b))
    assert codes_a == codes_b
    # and another seed is other music: the comparison can tell
    other = client.post("/api/jobs", json={"prompt": "same again", "duration_s": 1.0, "seed": 12,
                                           "settings": {"temperature": 1.3}}).json()
    assert sse(client, other["job_id"])[-1][0] == "succeeded"
    assert next(outputs.glob(f"*_job{other['job_id']}.codes.safetensors")).read_bytes() != codes_a
