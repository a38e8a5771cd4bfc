"""The /openapi.json document, whole: every error answer typed as ErrorResponse with its codes, the edge's refusals
(security.py, auth.py) described on the routes they guard, and the login schemes when auth is on."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from studio.api.errors import ErrorResponse
from studio.api.roles import rest_role

REF = "#/components/schemas/{model}"
ERROR_REF = {"$ref": REF.format(model="ErrorResponse")}
WRITES = {"post", "put", "patch", "delete"}
EDGE = {  # status: (description, applies to the operation?)
    400: ("invalid_host: a Host name this studio does not answer to (bound to loopback)", "any"),
    401: ("unauthorized: log in first (the form at /login, an API token, or HTTP Basic); invalid_token: the API "
          "token is unknown, revoked or expired", "auth"),
    403: ("cross_site_request: sent by another site's page (Origin / Sec-Fetch-Site)", "write"),
    413: ("body_too_large: the JSON body is over 1 MiB", "body"),
    415: ("unsupported_media_type: a body that is not application/json (or multipart where the route takes it); "
          "unsupported_encoding: a compressed body", "body"),
    422: ("invalid_parameter, invalid_body (`errors` names each field), invalid_json", "input"),
    429: ("too_many_attempts: too many failed logins from this address or for this user; see Retry-After", "auth"),
    503: ("storage_unavailable: the studio's data folder cannot be written (read-only disk, permissions); "
          "`folder` names it", "write"),
    507: ("disk_full: the disk holding the studio's data is full (or a quota or file-size limit); `folder` names "
          "it", "write"),
}


def install_openapi(app: FastAPI, *, auth: bool) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = complete(doc, auth=auth)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(doc: dict[str, Any], *, auth: bool) -> dict[str, Any]:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    error_schema = TypeAdapter(ErrorResponse).json_schema(ref_template=REF)
    schemas.update(error_schema.pop("$defs", {}))
    schemas["ErrorResponse"] = error_schema
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            applies = {"any": True, "auth": auth, "write": method in WRITES, "body": "requestBody" in op,
                       "input": bool(op.get("parameters")) or "requestBody" in op}
            responses = op.setdefault("responses", {})
            if auth and rest_role(method, path) == "admin":  # roles.py: a member is refused before the route
                text = "forbidden: needs an admin (this operation is admin-only)"
                if "403" in responses:
                    if "forbidden" not in responses["403"]["description"]:
                        responses["403"]["description"] += f"; {text}"
                else:
                    responses["403"] = {"description": text}
            for status, (text, when) in EDGE.items():
                if not applies[when]:
                    continue
                if status == 422:
                    if _fastapi_default(responses.get("422")):
                        responses["422"] = {"description": text}
                elif str(status) in responses:  # the route's own codes for this status, and the edge's
                    responses[str(status)]["description"] += f"; {text}"
                else:
                    responses[str(status)] = {"description": text}
            for status, response in responses.items():
                if int(status) >= 400:
                    response["content"] = {"application/json": {"schema": ERROR_REF}}
                # FastAPI's SSE routes add OpenAPI 3.2's itemSchema; this document is 3.1 (its description says
                # what the events hold)
                response.get("content", {}).get("text/event-stream", {}).pop("itemSchema", None)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if auth:
        doc["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API token (`t2s_...`) from "
                                                                           "POST /api/tokens"},
            "basic": {"type": "http", "scheme": "basic", "description": "a user's name and password"},
            "session": {"type": "apiKey", "in": "cookie", "name": "studio-session",
                        "description": "set by POST /login (the login form, or gradio_client)"}}
        doc["security"] = [{"bearer": []}, {"basic": []}, {"session": []}]
    return doc


def _fastapi_default(response: dict | None) -> bool:
    """FastAPI's own 422 (HTTPValidationError), which is not what the studio answers."""
    return response is None or "HTTPValidationError" in str(response.get("content", ""))
