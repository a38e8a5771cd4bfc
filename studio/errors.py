"""Domain errors: raised once in services/runtime, mapped once to HTTP (api/) or gr.Error (ui/)."""
from __future__ import annotations

from typing import Any


class StudioError(Exception):
    """Base error: a stable snake_case `code`, a message for a person, and extra JSON-able fields."""

    status = 400
    code = "studio_error"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}


class InvalidRequest(StudioError):
    status = 400
    code = "invalid_request"


class InvalidValues(StudioError):
    """Well-formed JSON whose values break a schema (per-field messages in `errors`)."""

    status = 422
    code = "invalid_values"


class Forbidden(StudioError):
    """The signed-in person's role does not allow this (a member asking for an admin's action)."""

    status = 403
    code = "forbidden"


class NotFound(StudioError):
    status = 404
    code = "not_found"


class Conflict(StudioError):
    status = 409
    code = "conflict"


class NoModelLoaded(Conflict):
    code = "no_model_loaded"


class Incompatible(Conflict):
    code = "incompatible"


class InsufficientMemory(Conflict):
    code = "insufficient_memory"


class Busy(StudioError):
    """Another exclusive operation (switch or generation) is running."""

    status = 423
    code = "busy"


class QueueFull(StudioError):
    """The job queue holds --max-queue jobs: try again after `retry_after_s` (sent as Retry-After)."""

    status = 429
    code = "queue_full"


class TooLarge(InvalidRequest):
    """An upload, archive or metadata file over the studio's size limits."""

    status = 413
    code = "too_large"


class UpstreamError(StudioError):
    """A service the studio depends on (the Hugging Face Hub) answered with an error."""

    status = 502
    code = "upstream_error"


class Unavailable(StudioError):
    """A service the studio depends on (the Hugging Face Hub) cannot be reached now; try again later."""

    status = 503
    code = "unavailable"


class Cancelled(StudioError):
    status = 409
    code = "cancelled"


class OperationFailed(StudioError):
    """A download, load or generation failed for a reason outside the request (network, disk, model)."""

    status = 500
    code = "operation_failed"


class RegistryError(StudioError):
    """registry.yaml is invalid; raised at start-up."""

    code = "invalid_registry"


class CannotStart(StudioError):
    """The studio refuses to start: one line saying what is wrong and how to fix it (app.py prints it)."""

    status = 500
    code = "cannot_start"


class StorageUnavailable(StudioError):
    """The studio's data could not be written (read-only disk or file): the request was fine, the machine was not."""

    status = 503
    code = "storage_unavailable"


class DiskFull(StorageUnavailable):
    """The disk (or the file-size limit) holding the studio's data is full."""

    status = 507
    code = "disk_full"
