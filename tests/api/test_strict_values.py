"""Strict everywhere (issue 8, bug 8 and Security 7): a value of the wrong JSON type is refused with a 422 naming
the field, in every request body and query parameter the OpenAPI document lists (walked from /openapi.json, so a
new route or field is covered without being added here); an upload's form fields, text by nature, are converted
explicitly and refused by name when they are not a whole number or true/false."""
from __future__ import annotations

import functools
import io
import zipfile
from pathlib import Path

import pytest

from tests import adapters_factory as factory

# A valid body for each JSON route, so that the one wrong field is the only problem (a new route must be added:
# the walk below fails on a route it has no base for).
BASE_BODIES = {
    ("post", "/api/generate"): {"prompt": "x"},
    ("post", "/api/jobs"): {"prompt": "x"},
    ("post", "/api/models/current"): {"model_id": "studio-tiny"},
    ("post", "/api/adapters"): {"source": "folder"},
    ("patch", "/api/adapters/{adapter_id}"): {},
    ("put", "/api/jobs/{job_id}/rating"): {},
    ("post", "/api/evaluation/models/current"): {"model_id": "studio-tiny-clap"},
    ("post", "/api/evaluations"): {},
    ("post", "/api/abtests"): {"name": "t", "side_a": {}, "side_b": {}, "prompts": ["x"]},
    ("post", "/api/abtests/{test_id}/votes"): {"pair": 1, "choice": "first", "listener": "ann"},
    ("post", "/api/datasets"): {"source": "folder"},
    ("patch", "/api/datasets/{dataset_id}/clips"): {},
    ("post", "/api/training/runs"): {},
    ("post", "/api/training/runs/{run_id}/register"): {},
    ("post", "/api/models"): {"source": "folder"},
    ("post", "/api/models/inspect"): {"source": "folder"},
    ("post", "/api/models/import"): {"source": "folder"},
    ("put", "/api/me/password"): {"current_password": "x", "new_password": "long-enough"},
    ("post", "/api/users"): {"name": "ann", "password": "long-enough"},
    ("patch", "/api/users/{name}"): {},
    ("post", "/api/tokens"): {"name": "t"},
}
PATH_VALUES = {"adapter_id": "1", "job_id": "1", "model_id": "studio-tiny", "test_id": "1", "dataset_id": "1",
               "run_id": "1", "name": "ann"}
WRONG = {  # JSON type -> values of another type that a lax parser would coerce
    "integer": ["2", 2.5, True],
    "number": ["2.5", True],
    "boolean": ["true", 1, 0, "1"],
    "string": [7, True],
}
WRONG_QUERY = {"integer": ["2.5", "two", ""], "boolean": ["maybe", "2", ""]}


@pytest.fixture(scope="module")
def studio(module_studio):
    return module_studio()


@functools.cache
def _openapi_once() -> dict:
    """/openapi.json of a bare studio (built once, at collection; the walk only reads it)."""
    import tempfile

    from fastapi.testclient import TestClient

    from studio.config import Settings
    from studio.context import build_context
    from studio.registry import parse_registry
    from studio.server import build_api
    from tests.conftest import LOCAL, registry_dict

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), load_at_start=False, device="cpu", hf_cache_dir=Path(tmp) / "hf")
        ctx = build_context(settings, parse_registry(registry_dict()))
        with TestClient(build_api(ctx, load_model=False), base_url=LOCAL) as client:
            doc = client.get("/openapi.json").json()
        ctx.engine.dispose()
    return doc


def _types(prop: dict, doc: dict) -> set[str]:
    if "$ref" in prop:
        prop = doc["components"]["schemas"][prop["$ref"].rsplit("/", 1)[1]]
    found = {prop["type"]} if isinstance(prop.get("type"), str) else set(prop.get("type") or [])
    for option in prop.get("anyOf", []) + prop.get("oneOf", []):
        found |= _types(option, doc)
    return found - {"null"}


def _schema(schema: dict, doc: dict) -> dict:
    return doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema


def body_cases() -> list[tuple[str, str, str, object]]:
    doc = _openapi_once()
    cases = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            media = op.get("requestBody", {}).get("content", {}).get("application/json")
            if media is None:
                continue
            schema = _schema(media["schema"], doc)
            for name, prop in schema.get("properties", {}).items():
                types = _types(prop, doc)
                if len(types) != 1 or next(iter(types)) not in WRONG:
                    continue  # free-form objects (settings) are checked by their own schema
                cases += [(method, path, name, value) for value in WRONG[next(iter(types))]]
    return cases


def query_cases() -> list[tuple[str, str, str, str]]:
    doc = _openapi_once()
    cases = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                types = _types(param.get("schema", {}), doc)
                if param["in"] == "query" and len(types) == 1 and next(iter(types)) in WRONG_QUERY:
                    cases += [(method, path, param["name"], value) for value in WRONG_QUERY[next(iter(types))]]
    return cases


def _url(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return path


def test_the_walk_covers_the_fields_the_issue_names():
    fields = {(path, name) for _m, path, name, _v in body_cases()}
    assert {("/api/adapters/{adapter_id}", "active"), ("/api/adapters", "version"),
            ("/api/adapters", "allow_duplicate"), ("/api/generate", "seed"), ("/api/generate", "duration_s"),
            ("/api/models/current", "model_id")} <= fields
    assert {("/api/adapters", "active"), ("/api/jobs", "offset"), ("/api/models/{model_id}", "delete_files")} <= {
        (p, n) for _m, p, n, _v in query_cases()}


@pytest.mark.parametrize("method,path,field,value", body_cases(),
                         ids=[f"{m.upper()} {p} {f}={v!r}" for m, p, f, v in body_cases()])
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(studio, method, path, field, value):
    ctx, client = studio
    assert (method, path) in BASE_BODIES, f"add a valid base body for {method.upper()} {path}"
    r = client.request(method, _url(path), json={**BASE_BODIES[method, path], field: value})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "invalid_body" and [e["field"] for e in detail["errors"]] == [field], detail
    assert ctx.models.current().model is None and ctx.adapters.list() == []  # nothing done


@pytest.mark.parametrize("method,path,param,value", query_cases(),
                         ids=[f"{m.upper()} {p}?{n}={v}" for m, p, n, v in query_cases()])
def test_a_query_parameter_that_is_not_its_type_is_refused_naming_it(studio, method, path, param, value):
    _ctx, client = studio
    r = client.request(method, _url(path), params={param: value})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "invalid_parameter" and [e["field"] for e in detail["errors"]] == [param], detail


# ---- the upload's form fields ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive(tmp_path_factory, tiny_folder) -> bytes:
    folder = factory.make_lora(tiny_folder, tmp_path_factory.mktemp("lora") / "lora-a", seed=5)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in folder.iterdir():
            zf.writestr(f"lora-a/{p.name}", p.read_bytes())
    return buf.getvalue()


BAD_FORMS = [  # (field, value)
    ("version", "2a"), ("version", "-1"), ("version", "1.5"), ("version", "two"), ("version", "\u0663"),
    ("version", "0"), ("version", str(2**64)),
    ("allow_duplicate", "yes"), ("allow_duplicate", "1"), ("allow_duplicate", "maybe"),
]


@pytest.mark.parametrize("field,value", BAD_FORMS)
def test_an_unreadable_form_field_is_refused_naming_it(studio, archive, field, value):
    ctx, client = studio
    r = client.post("/api/adapters", files={"archive": ("lora-a.zip", archive)}, data={field: value})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "invalid_body" and [e["field"] for e in detail["errors"]] == [field], detail
    assert ctx.adapters.list() == [] and list((ctx.settings.data_dir / "adapters").iterdir()) == []


def test_form_fields_are_converted(module_studio, archive):
    _ctx, client = module_studio()
    r = client.post("/api/adapters", files={"archive": ("lora-a.zip", archive)},
                    data={"version": "3", "allow_duplicate": "false", "name": "lofi"})
    assert r.status_code == 201, r.text
    assert r.json()["label"] == "lofi v3"
    again = client.post("/api/adapters", files={"archive": ("lora-a.zip", archive)},
                        data={"name": "lofi", "allow_duplicate": "TRUE"})
    assert again.status_code == 201 and again.json()["label"] == "lofi v4", again.text
