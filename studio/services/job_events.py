"""What happens to each job, as events that any number of followers read (the page, SSE clients, waiting calls).

A follower that arrives late still gets the audio streamed so far and the latest state; once a job is over its
channel keeps only the final event, and followers of older jobs are answered from the database.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterator, Literal

import numpy as np
from pydantic import BaseModel, Field

from studio.db.models import JobStatus

EventName = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
TERMINAL: tuple[str, ...] = ("succeeded", "failed", "cancelled", "interrupted")
KEEP_DONE = 256  # finished jobs whose final event stays in memory (older ones are read from the database)


def music_progress(done: int, total: int, duration_s: float, percent: bool = True) -> str:
    """A generation's progress as a musician reads it: seconds of music made and percent, not decoding steps
    (percent=False where a progress bar shows its own)."""
    fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
    text = f"{fraction * duration_s:.1f} of {duration_s:g} s"
    return f"{text} ({fraction * 100:.0f} %)" if percent else text


class JobEvent(BaseModel):
    """A job's state: one per change of state, and regular updates of position, progress and ETA."""
    job_id: int
    event: EventName = Field(description="queued, running, then one of succeeded, failed, cancelled, interrupted")
    status: JobStatus
    message: str = Field(description="for a person: place in the queue, progress in seconds of music, or why it ended")
    position: int | None = Field(None, description="queued: 1 = next to start")
    eta_s: float | None = Field(None, description="seconds until the audio should be ready (None: not known yet)")
    step: int | None = Field(None, description="running: decoding steps done")
    total: int | None = Field(None, description="running: decoding steps in all")
    fraction: float | None = Field(None, description="running: 0 to 1")
    code: str | None = Field(None, description="failed: a stable snake_case code")
    audio_url: str | None = Field(None, description="succeeded: where the audio file is")
    detail: dict | None = Field(None, description="failed: the error's extra fields (e.g. `folder` for disk_full)")

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL


@dataclass(frozen=True)
class AudioChunk:
    """Audio streamed while a job decodes: float32 (samples, channels) starting at start_sample."""
    job_id: int
    seq: int
    start_sample: int
    sample_rate: int
    audio: np.ndarray = field(repr=False)

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate


Item = JobEvent | AudioChunk


@dataclass
class _Channel:
    items: list[Item] = field(default_factory=list)
    base: int = 0  # how many items were dropped from the front (followers' positions stay valid)
    done: bool = False
    chunks: int = 0


class JobEvents:
    def __init__(self) -> None:
        self._cond = threading.Condition()  # guards _channels and every channel
        self._channels: OrderedDict[int, _Channel] = OrderedDict()

    def open(self, job_id: int) -> None:
        with self._cond:
            self._channels.setdefault(job_id, _Channel())

    def known(self, job_id: int) -> bool:
        with self._cond:
            return job_id in self._channels

    def publish(self, event: JobEvent) -> None:
        with self._cond:
            ch = self._channels.setdefault(event.job_id, _Channel())
            if ch.done:
                return  # a job ends once
            if event.terminal:
                # the streamed audio is in the file now: keep only the final event
                ch.base += len(ch.items)
                ch.items = [event]
                ch.done = True
                self._channels.move_to_end(event.job_id)
                done = [k for k, c in self._channels.items() if c.done]
                for old in done[:-KEEP_DONE]:
                    del self._channels[old]
            else:
                ch.items.append(event)
            self._cond.notify_all()

    def publish_audio(self, job_id: int, start_sample: int, sample_rate: int, audio: np.ndarray) -> None:
        with self._cond:
            ch = self._channels.setdefault(job_id, _Channel())
            if ch.done:
                return
            ch.items.append(AudioChunk(job_id, ch.chunks, start_sample, sample_rate, audio))
            ch.chunks += 1
            self._cond.notify_all()

    def latest(self, job_id: int) -> JobEvent | None:
        with self._cond:
            ch = self._channels.get(job_id)
            if ch is None:
                return None
            return next((i for i in reversed(ch.items) if isinstance(i, JobEvent)), None)

    def follow(self, job_id: int, keepalive_s: float | None = None) -> Iterator[Item | None]:
        """Every item of the job from the start of what is kept, then new ones as they come, up to the final
        event. None every keepalive_s without news (for keep-alive pings); a job never opened ends at once."""
        index = 0
        while True:
            with self._cond:
                ch = self._channels.get(job_id)
                if ch is None:
                    return
                deadline = None if keepalive_s is None else time.monotonic() + keepalive_s
                while index - ch.base >= len(ch.items):
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self._cond.wait(left)
                    if self._channels.get(job_id) is not ch:
                        return
                index = max(index, ch.base)
                items = ch.items[index - ch.base:]
                index += len(items)
            if not items:
                yield None
                continue
            for item in items:
                yield item
                if isinstance(item, JobEvent) and item.terminal:
                    return
