"""/openapi.json is whole and valid (client generators take it as is), and the docs pages work offline."""
from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

ENUM_FIELDS = {"status", "stage", "state", "action"}


@pytest.fixture(scope="module", params=[False, True], ids=["no auth", "auth"])
def doc(module_studio, request):
    auth = ("u", "p") if request.param else None
    _ctx, client = module_studio(auth=auth)
    r = client.get("/openapi.json", auth=auth)
    assert r.status_code == 200
    return r.json()


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _operations(doc):
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            yield f"{method.upper()} {path}", method, op


def test_the_document_is_valid_openapi(doc):
    validate(doc)  # openapi-spec-validator: the same checks client generators start with


def test_every_ref_resolves(doc):
    refs = set(_refs(doc))
    assert refs, "the document uses components"
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"], f"{ref} is not defined"


def test_every_request_and_success_body_is_typed(doc):
    untyped = []
    for name, _method, op in _operations(doc):
        for media, body in op.get("requestBody", {}).get("content", {}).items():
            if not body.get("schema"):
                untyped.append(f"{name} request {media}")
        for status, response in op["responses"].items():
            content = response.get("content")
            if not content:
                untyped.append(f"{name} {status} has no content")
            for media, body in (content or {}).items():
                if not body.get("schema") or body["schema"] == {}:
                    untyped.append(f"{name} {status} {media}")
    assert untyped == []


def test_error_answers_are_the_shared_error_model_with_their_codes(doc):
    assert set(doc["components"]["schemas"]["ErrorDetail"]["required"]) == {"code", "message"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # FastAPI's shape is not what the studio sends
    for name, method, op in _operations(doc):
        errors = {s: r for s, r in op["responses"].items() if int(s) >= 400}
        for status, response in errors.items():
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
            # codes as `code: what it means` or `code, code`
            assert re.search(r"\b[a-z]+(_[a-z]+)*[:,]", response["description"]), f"{name} {status} names no code"
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in errors, name
        if method in ("post", "put", "patch", "delete"):
            assert "403" in errors, name
        if re.search(r"\{\w+_id\}", name):
            assert "404" in errors, f"{name}: an unknown id is a 404"


def test_status_like_fields_are_enums(doc):
    missing = []
    for schema_name, schema in doc["components"]["schemas"].items():
        for prop, spec in schema.get("properties", {}).items():
            if prop in ENUM_FIELDS:
                options = [spec, *spec.get("anyOf", [])]
                if not any("enum" in o or "$ref" in o for o in options):
                    missing.append(f"{schema_name}.{prop}")
    assert missing == []


def test_the_refusals_every_route_may_answer_are_described(doc):
    """The Host check answers on every route, a refused write of the studio's data on every write."""
    writes = 0
    for label, method, op in _operations(doc):
        responses = op["responses"]
        assert "invalid_host" in responses["400"]["description"], label
        if method in ("post", "put", "patch", "delete"):
            writes += 1
            assert "storage_unavailable" in responses["503"]["description"], label
            assert "disk_full" in responses["507"]["description"], label
    assert writes >= 6


def test_auth_is_described_only_when_on(doc):
    secured = "securitySchemes" in doc["components"]
    assert all(("401" in op["responses"]) == secured for _name, _m, op in _operations(doc))
    if secured:
        assert set(doc["components"]["securitySchemes"]) == {"bearer", "basic", "session"}
    # an admin-only operation says that a member is refused (studio/api/roles.py)
    forbidden = {label for label, _m, op in _operations(doc) if "forbidden" in op["responses"].get("403", {}).get(
        "description", "")}
    assert ("DELETE /api/models/{model_id}" in forbidden) == secured and "GET /api/models" not in forbidden


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_work_offline(module_studio, page):
    """Bug 2: every script, style and image of the docs pages comes from the studio itself."""
    _ctx, client = module_studio()
    html = client.get(page).text
    assert not re.search(r"https?://", html), re.findall(r"https?://[^\s\"']+", html)
    assets = re.findall(r"""(?:src|href|url)\s*[=:(]\s*["']([^"']+\.(?:js|css|png))["']""", html)
    assert len(assets) >= 2, html
    for asset in assets:
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 1000, asset
    assert '"validatorUrl": null' in html or page == "/redoc"  # Swagger UI would ask validator.swagger.io
    # and the browser may ask no other host (ReDoc's bundle has a CDN logo)
    assert "default-src 'self'" in client.get(page).headers["content-security-policy"]
