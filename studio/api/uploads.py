"""Multipart uploads read once, straight to the studio's own disk: the file part streamed into a path inside the
data directory (bounded as it arrives), the known text fields into a dict (each bounded). Starlette's own form
parsing would spool the file into the shared temp dir first and copy it again. Used by the adapter and dataset
registrations."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from python_multipart.multipart import MultipartParser, parse_options_header

from studio.errors import InvalidRequest, TooLarge

MAX_FORM_FIELD_BYTES = 8 * 1024
MAX_FORM_PARTS = 16


async def receive_upload(request: Request, path: Path, form_fields: Iterable[str], max_bytes: int,
                         too_large: Callable[[], Exception], file_field: str = "archive"
                         ) -> tuple[dict[str, str], Path, str]:
    """Stream a multipart body once: the part `file_field` straight into `path` (bounded by max_bytes), the
    known text fields into a dict (each bounded). Starlette's own form parsing would spool the file into the
    shared temp dir first and copy it again."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest("Send the archive as multipart/form-data.", code="missing_archive")
    fields: dict[str, str] = {}
    state = {"headers": {}, "field": b"", "value": b"", "name": None, "filename": None, "buffer": bytearray(),
             "parts": 0, "size": 0, "file": None}
    problems: list[Exception] = []

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        state["parts"] += 1
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        state["name"], state["buffer"] = name, bytearray()
        if state["parts"] > MAX_FORM_PARTS:
            raise InvalidRequest("The form has too many parts.", code="invalid_form")
        if name == file_field:
            if state["file"] is not None:
                raise InvalidRequest(f"The form has several files in the field {file_field!r}.", code="invalid_form")
            state["filename"] = Path(disposition.get(b"filename", file_field.encode()).decode("utf-8", "replace")).name
            state["file"] = path.open("wb")

    def on_part_data(data, start, end):
        if state["name"] == file_field:
            state["size"] += end - start
            if state["size"] > max_bytes:
                raise too_large()
            state["file"].write(data[start:end])
        elif state["name"] in form_fields:
            state["buffer"] += data[start:end]
            if len(state["buffer"]) > MAX_FORM_FIELD_BYTES:
                raise InvalidRequest(f"The form field {state['name']!r} is too long.", code="invalid_form")

    def on_part_end():
        if state["name"] in form_fields:
            value = bytes(state["buffer"]).decode("utf-8", "replace")
            if value != "":
                fields[state["name"]] = value
        state["headers"], state["name"] = {}, None

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except Exception as exc:  # noqa: BLE001 - a broken multipart stream is the request's fault
        problems.append(exc)
    finally:
        if state["file"] is not None:
            state["file"].close()
    if problems:
        if isinstance(problems[0], (InvalidRequest, TooLarge, OSError)):  # OSError: the spool's disk, mapped by
            raise problems[0]                                              # service.incoming() to 507 / 503
        raise InvalidRequest(f"The form could not be read: {problems[0]}", code="invalid_form")
    if state["file"] is None:
        raise InvalidRequest(f"The form has no file in the field {file_field!r}.", code="missing_archive")
    return fields, path, state["filename"] or file_field


def upload_too_large(max_bytes: int) -> TooLarge:
    return TooLarge(f"The upload is over {max_bytes / 2**30:.0f} GB, the most the studio takes.",
                    code="upload_too_large", max_bytes=max_bytes)


def invalid_body(exc: Exception) -> RequestValidationError:
    """A malformed body: 422 invalid_body / invalid_json, like every other route (api/errors.py maps it)."""
    if isinstance(exc, ValidationError):
        return RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)])
    return RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error"}])
