"""/api/uploads: audio files a generation is conditioned on (a clip to continue, a melody to follow). Upload once
(multipart, field `file`), then refer to it by id in a generation request."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from studio.api.auth import current_user
from studio.api.errors import error_responses
from studio.api.uploads import receive_upload, upload_too_large
from studio.context import AppContext
from studio.services.uploads import UploadInfo

UploadId = Annotated[str, Path(pattern=r"^[0-9a-f]{1,32}$", max_length=32, description="an upload's id")]
NOT_FOUND = "upload_not_found: no such upload (or its file is gone)"
MEDIA = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"}
UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary", "description": "wav, flac, ogg or mp3"}}}}}}}


def build_uploads_router(ctx: AppContext) -> APIRouter:
    router = APIRouter(prefix="/api/uploads", tags=["uploads"])
    service = ctx.uploads

    @router.post("", status_code=201, response_model=UploadInfo, openapi_extra=UPLOAD_BODY, responses=error_responses({
        400: "unsupported_audio: not wav, flac, ogg or mp3; unreadable_audio: damaged; empty_audio; audio_too_long; "
             "missing_archive: not multipart with a `file` field",
        413: "upload_too_large"}))
    async def upload_audio(request: Request) -> UploadInfo:
        """Upload an audio clip (wav, flac, ogg or mp3) to continue or to follow as a melody. It is decoded once
        here: a file that cannot be used is refused with its reason and nothing is kept."""
        user = current_user(request)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > service.max_bytes + 2**20:
            raise upload_too_large(service.max_bytes)
        with service.incoming() as staged:
            _, path, filename = await receive_upload(request, staged, (), service.max_bytes,
                                                     lambda: upload_too_large(service.max_bytes), file_field="file")
            return await run_in_threadpool(lambda: service.save(path, filename, user))

    @router.get("/{upload_id}", response_model=UploadInfo, responses=error_responses({404: NOT_FOUND}))
    def get_upload(upload_id: UploadId) -> UploadInfo:
        """An upload's length, rate, channels and format."""
        return service.get(upload_id)

    @router.get("/{upload_id}/audio", response_class=FileResponse, responses={
        200: {"content": {m: {"schema": {"type": "string", "format": "binary"}} for m in MEDIA.values()},
              "description": "the file as uploaded"}, **error_responses({404: NOT_FOUND})})
    def upload_audio_file(upload_id: UploadId) -> FileResponse:
        """The uploaded file as it was sent."""
        info = service.get(upload_id)
        return FileResponse(service.path(upload_id), media_type=MEDIA.get(info.format, "application/octet-stream"))

    return router
