"""The /api/adapters routes: register, list (filters, groups, deleted ones), show, edit, delete, restore,
version timeline, and each version's change log (who did what)."""
from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from studio.api.auth import current_user
from studio.api.errors import error_responses
from studio.api.params import RecordId
from studio.api.uploads import invalid_body, receive_upload, upload_too_large
from studio.context import AppContext
from studio.errors import InvalidRequest
from studio.services.adapters import (MAX_UPLOAD_BYTES, AdapterChangeInfo, AdapterGroup, AdapterInfo, AdapterSummary,
                                      AdapterUpdate, RegisterAdapterRequest, TimelineEntry)

FORM_FIELDS = ("name", "version", "description", "base_model", "allow_duplicate")
ERRORS = error_responses({
    400: "not a usable LoRA adapter or source: not_peft_adapter, not_lora, pickled_weights, invalid_weights, "
         "shape_mismatch, unmapped_keys, invalid_archive, path_not_allowed, missing_path, missing_archive, "
         "invalid_name, unknown_base_model, ...",
    404: "adapter_not_found, folder_not_found, or an unknown hub repo / revision",
    409: "version_exists, name_taken, identical_adapter (names the existing version), adapter_not_deleted, "
         "base_model_conflict, gated_repo",
    413: "upload_too_large, archive_too_large, weights_too_large, metadata_too_large",
    502: "hub_error: the Hugging Face Hub answered with an error",
    503: "hub_unreachable: the Hugging Face Hub cannot be reached; try again later",
})

REGISTER_BODY = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": RegisterAdapterRequest.model_json_schema()},  # inline: no $defs
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["archive"],
            "properties": {"archive": {"type": "string", "format": "binary",
                                       "description": ".zip or .tar.gz of the adapter folder"},
                           "name": {"type": "string"}, "version": {"type": "integer"},
                           "description": {"type": "string"}, "base_model": {"type": "string"},
                           "allow_duplicate": {"type": "boolean", "description": "register even if identical "
                                                                                  "to a registered version"}}}},
    }}}


def build_adapters_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/adapters", tags=["adapters"])
    service = ctx.adapters

    @router.get("", response_model=list[AdapterSummary] | list[AdapterGroup])
    def list_adapters(active: bool | None = Query(None, description="only active (true) or inactive (false)"),
                      base_model: str | None = Query(None, description="a registry model id"),
                      compatible: bool | None = Query(None, description="usable with the loaded model"),
                      group_by_name: bool = Query(False, description="versions grouped by name, oldest first"),
                      deleted: bool = Query(False, description="the deleted adapters only (restorable)")):
        """Adapters (deleted ones hidden unless `deleted=true`), each with its base model's capabilities and
        compatibility. Listings leave out the large fields (LoRA configuration, training configuration and
        metrics): GET /api/adapters/{id} has them."""
        filters = dict(active=active, base_model=base_model, compatible=compatible, deleted=deleted)
        return service.grouped(**filters) if group_by_name else service.list(**filters)

    @router.post("", response_model=AdapterInfo, status_code=201, openapi_extra=REGISTER_BODY, responses=ERRORS)
    async def register_adapter(request: Request) -> AdapterInfo:
        """Register an adapter from a server folder (inside an import root) or a hub repo (JSON), or from an
        uploaded archive (multipart, field `archive`, at most MAX_UPLOAD_BYTES; form fields name, version,
        description, base_model, allow_duplicate). An adapter identical to a registered one (same weights and
        configuration) is refused with 409 identical_adapter unless `allow_duplicate` is true. Files and record
        are written together or not at all."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return await _register_upload(request)
        user = current_user(request)
        try:
            req = RegisterAdapterRequest.model_validate(await request.json())
        except ValueError as exc:  # JSON decode errors and validation errors alike
            raise invalid_body(exc) from None
        if req.source == "upload":
            raise InvalidRequest("Send an upload as multipart/form-data with the archive in the field 'archive'.",
                                 code="missing_archive")
        return await run_in_threadpool(service.register, req, user=user)

    async def _register_upload(request: Request) -> AdapterInfo:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 2**20:
            raise upload_too_large(MAX_UPLOAD_BYTES)
        with service.incoming() as tmp:  # inside the data dir: one copy, on the disk the adapter ends up on
            fields, path, filename = await receive_upload(request, tmp / "upload", FORM_FIELDS, MAX_UPLOAD_BYTES,
                                                         lambda: upload_too_large(MAX_UPLOAD_BYTES))
            try:
                req = RegisterAdapterRequest.model_validate({**_form_values(fields), "source": "upload"})
            except ValidationError as exc:
                raise invalid_body(exc) from None
            return await run_in_threadpool(service.register, req, upload=path, upload_name=filename,
                                           user=current_user(request))

    @router.get("/timeline", response_model=list[TimelineEntry], responses=error_responses({
        404: "adapter_not_found: no adapter has this name"}))
    def timeline(name: str = Query(..., description="the adapter name")) -> list[TimelineEntry]:
        """Every version of an adapter, oldest first: training date, loss, status, training run."""
        return service.timeline(name)

    @router.get("/{adapter_id}", response_model=AdapterInfo, responses={404: ERRORS[404]})
    def get_adapter(adapter_id: RecordId) -> AdapterInfo:
        """One adapter in full: with its LoRA configuration and training configuration and metrics."""
        return service.get(adapter_id)

    @router.patch("/{adapter_id}", response_model=AdapterInfo, responses={404: ERRORS[404], 409: ERRORS[409]})
    def update_adapter(adapter_id: RecordId, change: AdapterUpdate, request: Request) -> AdapterInfo:
        """Describe, activate or deactivate this version. `name` renames the whole name: every version of it
        (deleted ones too) moves to the new name and keeps its number, since a version number only means
        something within its name; 409 name_taken when the new name already has versions."""
        return service.update(adapter_id, change, current_user(request))

    @router.delete("/{adapter_id}", response_model=AdapterInfo, responses={404: ERRORS[404]})
    def delete_adapter(adapter_id: RecordId, request: Request) -> AdapterInfo:
        """Soft delete: hidden and refused for new generations; jobs that used it keep their reference.
        POST /api/adapters/{id}/restore undoes it."""
        return service.delete(adapter_id, current_user(request))

    @router.post("/{adapter_id}/restore", response_model=AdapterInfo,
                 responses={404: ERRORS[404], 409: ERRORS[409]})
    def restore_adapter(adapter_id: RecordId, request: Request) -> AdapterInfo:
        """Undo a delete: the adapter comes back, active, under its name and version (listed meanwhile by
        GET /api/adapters?deleted=true)."""
        return service.restore(adapter_id, current_user(request))

    @router.get("/{adapter_id}/changes", response_model=list[AdapterChangeInfo],
                responses=error_responses({404: "adapter_not_found: no such adapter version"}))
    def adapter_changes(adapter_id: RecordId) -> list[AdapterChangeInfo]:
        """Who changed this version and how, newest first: registered (from a folder, an upload, the hub or a
        training run), renamed, described, activated, deactivated, deleted, restored, each with what changed
        (old -> new). A deleted version's log stays readable."""
        return service.changes(adapter_id)

    return router



def _form_values(fields: dict[str, str]) -> dict[str, object]:
    """A form's fields are text: convert the typed ones explicitly (the request model is strict, as for JSON), and
    refuse what is not a whole number or true/false with a 422 naming the field."""
    values: dict[str, object] = dict(fields)
    problems = []
    if "version" in fields:
        text = fields["version"].strip()
        if text.isascii() and text.isdigit():
            values["version"] = int(text)  # the model's own bounds (1 to 2^63-1) still apply
        else:
            problems.append({"type": "int_parsing", "loc": ("body", "version"),
                             "msg": f"a whole number of at least 1 (the form sent {fields['version'][:40]!r})"})
    if "allow_duplicate" in fields:
        text = fields["allow_duplicate"].strip().lower()
        if text in ("true", "false"):
            values["allow_duplicate"] = text == "true"
        else:
            problems.append({"type": "bool_parsing", "loc": ("body", "allow_duplicate"),
                             "msg": f"true or false (the form sent {fields['allow_duplicate'][:40]!r})"})
    if problems:
        raise RequestValidationError(problems)
    return values
