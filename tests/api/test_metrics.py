"""GET /api/adapters/{id}/performance and GET /api/adapters/compare: shapes, figures as JSON, refusals as
`{"detail": {"code", "message"}}`, and /compare never read as an adapter id."""
from __future__ import annotations

import pytest
from sqlmodel import Session

from tests.conftest import rest_client
from tests.metrics_seed import Seeder


@pytest.fixture(scope="module")
def api(make_module_ctx):
    ctx = make_module_ctx()
    with Session(ctx.engine) as session:
        s = Seeder(session)
        v1 = s.adapter("lofi", 1, training_metrics={"loss": [2.0, 1.5]})
        v2 = s.adapter("lofi", 2)
        other = s.adapter("keys", 1, base="tiny-b")
        s.job("piano", v1, ratings={"alice": 4, "bob": 2})
        s.job("piano", None, ratings={"alice": 3})
        s.abtest("v1 vs v2", v1, v2, {"a": 1, "b": 6})
        s.abtest("running", v1, v2, {"a": 9}, closed=False)
        ids = {"v1": v1.id, "v2": v2.id, "other": other.id}
    with rest_client(ctx) as client:
        yield client, ids


def test_performance_as_json(api):
    client, ids = api
    res = client.get(f"/api/adapters/{ids['v1']}/performance")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["label"] == "lofi v1" and body["adapter"]["generations"] == 1
    assert body["adapter"]["rating"] == {"n": 2, "jobs_rated": 1, "mean": 3.0,
                                         "distribution": {"1": 0, "2": 1, "3": 0, "4": 1, "5": 0}}
    assert body["base"]["rating"]["mean"] == 3.0 and body["base"]["generations"] == 1
    assert body["adapter"]["evaluation"] is None and body["evaluation_vs_base"] is None
    assert (body["ab"]["wins"], body["ab"]["losses"], body["ab"]["pending_tests"]) == (1, 6, 1)
    assert "revealed" in body["ab"]["rule"]


def test_compare_route_is_not_an_adapter_id(api):
    client, ids = api
    res = client.get("/api/adapters/compare", params={"ids": f"{ids['v1']},{ids['v2']}"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["comparable"] is True and (body["a"]["label"], body["b"]["label"]) == ("lofi v1", "lofi v2")
    assert body["ab"]["verdict"] == "no_difference" and body["ab"]["n_a"] == 7  # 1 + 6 decisive: p = 16/128
    assert body["ab"]["p_value"] == pytest.approx(16 / 128) and body["ab_pending_tests"] == 1
    assert (body["ab"]["detail"]["wins_a"], body["ab"]["detail"]["wins_b"]) == (1, 6)  # the sign test in full
    assert body["rating"]["detail"]["test"] == "mann_whitney_u"
    assert body["training_loss"]["final_a"] == 1.5 and body["training_loss"]["final_b"] is None
    assert body["rating"]["n_a"] == 2 and body["rating"]["n_b"] == 0
    for metric in ("evaluation", "rating", "ab"):
        assert {"value_a", "value_b", "n_a", "n_b", "verdict", "significant", "more_needed", "summary"} \
            <= set(body[metric])


def test_compare_spaces_are_allowed(api):
    client, ids = api
    assert client.get(f"/api/adapters/compare?ids={ids['v2']},%20{ids['v1']}").status_code == 200


def test_not_comparable_is_an_answer_not_an_error(api):
    client, ids = api
    body = client.get("/api/adapters/compare", params={"ids": f"{ids['v1']},{ids['other']}"}).json()
    assert body["comparable"] is False and "different base models" in body["reason"]
    assert body["rating"]["verdict"] == "not_comparable"


@pytest.mark.parametrize("ids, problem", [
    ("1", "exactly two"),
    ("1,2,3", "exactly two"),
    ("", "exactly two"),
    ("a,b", "whole number"),
    ("1,-2", "whole number"),
    ("0,1", "whole number"),
    ("1.5,2", "whole number"),
    ("99999999999999999999,1", "whole number"),
    ("1,1", "two different"),
    ("x" * 61, "at most 60"),
], ids=["one", "three", "empty", "letters", "negative", "zero", "decimal", "over 64 bits", "same twice", "too long"])
def test_bad_ids_are_422_naming_the_parameter(api, ids, problem):
    client, _ = api
    res = client.get("/api/adapters/compare", params={"ids": ids})
    assert res.status_code == 422, res.text
    detail = res.json()["detail"]
    assert detail["code"] == "invalid_parameter" and detail["errors"][0]["field"] == "ids"
    assert problem in detail["message"]


def test_missing_ids_is_422(api):
    client, _ = api
    res = client.get("/api/adapters/compare")
    assert res.status_code == 422 and res.json()["detail"]["code"] == "invalid_parameter"


@pytest.mark.parametrize("path", ["/api/adapters/999999/performance", "/api/adapters/compare?ids=1,999999",
                                  "/api/adapters/compare?ids=999999,1"])
def test_unknown_adapters_are_404(api, path):
    client, _ = api
    res = client.get(path)
    assert res.status_code == 404 and res.json()["detail"]["code"] == "adapter_not_found"


@pytest.mark.parametrize("path", ["/api/adapters/0/performance", "/api/adapters/x/performance",
                                  "/api/adapters/99999999999999999999/performance"])
def test_bad_adapter_id_is_422(api, path):
    client, _ = api
    res = client.get(path)
    assert res.status_code == 422 and res.json()["detail"]["code"] == "invalid_parameter"


def test_routes_are_documented(api):
    client, _ = api
    paths = client.get("/openapi.json").json()["paths"]
    compare = paths["/api/adapters/compare"]["get"]
    assert {"200", "404", "422"} <= set(compare["responses"])
    assert compare["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("VersionComparison")
    perf = paths["/api/adapters/{adapter_id}/performance"]["get"]
    assert {"200", "404", "422"} <= set(perf["responses"])
