"""The job routes (issue 9): POST /api/jobs answers at once (202), GET /api/jobs/{id}/events streams the job's life
as Server-Sent Events (audio included), cancel and resubmit, GET /api/queue, 429 with Retry-After when full, and
many REST clients at once are all served (no 423)."""
from __future__ import annotations

import base64
import json
import threading

import httpx
import numpy as np

from tests.conftest import rest_client
from tests.live import held_decoding, serve
from tests.services.test_queue import one_at_a_time


def sse(client, job_id: int) -> list[tuple[str, dict]]:
    """(event name, data) of every event of a job's stream, to its end."""
    events, name = [], "message"
    with client.stream("GET", f"/api/jobs/{job_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
                name = "message"
    return events


def test_a_job_is_accepted_at_once_then_streams_its_life_and_audio(client):
    r = client.post("/api/jobs", json={"prompt": "lofi beat", "duration_s": 1.5, "seed": 5})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] in ("queued", "running") and body["position"] >= 0 and body["seeds"] == [5]
    assert body["events_url"] == f"/api/jobs/{body['job_id']}/events" and body["model_id"] == "studio-tiny"
    events = sse(client, body["job_id"])
    names = [n for n, _ in events]
    assert names[-1] == "succeeded" and "running" in names and "audio" in names
    assert names.index("running") < names.index("audio")
    running = [d for n, d in events if n == "running" and d.get("total")]
    assert running and all(0 <= d["fraction"] <= 1 for d in running) and "of 1.5 s" in running[-1]["message"]
    audio = [d for n, d in events if n == "audio"]
    assert [a["seq"] for a in audio] == list(range(len(audio)))
    pcm = np.concatenate([np.frombuffer(base64.b64decode(a["data"]), "<i2") for a in audio])
    assert len(pcm) == 48000 and audio[0]["sample_rate"] == 32000 and audio[0]["channels"] == 1
    done = events[-1][1]
    assert done["audio_url"] == f"/api/jobs/{body['job_id']}/audio"
    assert client.get(done["audio_url"]).status_code == 200
    job = client.get(f"/api/jobs/{body['job_id']}").json()
    assert job["status"] == "succeeded" and job["has_codes"] and job["submitted_by"] == "local"
    assert job["started_at"] >= job["created_at"] and job["batch_size"] == 1
    # A job over already: its final event only.
    assert [n for n, _ in sse(client, body["job_id"])] == ["succeeded"]


def test_unknown_jobs_are_404s_everywhere(client):
    for method, path in [("GET", "/api/jobs/999/events"), ("POST", "/api/jobs/999/cancel"),
                         ("POST", "/api/jobs/999/resubmit")]:
        r = client.request(method, path)
        assert r.status_code == 404 and r.json()["detail"]["code"] == "job_not_found", (path, r.text)


def test_cancel_resubmit_queue_and_a_full_queue_over_rest(make_ctx):
    ctx = make_ctx(one_at_a_time(), max_queue=1)
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    with rest_client(ctx) as client, held_decoding(ctx) as running:
        first = client.post("/api/jobs", json={"prompt": "first", "duration_s": 0.5, "seed": 1}).json()
        assert running.wait(20)
        waiting = client.post("/api/jobs", json={"prompt": "second", "duration_s": 0.5, "seed": 2})
        assert waiting.status_code == 202 and waiting.json()["position"] == 1
        full = client.post("/api/jobs", json={"prompt": "third", "duration_s": 0.5})
        assert full.status_code == 429 and full.json()["detail"]["code"] == "queue_full"
        assert int(full.headers["Retry-After"]) >= 1
        view = client.get("/api/queue").json()
        assert [(i["state"], i["prompt"]) for i in view["items"]] == [("running", "first"), ("queued", "second")]
        assert view["waiting"] == 1 and view["max_queue"] == 1 and view["next"]
        job_id = waiting.json()["job_id"]
        assert client.post(f"/api/jobs/{job_id}/resubmit").json()["detail"]["code"] == "job_not_finished"
        r = client.post(f"/api/jobs/{job_id}/cancel").json()
        assert r == {"job_id": job_id, "cancelled": True, "was": "queued"}
    assert sse(client, first["job_id"])[-1][0] == "succeeded"
    assert client.post(f"/api/jobs/{job_id}/cancel").json()["cancelled"] is False  # over already
    again = client.post(f"/api/jobs/{job_id}/resubmit")
    assert again.status_code == 202 and again.json()["seeds"] == [2]
    assert sse(client, again.json()["job_id"])[-1][0] == "succeeded"


def test_many_rest_clients_at_once_none_refused(ctx):
    """Each client on its own connection to a real server: no 423, nothing lost."""
    answers: list[int] = []
    with serve(ctx) as url:
        def one(i: int) -> None:
            with httpx.Client(base_url=url, timeout=120) as http:
                r = http.post("api/generate", json={"prompt": f"rest {i}", "duration_s": 0.5, "seed": i})
                answers.append(r.status_code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert answers == [200] * 6
    assert sorted(j.prompt for j in ctx.jobs.list()) == sorted(f"rest {i}" for i in range(6))
