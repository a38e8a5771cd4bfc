"""Framework-neutral progress: the runtime emits ProgressEvents; the UI and the API adapt them."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal

Stage = Literal["queued", "checking", "downloading", "unloading", "loading", "restoring", "ready", "error"]
TERMINAL_STAGES = ("ready", "error")


@dataclass(frozen=True)
class ProgressEvent:
    stage: Stage
    message: str
    model_id: str | None = None
    fraction: float | None = None  # 0..1 where known
    bytes_done: int | None = None
    bytes_total: int | None = None
    code: str | None = None  # error code on 'error' events

    @property
    def terminal(self) -> bool:
        return self.stage in TERMINAL_STAGES

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


ProgressCallback = Callable[[ProgressEvent], None]
