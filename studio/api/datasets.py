"""/api/datasets: create (a folder inside an import root as JSON, or an uploaded archive as multipart), list, show
with its report, its clips and their audio, edit captions and exclusions, delete."""
from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import ValidationError

from studio.api.auth import current_user
from studio.api.errors import error_responses
from studio.api.params import RecordId
from studio.api.uploads import invalid_body, receive_upload, upload_too_large
from studio.context import AppContext
from studio.errors import InvalidRequest
from studio.services.datasets import (MAX_UPLOAD_BYTES, ClipInfo, ClipsEdit, CreateDatasetRequest, DatasetInfo,
                                      DatasetSummary)

FORM_FIELDS = ("name", "model_id", "max_clip_s", "overlap_s", "min_clip_s")
NUMBER_FIELDS = ("max_clip_s", "overlap_s", "min_clip_s")
NOT_FOUND = "dataset_not_found: unknown or deleted dataset"
CREATE_ERRORS = error_responses({
    400: "path_not_allowed (outside the import roots, or a symlink out of them), folder_not_found, "
         "missing_archive, invalid_archive, invalid_form, too_many_files, too_many_clips",
    404: "model_not_found: model_id is not in the registry",
    413: "upload_too_large, archive_too_large, file_too_large",
    422: "no_usable_clips (nothing created; `report` lists every problem: unreadable, missing_caption, "
         "empty_caption, too_short, unsupported_format, caption_without_audio), clip_too_long, overlap_too_long, "
         "min_clip_too_long, invalid_name, missing_path; invalid_body (`errors` names each field)",
})
CREATE_BODY = {
    "requestBody": {"required": True, "content": {
        "application/json": {"schema": CreateDatasetRequest.model_json_schema()},  # inline: no $defs
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["archive"],
            "properties": {"archive": {"type": "string", "format": "binary",
                                       "description": ".zip or .tar.gz of the dataset folder (audio + captions)"},
                           "name": {"type": "string"}, "model_id": {"type": "string"},
                           "max_clip_s": {"type": "number"}, "overlap_s": {"type": "number"},
                           "min_clip_s": {"type": "number"}}}},
    }}}


def build_datasets_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/datasets", tags=["datasets"])
    service = ctx.datasets

    @router.post("", status_code=201, response_model=DatasetInfo, openapi_extra=CREATE_BODY,
                 responses=CREATE_ERRORS)
    async def create_dataset(request: Request) -> DatasetInfo:
        """Create a training dataset from a server folder inside an import root (JSON, `source: folder`) or an
        uploaded archive (multipart, field `archive`; form fields name, model_id, max_clip_s, overlap_s,
        min_clip_s). Files are read, sliced into clips no longer than the model's window (with the overlap),
        resampled to its rate and channels; captions come from metadata.jsonl / metadata.csv (file_name + text or
        caption) or a sidecar .txt per file. The answer holds the report. When no clip is usable: 422
        no_usable_clips with the report, and nothing is created."""
        user = current_user(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 2**20:
                raise upload_too_large(MAX_UPLOAD_BYTES)
            with service.incoming() as tmp:  # inside the data dir: on the disk the dataset ends up on
                fields, path, filename = await receive_upload(
                    request, tmp / "upload", FORM_FIELDS, MAX_UPLOAD_BYTES, lambda: upload_too_large(MAX_UPLOAD_BYTES))
                try:
                    req = CreateDatasetRequest.model_validate({**_form_values(fields), "source": "upload"})
                except ValidationError as exc:
                    raise invalid_body(exc) from None
                return await run_in_threadpool(lambda: service.create(req, upload=path, upload_name=filename,
                                                                      user=user))
        try:
            req = CreateDatasetRequest.model_validate(await request.json())
        except ValueError as exc:  # JSON decode errors and validation errors alike
            raise invalid_body(exc) from None
        if req.source == "upload":
            raise InvalidRequest("Send an upload as multipart/form-data with the archive in the field 'archive'.",
                                 code="missing_archive")
        return await run_in_threadpool(lambda: service.create(req, user=user))

    @router.get("", response_model=list[DatasetSummary])
    def list_datasets() -> list[DatasetSummary]:
        """Datasets (deleted ones left out), newest first, with their version and content hash."""
        return service.list()

    @router.get("/{dataset_id}", response_model=DatasetInfo, responses=error_responses({404: NOT_FOUND}))
    def get_dataset(dataset_id: RecordId) -> DatasetInfo:
        """A dataset with the report of its creation."""
        return service.get(dataset_id)

    @router.get("/{dataset_id}/clips", response_model=list[ClipInfo], responses=error_responses({404: NOT_FOUND}))
    def list_clips(dataset_id: RecordId) -> list[ClipInfo]:
        """Its clips in order (file, then time), with their captions, whether excluded, and their audio's URL."""
        return service.clips(dataset_id)

    @router.get("/{dataset_id}/clips/{clip_id}/audio", response_class=FileResponse,
                responses={200: {"content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
                                 "description": "the clip as prepared for training (WAV, 32-bit float)"},
                           **error_responses({404: f"{NOT_FOUND}; clip_not_found, audio_not_found"})})
    def clip_audio(dataset_id: RecordId, clip_id: RecordId) -> FileResponse:
        """A clip's audio, as training reads it (the model's rate and channels)."""
        return FileResponse(service.clip_audio(dataset_id, clip_id), media_type="audio/wav")

    @router.patch("/{dataset_id}/clips", response_model=DatasetInfo, responses=error_responses({
        404: NOT_FOUND,
        422: "clip_not_found: a clip id not of this dataset; empty_caption: a used clip's caption would be "
             "empty; caption_too_long, invalid_body"}))
    def edit_clips(dataset_id: RecordId, edit: ClipsEdit, request: Request) -> DatasetInfo:
        """Edit captions and exclusions as one new version: per-clip captions first, then the bulk operations
        (replace the caption, find and replace, prefix, suffix, exclude or include) on `clip_ids` (every clip when
        null). The version goes up and the content hash changes when something really changed."""
        return service.edit_clips(dataset_id, edit, current_user(request))

    @router.delete("/{dataset_id}", response_model=DatasetInfo, responses=error_responses({
        404: NOT_FOUND, 409: "dataset_in_use: a queued or running training run uses it (`run_ids`)"}))
    def delete_dataset(dataset_id: RecordId) -> DatasetInfo:
        """Delete a dataset: its clips' audio is removed; training runs that used it keep their record of its
        name, version and hash. Refused while a queued or running training run uses it."""
        return service.delete(dataset_id)

    return router



def _form_values(fields: dict[str, str]) -> dict[str, object]:
    """A form's fields are text: numbers are converted explicitly (the request model is strict, as for JSON), and
    what is not a finite number is refused with a 422 naming the field."""
    values: dict[str, object] = dict(fields)
    problems = []
    for name in NUMBER_FIELDS:
        if name not in fields:
            continue
        text = fields[name].strip()
        try:
            number = float(text) if text.isascii() else math.nan
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            values[name] = number
        else:
            problems.append({"type": "float_parsing", "loc": ("body", name),
                             "msg": f"a number of seconds (the form sent {fields[name][:40]!r})"})
    if problems:
        raise RequestValidationError(problems)
    return values
