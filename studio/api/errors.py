"""Domain errors and malformed requests -> `{"detail": {"code", "message", ...}}` with a 4xx status."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from studio.errors import StudioError

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    field: str = Field(description="the parameter or body field, dotted (e.g. settings.top_k)")
    message: str


class ErrorDetail(BaseModel):
    """What went wrong: a stable code for programs, a sentence for people, and extra fields some codes add."""
    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    code: str = Field(description="stable snake_case code, e.g. not_found, invalid_body, busy", examples=["not_found"])
    message: str = Field(description="what went wrong and what to do, for a person")
    errors: list[FieldError] | None = Field(None, description="invalid_body, invalid_parameter, invalid_settings: "
                                                                "each bad field")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer of the REST API."""
    detail: ErrorDetail


def error_responses(described: dict[int, str]) -> dict[int | str, dict]:
    """`responses=` for a route: status -> ErrorResponse, described by the codes it can carry."""
    return {status: {"model": ErrorResponse, "description": text} for status, text in described.items()}


def _field(loc) -> str:
    # only the first element says where (a body field may itself be called "path" or "query")
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else loc)]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StudioError)
    async def studio_error(_request: Request, exc: StudioError):
        retry = exc.extra.get("retry_after_s")
        headers = {"Retry-After": str(retry)} if retry is not None else None
        return JSONResponse(status_code=exc.status, content={"detail": exc.to_dict()}, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_request: Request, exc: RequestValidationError):
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return JSONResponse(status_code=422, content={"detail": {
                "code": "invalid_json", "message": "The request body is not valid JSON."}})
        errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "")} for e in exc.errors()]
        text = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        if all(e.get("loc", ("body",))[0] in ("query", "path") for e in exc.errors()):
            return JSONResponse(status_code=422, content={"detail": {
                "code": "invalid_parameter", "message": f"Invalid parameter: {text}", "errors": errors}})
        return JSONResponse(status_code=422, content={"detail": {
            "code": "invalid_body", "message": f"The request body is not valid: {text}", "errors": errors}})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # A bug, not a refusal: logged with its traceback for the studio's owner; the caller gets the studio's JSON
        # shape (never Starlette's plain-text page), and nothing about the server's insides.
        log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(status_code=500, content={"detail": {
            "code": "internal_error", "message": "Something went wrong inside the studio (its log has the details). "
                                                 "Try again; if it persists, tell the studio's admin."}})
