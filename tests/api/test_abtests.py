"""/api/abtests: a blind A/B test through REST from creation to the verdict, what a listener can see over HTTP
(nothing that names a side: fields, URLs, headers, sizes), refusals as tables, and the --auth listener."""
from __future__ import annotations

import base64
import time

import pytest

from studio.db.abtests import pairs_of
from studio.db.engine import session_scope
from studio.db.models import ABTest
from studio.services.abtests import first_is_b

BODY = {"name": "two settings", "side_a": {}, "side_b": {"overrides": {"temperature": 0.5}},
        "prompts": ["lofi piano", "rock riff", "ambient pad"], "seeds_per_prompt": 1, "seed": 3, "duration_s": 1.0}


def wait_ready(client, test_id: int, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while (view := client.get(f"/api/abtests/{test_id}").json())["status"] == "generating":
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    return view


@pytest.fixture(scope="module")
def made(shared_client):
    r = shared_client.post("/api/abtests", json=BODY)
    assert r.status_code == 201, r.text
    assert wait_ready(shared_client, r.json()["id"])["status"] == "ready"
    return r.json()["id"]


def test_a_test_from_creation_to_the_verdict(shared_client, made):
    c = shared_client
    listed = c.get("/api/abtests").json()
    assert [t["id"] for t in listed] == [made] and listed[0]["pairs"] == listed[0]["clips_ready"] == 3
    before = c.get(f"/api/abtests/{made}", params={"listener": "zoe"}).json()
    assert before["results"] is None and before["revealed"] is False and before["your_votes"] == 0
    nxt = c.get(f"/api/abtests/{made}/next", params={"listener": "zoe"}).json()
    seen = []
    while not nxt["done"]:
        pair = nxt["pair"]
        assert pair["index"] == len(seen) + 1 and pair["total"] == 3
        first, second = c.get(pair["first_url"]), c.get(pair["second_url"])
        for clip in (first, second):
            assert clip.status_code == 200 and clip.headers["content-type"] == "audio/wav"
            assert clip.content[:4] == b"RIFF"
        assert first.content != second.content
        seen.append(pair["pair"])
        r = c.post(f"/api/abtests/{made}/votes", json={"listener": "zoe", "pair": pair["pair"], "choice": "first"})
        assert r.status_code == 200, r.text
        assert r.json()["pair"] == pair["pair"] and r.json()["choice"] == "first"
        nxt = r.json()["next"]
    assert sorted(seen) == [1, 2, 3] and nxt["voted"] == 3
    again = c.post(f"/api/abtests/{made}/votes", json={"listener": "zoe", "pair": 1, "choice": "second"})
    assert again.status_code == 409 and again.json()["detail"]["code"] == "already_voted"
    after = c.get(f"/api/abtests/{made}", params={"listener": "zoe"}).json()
    res = after["results"]
    assert after["revealed"] and res["overall"]["ties"] == 0 and res["overall"]["decisive"] == 3
    assert res["overall"]["wins_a"] + res["overall"]["wins_b"] == 3
    assert res["overall"]["verdict"] == "not_enough_data" and "more decisive votes are needed" in res["verdict"]
    assert res["side_b"]["label"] == "Base model (temperature=0.5)" and res["side_a"]["label"] == "Base model"
    assert c.get(f"/api/abtests/{made}").json()["results"] is None  # not closed: revealed to zoe only


def test_nothing_over_http_names_a_side_before_the_vote(shared_client, made):
    c = shared_client
    with session_scope(c.ctx.engine) as session:
        test = session.get(ABTest, made)
        pairs = pairs_of(session, made)
    side_of_first = {}
    for listener in ("kim", "lee", "max", "ned"):
        nxt = c.get(f"/api/abtests/{made}/next", params={"listener": listener})
        text = nxt.text
        for leak in ("temperature", "side", "job", ".wav", "Base model", test.secret):
            assert leak not in text
        for pair in pairs:
            n = pair.position + 1
            first = c.get(f"/api/abtests/{made}/pairs/{n}/first", params={"listener": listener})
            second = c.get(f"/api/abtests/{made}/pairs/{n}/second", params={"listener": listener})
            # the same headers but the length, and the same length: nothing but the sound differs
            assert first.headers["content-length"] == second.headers["content-length"]
            for r in (first, second):
                assert set(r.headers) == {"content-type", "content-length", "cache-control"}
            clip_a = (c.ctx.settings.data_dir / pair.clip_a).read_bytes()
            is_b = first.content != clip_a
            assert is_b == first_is_b(test.secret, listener, pair.id)
            side_of_first[(listener, n)] = is_b
    assert len(set(side_of_first.values())) == 2  # some listeners hear A first, others B, on the same pairs
    view = c.get(f"/api/abtests/{made}", params={"listener": "kim"}).text
    assert "temperature" not in view and "side_a" not in view


@pytest.mark.parametrize("change, status, code, field", [
    ({"name": "  "}, 422, "empty_name", "name"),
    ({"name": "n" * 101}, 422, "name_too_long", "name"),
    ({"name": "a\u0000b"}, 422, "invalid_body", "name"),  # the request edge refuses NUL in any text
    ({"prompts": []}, 422, "no_prompts", "prompts"),
    ({"prompts": ["p"] * 51}, 422, "too_many_prompts", "prompts"),
    ({"prompts": ["p"] * 20, "seeds_per_prompt": 6}, 422, "too_many_pairs", "seeds_per_prompt"),
    ({"prompts": ["fine", "   "]}, 422, "empty_prompt", "prompts.1"),
    ({"prompts": ["x" * 1001]}, 422, "prompt_too_long", "prompts.0"),
    ({"duration_s": 31.0}, 422, "duration_exceeds_limit", "duration_s"),
    ({"duration_s": -1.0}, 422, "invalid_duration", "duration_s"),
    ({"side_b": {"overrides": {"top_k": -3}}}, 422, "invalid_settings", "side_b.overrides.top_k"),
    ({"side_a": {"overrides": {"warmth": 1}}}, 422, "invalid_settings", "side_a.overrides.warmth"),
    ({"settings": {"temperature": "hot"}}, 422, "invalid_settings", "settings.temperature"),
    ({"side_a": {"adapter_id": 999}}, 404, "adapter_not_found", None),
    ({"side_a": {"lora": 1}}, 422, "invalid_body", "side_a.lora"),
    ({"seeds_per_prompt": 0}, 422, "invalid_body", "seeds_per_prompt"),
    ({"seeds_per_prompt": "2"}, 422, "invalid_body", "seeds_per_prompt"),
    ({"model_id": "huge"}, 409, "model_not_loaded", None),
    ({"model_id": "nope"}, 404, "model_not_found", None),
    ({"extra": True}, 422, "invalid_body", "extra"),
])
def test_create_refusals(shared_client, change, status, code, field):
    before = len(shared_client.get("/api/abtests").json())
    r = shared_client.post("/api/abtests", json={**BODY, **change})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail["code"] == code and detail["message"]
    if field is not None:
        assert field in [e["field"] for e in detail["errors"]]
    assert len(shared_client.get("/api/abtests").json()) == before  # nothing half-made


@pytest.mark.parametrize("method, path, body, status, code", [
    ("get", "/api/abtests/{id}/next", None, 422, "listener_required"),
    ("get", "/api/abtests/{id}/next?listener=a%09b", None, 422, "invalid_listener"),
    ("get", "/api/abtests/999/next?listener=a", None, 404, "abtest_not_found"),
    ("get", "/api/abtests/{id}/pairs/9/first?listener=a", None, 404, "pair_not_found"),
    ("get", "/api/abtests/{id}/pairs/0/first?listener=a", None, 422, "invalid_parameter"),
    ("get", "/api/abtests/{id}/pairs/1/a?listener=a", None, 422, "invalid_parameter"),
    ("post", "/api/abtests/{id}/votes", {"pair": 1, "choice": "a", "listener": "x"}, 422, "invalid_body"),
    ("post", "/api/abtests/{id}/votes", {"pair": 1, "choice": "first"}, 422, "listener_required"),
    ("post", "/api/abtests/{id}/votes", {"pair": 7, "choice": "first", "listener": "x"}, 404, "pair_not_found"),
    ("post", "/api/abtests/{id}/cancel", None, 409, "test_not_generating"),
    ("post", "/api/abtests/{id}/resume", None, 409, "test_not_failed"),
    ("delete", "/api/abtests/999", None, 404, "abtest_not_found"),
])
def test_listening_refusals(shared_client, made, method, path, body, status, code):
    kwargs = {"json": body} if body is not None else {}
    r = getattr(shared_client, method)(path.format(id=made), **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["detail"]["code"] == code


def test_close_reveals_to_everyone_and_delete_removes_the_test(client, ctx):
    r = client.post("/api/abtests", json={**BODY, "prompts": ["one"]})
    test_id = r.json()["id"]
    generating = client.post(f"/api/abtests/{test_id}/close")
    assert generating.status_code in (200, 409)
    wait_ready(client, test_id)
    closed = client.post(f"/api/abtests/{test_id}/close").json()
    assert closed["closed"] and closed["revealed"] and closed["results"]["overall"]["decisive"] == 0
    late = client.post(f"/api/abtests/{test_id}/votes", json={"listener": "a", "pair": 1, "choice": "none"})
    assert late.status_code == 409 and late.json()["detail"]["code"] == "test_closed"
    assert client.delete(f"/api/abtests/{test_id}").json() == {"deleted": True}
    assert client.get(f"/api/abtests/{test_id}").status_code == 404
    assert not (ctx.settings.data_dir / "abtests" / str(test_id)).exists()
    assert not list((ctx.settings.data_dir / "outputs").iterdir())  # the clips' jobs' audio and codes went too


USER, PASSWORD = "alice", "pw"
AUTH = {"authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


def test_with_auth_the_listener_is_the_signed_in_user(module_studio):
    _ctx, c = module_studio(load=True, auth=(USER, PASSWORD))
    assert c.post("/api/abtests", json=BODY).status_code == 401
    test_id = c.post("/api/abtests", json={**BODY, "prompts": ["auth"]}, headers=AUTH).json()["id"]
    deadline = time.monotonic() + 60
    while c.get(f"/api/abtests/{test_id}", headers=AUTH).json()["status"] == "generating":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    nxt = c.get(f"/api/abtests/{test_id}/next", headers=AUTH).json()
    assert nxt["listener"] == USER and "listener=" not in nxt["pair"]["first_url"]
    assert c.get(nxt["pair"]["first_url"], headers=AUTH).status_code == 200
    other = c.post(f"/api/abtests/{test_id}/votes", json={"pair": 1, "choice": "first", "listener": "bob"},
                   headers=AUTH)
    assert other.status_code == 422 and other.json()["detail"]["code"] == "listener_not_you"
    assert "alice" in other.json()["detail"]["message"]
    assert c.get(f"/api/abtests/{test_id}/next", params={"listener": "bob"}, headers=AUTH).status_code == 422
    mine = c.post(f"/api/abtests/{test_id}/votes", json={"pair": 1, "choice": "none"}, headers=AUTH)
    assert mine.status_code == 200 and mine.json()["next"]["done"]
    view = c.get(f"/api/abtests/{test_id}", headers=AUTH).json()
    assert view["votes_per_listener"] == {USER: 1} and view["revealed"]  # alice voted on every pair
