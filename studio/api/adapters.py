"""The /api/adapters routes: register, list (filters, groups), show, edit, delete, version timeline."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from studio.api.errors import error_responses
from studio.api.params import RecordId
from studio.context import AppContext
from studio.errors import InvalidRequest
from studio.services.adapters import (AdapterGroup, AdapterInfo, AdapterUpdate, RegisterAdapterRequest,
                                      TimelineEntry)

NOT_FOUND = error_responses({404: "adapter_not_found: unknown (or deleted) adapter"})
REGISTER_BODY = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": RegisterAdapterRequest.model_json_schema()},  # inline: no $defs
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["archive"],
            "properties": {"archive": {"type": "string", "format": "binary",
                                       "description": ".zip or .tar.gz of the adapter folder"},
                           "name": {"type": "string"}, "version": {"type": "integer"},
                           "description": {"type": "string"}, "base_model": {"type": "string"}}}},
    }}}


def build_adapters_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/adapters", tags=["adapters"])
    service = ctx.adapters

    @router.get("", response_model=list[AdapterInfo] | list[AdapterGroup])
    def list_adapters(active: bool | None = Query(None, description="only active (true) or inactive (false)"),
                      base_model: str | None = Query(None, description="a registry model id"),
                      compatible: bool | None = Query(None, description="usable with the loaded model"),
                      group_by_name: bool = Query(False, description="versions grouped by name, oldest first")):
        """Adapters (deleted ones are hidden), each with its base model's capabilities and compatibility."""
        filters = dict(active=active, base_model=base_model, compatible=compatible)
        return service.grouped(**filters) if group_by_name else service.list(**filters)

    @router.post("", response_model=AdapterInfo, status_code=201, openapi_extra=REGISTER_BODY,
                 responses=error_responses({
                     400: "not a usable LoRA adapter or source: not_peft_adapter, not_lora, pickled_weights, "
                          "invalid_weights, shape_mismatch, unmapped_keys, invalid_archive, path_not_allowed, "
                          "missing_path, missing_archive, invalid_name, unknown_base_model, ...",
                     404: "folder_not_found, or an unknown hub repo",
                     409: "version_exists, base_model_conflict"}))
    async def register_adapter(request: Request) -> AdapterInfo:
        """Register an adapter from a server folder (inside an import root) or a hub repo (JSON), or from an
        uploaded archive (multipart, field `archive`). Files and record are written together or not at all."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return await _register_upload(request)
        try:
            req = RegisterAdapterRequest.model_validate(await request.json())
        except ValueError as exc:  # JSON decode errors and validation errors alike
            raise _invalid(exc) from None
        if req.source == "upload":
            raise InvalidRequest("Send an upload as multipart/form-data with the archive in the field 'archive'.",
                                 code="missing_archive")
        return await run_in_threadpool(service.register, req)

    async def _register_upload(request: Request) -> AdapterInfo:
        form = await request.form()
        archive = form.get("archive")
        if archive is None or not hasattr(archive, "filename"):
            raise InvalidRequest("The form has no file in the field 'archive'.", code="missing_archive")
        fields = {k: v for k, v in form.items() if k != "archive" and isinstance(v, str) and v != ""}
        try:
            req = RegisterAdapterRequest.model_validate({**fields, "source": "upload"})
        except ValidationError as exc:
            raise _invalid(exc) from None
        with tempfile.TemporaryDirectory(prefix="upload-") as tmp:
            path = Path(tmp) / "archive"
            with path.open("wb") as out:
                await run_in_threadpool(shutil.copyfileobj, archive.file, out)
            return await run_in_threadpool(service.register, req, upload=path, upload_name=archive.filename)

    @router.get("/timeline", response_model=list[TimelineEntry], responses=error_responses({
        404: "adapter_not_found: no adapter has this name"}))
    def timeline(name: str = Query(..., description="the adapter name")) -> list[TimelineEntry]:
        """Every version of an adapter, oldest first: training date, loss, status, training run."""
        return service.timeline(name)

    @router.get("/{adapter_id}", response_model=AdapterInfo, responses=NOT_FOUND)
    def get_adapter(adapter_id: RecordId) -> AdapterInfo:
        return service.get(adapter_id)

    @router.patch("/{adapter_id}", response_model=AdapterInfo, responses=NOT_FOUND)
    def update_adapter(adapter_id: RecordId, change: AdapterUpdate) -> AdapterInfo:
        """Rename (1-100 characters), describe, activate (pre-loads it when it fits) or deactivate."""
        return service.update(adapter_id, change)

    @router.delete("/{adapter_id}", response_model=AdapterInfo, responses=NOT_FOUND)
    def delete_adapter(adapter_id: RecordId) -> AdapterInfo:
        """Soft delete: hidden and refused for new generations; jobs that used it keep their reference."""
        return service.delete(adapter_id)

    return router


def _invalid(exc: Exception) -> RequestValidationError:
    """A malformed body: 422 invalid_body / invalid_json, like every other route (api/errors.py maps it)."""
    if isinstance(exc, ValidationError):
        return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])
    return RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error"}])
