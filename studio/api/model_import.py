"""/api/models/import: audiocraft checkpoints converted into models of the studio (studio/services/model_import.py).
Registered before /api/models/{model_id}, so that GET /api/models/import is this route's."""
from __future__ import annotations

import json
import shutil
from typing import Iterator

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from studio.api.auth import current_user
from studio.api.errors import error_responses
from studio.api.uploads import invalid_body, receive_upload, upload_too_large
from studio.context import AppContext
from studio.errors import InvalidRequest
from studio.services.model_import import MAX_UPLOAD_BYTES, ImportEvent, ImportRequest, ImportStatus

FORM_FIELDS = ("id", "display_name", "description")

IMPORT_BODY = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": ImportRequest.model_json_schema()},  # inline: no $defs
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["archive"],
            "properties": {"archive": {"type": "string", "format": "binary", "description": (
                "a .zip or .tar.gz of the checkpoint folder (state_dict.bin or checkpoint.th, and "
                "compression_state_dict.bin), or the checkpoint file itself")},
                "id": {"type": "string"}, "display_name": {"type": "string"}, "description": {"type": "string"}}}},
    }}}
# each event as OpenAPI 3.1 describes a text/event-stream item: its `data` is an ImportEvent as JSON
EVENTS = {200: {"content": {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"], "properties": {
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"$ref": "#/components/schemas/ImportEvent"}},
        "event": {"type": "string"}}}}},
    "description": "one JSON ImportEvent per `data:` line; the last is `ready` (with `report`) or `error` (with "
                   "`code`: unsafe_checkpoint, unreadable_checkpoint, not_an_lm_checkpoint, "
                   "invalid_audiocraft_config, unsupported_option (with `option` and `value`), unmerged_lora, "
                   "invalid_checkpoint_tensors, peft_adapter, missing_checkpoint, model_exists, repo_not_found, "
                   "hub_unreachable, disk_full, import_failed)"}}


def _sse(events: Iterator[ImportEvent]) -> Iterator[str]:
    for event in events:
        yield f"data: {json.dumps(event.to_dict())}\n\n"


def build_model_import_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/models", tags=["models"])
    service = ctx.model_import

    def stream(events: Iterator[ImportEvent]) -> StreamingResponse:
        return StreamingResponse(_sse(events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.post("/import", response_class=StreamingResponse, openapi_extra=IMPORT_BODY, responses={
        **EVENTS, **error_responses({
            400: "missing_path, path_not_allowed, folder_not_found, missing_checkpoint, peft_adapter, "
                 "transformers_model, invalid_repo_id, invalid_revision, invalid_model_id, missing_archive, "
                 "invalid_form",
            409: "model_exists, import_running (one import at a time), custom_models_locked",
            413: "upload_too_large: over 20 GB"})})
    async def import_checkpoint(request: Request) -> StreamingResponse:
        """Import an audiocraft MusicGen checkpoint (exported state_dict.bin or a solver checkpoint): from a
        server folder or file inside an import root or a hub repo (JSON), or an uploaded archive or checkpoint
        file (multipart, field `archive`, at most 20 GB; form fields id, display_name, description). It is read
        without running any code from it (weights_only, with only audiocraft's configuration types allowed),
        checked against what transformers' MusicGen can represent, converted to safetensors with the text
        encoder and codec its configuration names (downloaded with progress when missing), and added to the
        models with its provenance. Streams Server-Sent Events; the import goes on if the stream is closed
        (GET /api/models/import says how it ended)."""
        user = current_user(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 2**20:
                raise upload_too_large(MAX_UPLOAD_BYTES)
            folder = service.upload_folder()
            try:
                fields, path, filename = await receive_upload(request, folder / "upload", FORM_FIELDS,
                                                             MAX_UPLOAD_BYTES,
                                                             lambda: upload_too_large(MAX_UPLOAD_BYTES))
                req = ImportRequest.model_validate({**fields, "source": "upload"})
            except ValidationError as exc:
                shutil.rmtree(folder, ignore_errors=True)
                raise invalid_body(exc) from None
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return stream(await run_in_threadpool(service.start, req, user, folder, filename))
        try:
            req = ImportRequest.model_validate(await request.json())
        except ValueError as exc:  # JSON decode errors and validation errors alike
            raise invalid_body(exc) from None
        if req.source == "upload":
            raise InvalidRequest("Send an upload as multipart/form-data with the archive in the field 'archive'.",
                                 code="missing_archive")
        return stream(await run_in_threadpool(service.start, req, user))

    @router.get("/import", response_model=list[ImportStatus])
    def import_statuses() -> list[ImportStatus]:
        """The imports of this run of the studio, newest first, each with its last event (the report once
        ready): for a client whose stream was closed."""
        return service.statuses()

    return router
