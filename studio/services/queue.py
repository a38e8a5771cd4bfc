"""The job queue: every generation and every model switch of every client goes through one worker, in order.

The service records each job (queued -> running -> succeeded / failed / cancelled), hands it to the worker, turns
what the worker says into database updates (short sessions, never one held during a decode) and into events that
the page, SSE clients and waiting calls follow, and writes each job's audio and codes. Nothing accepted is lost:
queued jobs are run again after a restart, running ones are recorded as interrupted.
"""
from __future__ import annotations

import logging
import math
import os
import queue as stdqueue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, Field

from studio.db.adapters import record_use
from studio.db.engine import session_scope
from studio.db.jobs import create_jobs, finish_job, get_job, mark_running, queued_jobs
from studio.errors import Conflict, NotFound, QueueFull, StudioError
from studio.gen_settings import MusicgenSettings
from studio.registry import Registry
from studio.runtime.backend import Row, RowResult, SamplingParams
from studio.runtime.manager import ModelManager
from studio.runtime.progress import ProgressEvent
from studio.runtime.worker import GenerateTask, LocalWorker, QueueEntry, SwitchTask, Worker, WorkerListener
from studio.services.adapters import AdapterRef
from studio.services.audio_out import download_name, finish_audio, write_measured
from studio.services.job_events import JobEvent, JobEvents, music_progress
from studio.storage import storage_writes
from studio.users import Actor

T = TypeVar("T")

log = logging.getLogger(__name__)


def audio_url(job_id: int) -> str:
    """Where a job's audio is served (the REST API's route)."""
    return f"/api/jobs/{job_id}/audio"


@dataclass(frozen=True)
class JobPlan:
    """Everything needed to run a job (and to record it): validated against the model it will run on."""
    model_id: str
    prompt: str
    duration_s: float
    frames: int
    sample_rate: int
    settings: MusicgenSettings
    seed: int
    adapter: AdapterRef | None
    submitted_by: str
    # the blind A/B test or evaluation run this clip is made for (None: a person's own generation)
    abtest_id: int | None = None
    evaluation_id: int | None = None
    # an audition of a training run's checkpoint (step 0: the run's starting point); kept out of History
    training_run_id: int | None = None
    checkpoint_step: int | None = None
    # What it continues (Job.continuation's record) and with what: a finished job's codes (codebooks, frames), or
    # an uploaded clip's audio (samples, channels) at the model's rate, encoded by the worker; None: from silence
    continuation: dict | None = None
    prompt_codes: np.ndarray | None = field(default=None, compare=False, repr=False)
    continue_audio: np.ndarray | None = field(default=None, compare=False, repr=False)
    include_continued: bool = True
    kept_samples: int = 0  # samples of continued audio at the start of the result (0 when not included)
    window: int | None = None  # the model's decoding window and stride, in frames
    stride: int | None = None
    # melody models: the melody's chroma (frames, 12) the job follows, and what the job records of it (Job.melody)
    melody: np.ndarray | None = field(default=None, compare=False, repr=False)
    melody_record: dict | None = None
    # the adapters and their strengths, in order (empty: `adapter` alone at strength 1, or the base model)
    stack: tuple[tuple[AdapterRef, float], ...] = ()

    @property
    def output_samples(self) -> int:
        """Samples of the written file: the continued audio when included, then the new music."""
        return self.kept_samples + round(self.duration_s * self.sample_rate)

    @property
    def plain(self) -> bool:
        """No adapter, or one at strength 1: recorded and run as before stacks existed."""
        return len(self.stack) <= 1 and all(s == 1.0 for _, s in self.stack)

    def stack_record(self) -> list[dict] | None:
        """Job.adapter_stack: None when plain (adapter_id says it all)."""
        if self.plain:
            return None
        return [{"adapter_id": ref.id, "label": ref.label, "strength": strength} for ref, strength in self.stack]

    def adapters_label(self) -> str:
        """The adapters as a person names them: 'name v1 at 0.5 + other v2 at 1'."""
        if self.plain:
            return self.adapter.label if self.adapter else "none"
        return " + ".join(f"{ref.label} at {strength:g}" for ref, strength in self.stack)

    def task(self, job_id: int) -> GenerateTask:
        s = self.settings
        params = SamplingParams(do_sample=s.do_sample, top_k=s.top_k, top_p=s.top_p, temperature=s.temperature,
                                guidance_scale=s.guidance_scale)
        inputs = dict(prompt_codes=self.prompt_codes, keep_prompt=self.include_continued, melody=self.melody)
        extra = dict(continue_audio=self.continue_audio, window=self.window, stride=self.stride)
        if not self.plain:
            row = Row(self.prompt, self.frames, self.seed, params,
                      adapters=tuple((ref.key, strength) for ref, strength in self.stack), **inputs)
            return GenerateTask(job_id, self.model_id, row, stack_folders=tuple(ref.folder for ref, _ in self.stack),
                                **extra)
        row = Row(self.prompt, self.frames, self.seed, params, self.adapter.key if self.adapter else None, **inputs)
        return GenerateTask(job_id, self.model_id, row, self.adapter.folder if self.adapter else None, **extra)


class QueueItem(BaseModel):
    kind: Literal["generate", "switch"]
    state: Literal["running", "queued"]
    position: int = Field(description="0: running; 1, 2, ...: waiting, in the order they will start")
    model_id: str
    job_id: int | None = None
    prompt: str | None = None
    submitted_by: str | None = None
    eta_s: float | None = Field(None, description="seconds until it should be done (None: not known yet)")
    fraction: float | None = Field(None, description="running jobs: 0 to 1")
    batch_size: int | None = None
    replica: str | None = Field(None, description="running jobs on GPU workers (--workers ray): the Ray Serve "
                                                   "replica decoding it")


class QueueView(BaseModel):
    items: list[QueueItem] = Field(description=(
        "running first, then waiting in order: model switches and the jobs the asker may see (a member: their "
        "own), each at its place in the whole queue"))
    waiting: int = Field(description="generation jobs waiting (everyone's)")
    max_queue: int
    next: str = Field(description="what the studio will do next, for a person")
    training: str | None = Field(None, description=(
        "the training run that trains beside generation, and how it shares the device (None: none trains)"))


def _position_text(position: int, eta_s: float | None) -> str:
    place = "next to start" if position == 1 else f"number {position} in the queue"
    return f"Waiting: {place}" + (f", ready in about {eta_s:.0f} s" if eta_s is not None else "")


class JobQueue:
    def __init__(self, engine, manager: ModelManager, registry: Registry, events: JobEvents, data_dir: Path, *,
                 max_queue: int = 64, stream_every_s: float | None = 1.0,
                 remote: Callable[[WorkerListener, LocalWorker], Worker] | None = None,
                 runner: str | None = None, on_space: bool = False):
        self.engine, self.manager, self.registry, self.events = engine, manager, registry, events
        # this studio's id (datadir.studio_id): recorded on every job it accepts; after a restart it runs its own
        # queued jobs only (studios sharing a PostgreSQL database each run theirs). None: the studio is alone.
        self.runner = runner
        self.data_dir = Path(data_dir)
        self.outputs_dir = self.data_dir / "outputs"
        self.max_queue = max_queue
        # remote: generation on other processes (Ray Serve replicas), around the in-process worker that keeps the
        # model switches and scoring
        local = LocalWorker(manager, self, max_batch=lambda m: registry.get(m).max_batch,
                            stream_every_s=stream_every_s, on_space=on_space)
        self.worker: Worker = remote(self, local) if remote is not None else local
        self._lock = threading.Lock()  # guards _plans, _positions, _switches; serialises accepting
        # A plan is checked against the model its jobs will run on, then queued: a switch queued between the two
        # would run them on another model. Accepting and queueing a switch hold this lock (not _lock: the worker's
        # submit calls back into queue_changed, which takes _lock).
        self._order = threading.Lock()
        self._plans: dict[int, JobPlan] = {}  # jobs accepted and not over
        self._positions: dict[int, tuple[int, int | None]] = {}  # what each waiting job was last told
        self._switches: dict[str, stdqueue.SimpleQueue] = {}  # switch task id -> its followers' events
        self._switch_errors: dict[str, str] = {}  # model id -> why its last switch failed
        self._header: tuple[int | None, int] = (None, 0)  # (the running batch's longest job, its size)
        # what trains beside the queue (the training service sets it): a line for the queue view
        self.training_line: Callable[[], str | None] = lambda: None

    # ---- accepting -----------------------------------------------------------------------------------------
    def target_model(self) -> str | None:
        return self.worker.target_model()

    def accept(self, plans: list[JobPlan]) -> list[int]:
        """Record the plans as queued jobs (all or none) and queue them; their ids. QueueFull when the queue holds
        max_queue jobs already; Conflict model_changed when a switch was queued since they were planned."""
        with self._order:
            target = self.worker.target_model()
            stale = sorted({p.model_id for p in plans} - {target})
            if stale:  # a switch was queued after these were planned: they would fail on the other model
                raise Conflict(f"The studio now runs {self._name(target)}: these jobs were for "
                               f"{', '.join(self._name(m) for m in stale)}. Submit them again.", code="model_changed",
                               model_id=target)
            return self._accept(plans)

    def _accept(self, plans: list[JobPlan]) -> list[int]:
        with self._lock:
            waiting = self.worker.pending_jobs()
            if waiting + len(plans) > self.max_queue:
                retry = self.retry_after_s()
                raise QueueFull(f"The queue is full ({waiting} jobs wait, at most {self.max_queue}): try again in "
                                f"{retry} s.", retry_after_s=retry, max_queue=self.max_queue)
            rows = [dict(prompt=p.prompt, model_id=p.model_id, settings=p.settings.model_dump(), seed=p.seed,
                         duration_s=p.duration_s, sample_rate=p.sample_rate, submitted_by=p.submitted_by,
                         adapter_id=p.adapter.id if p.adapter else None, adapter_stack=p.stack_record(),
                         abtest_id=p.abtest_id,
                         evaluation_id=p.evaluation_id, training_run_id=p.training_run_id,
                         checkpoint_step=p.checkpoint_step, continuation=p.continuation, melody=p.melody_record,
                         runner=self.runner)
                    for p in plans]
            with session_scope(self.engine) as session:
                ids = [job.id for job in create_jobs(session, rows)]
            for job_id, plan in zip(ids, plans):
                self._plans[job_id] = plan
                self.events.open(job_id)
        self.worker.submit(*(plan.task(job_id) for job_id, plan in zip(ids, plans)))
        return ids

    def retire_model(self, model_id: str, retire: Callable[[], T]) -> T:
        """Run `retire` (taking a model out of the registry) unless the model is loaded, a switch to it is queued or
        jobs wait for it (Conflict model_loaded / model_in_use). Holds the accepting lock: no job or switch for
        the model slips in between the check and `retire`."""
        with self._order:
            loaded, target = self.manager.status().model_id, self.worker.target_model()
            if model_id in (loaded, target):
                name = self._name(model_id)
                raise Conflict(f"{name} is {'loaded' if loaded == model_id else 'being loaded'}: switch to another "
                               "model first, then remove it.", code="model_loaded", model_id=model_id)
            with self._lock:
                waiting = sum(1 for plan in self._plans.values() if plan.model_id == model_id)
            if waiting:
                raise Conflict(f"{waiting} job(s) wait for {self._name(model_id)}: let them finish or cancel them, "
                               "then remove it.", code="model_in_use", model_id=model_id, jobs=waiting)
            return retire()

    def share_cpu(self, threads: int) -> None:
        """A training run takes `threads` CPU threads beside the worker (0: it ended): the worker uses the rest."""
        self.worker.share_cpu(threads)

    def retry_after_s(self) -> int:
        """When a refused client should try again: when the next job should be done (at least a second)."""
        etas = [e.eta_s for e in self.worker.snapshot() if e.kind == "generate" and e.eta_s is not None]
        return max(1, math.ceil(min(etas))) if etas else 5

    def position(self, job_id: int) -> tuple[int, float | None]:
        """(position, eta_s) of an accepted job: 0 when running; -1 when it is not in the queue."""
        for entry in self.worker.snapshot():
            if entry.job_id == job_id:
                return entry.position, entry.eta_s
        return -1, None

    def cancel(self, job_id: int) -> Literal["queued", "running"] | None:
        """Cancel a waiting job at once, or a running one at its next step; None when it is not in the queue."""
        return self.worker.cancel(job_id)

    def switch(self, model_id: str, note: str | None = None) -> Iterator[ProgressEvent]:
        """Queue a model switch behind the work already accepted; its events, from 'queued' to ready or error."""
        spec = self.registry.get(model_id)  # NotFound before anything is queued
        task = SwitchTask(spec.id, note)
        events: stdqueue.SimpleQueue = stdqueue.SimpleQueue()
        with self._lock:
            self._switches[task.task_id] = events
        with self._order:
            self.worker.submit(task)
        entries = self.worker.snapshot()
        mine = next((e for e in entries if e.task_id == task.task_id and e.state == "queued"), None)
        ahead = [e for e in entries if mine is not None and e.kind == "generate"
                 and (e.state == "running" or e.position < mine.position)]
        if ahead:
            eta = max((e.eta_s for e in ahead if e.eta_s is not None), default=None)
            when = f" (about {eta:.0f} s)" if eta is not None else ""
            events.put(ProgressEvent("queued", f"Switching to {spec.display_name} after the {len(ahead)} job(s) "
                                               f"accepted before it{when}", spec.id, fraction=0.0))
        return _drain(events)

    # ---- the worker's listener ---------------------------------------------------------------------------
    def started(self, job_ids: list[int], batch_size: int) -> None:
        with session_scope(self.engine) as session:
            moved = mark_running(session, job_ids, batch_size)
        if len(moved) != len(job_ids):  # closed meanwhile (a cancel recorded first): its own event said so
            log.info("jobs %s were no longer queued when their batch started",
                     ", ".join(str(j) for j in job_ids if j not in moved))
        with self._lock:  # the page's header follows the batch's longest job: the batch runs as long as it does
            self._header = (max(job_ids, key=lambda j: self._plans[j].frames if j in self._plans else 0),
                            len(job_ids))
        for job_id in job_ids:
            with self._lock:
                self._positions.pop(job_id, None)
            self.events.publish(JobEvent(job_id=job_id, event="running", status="running", step=0, fraction=0.0,
                                         message="Starting" + (f" (in a batch of {batch_size})"
                                                               if batch_size > 1 else "")))

    def progress(self, job_id: int, done: int, total: int, eta_s: float | None) -> None:
        plan = self._plan(job_id)
        if plan is None:
            return
        fraction = min(max(done / total, 0.0), 1.0) if total else 0.0
        with self._lock:
            header_job, batch = self._header
        if job_id == header_job:
            more = f" and {batch - 1} more" if batch > 1 else ""
            self.manager.set_activity(f"generating job {job_id}{more}: {music_progress(done, total, plan.duration_s)}")
        self.events.publish(JobEvent(job_id=job_id, event="running", status="running", step=done, total=total,
                                     fraction=round(fraction, 4), eta_s=None if eta_s is None else round(eta_s, 1),
                                     message=f"Generating: {music_progress(done, total, plan.duration_s)}"))

    def audio(self, job_id: int, start_sample: int, chunk: np.ndarray) -> None:
        plan = self._plan(job_id)
        if plan is not None:
            self.events.publish_audio(job_id, start_sample, plan.sample_rate, chunk)

    def finished(self, job_id: int, result: RowResult) -> None:
        plan = self._plan(job_id)
        if plan is None:
            return
        try:
            event = self._store(job_id, plan, result)
        except Exception as exc:  # noqa: BLE001 - the job is closed as failed, never left running
            log.exception("could not finish job %s", job_id)
            if isinstance(exc, StudioError):
                self._close(job_id, "failed", exc.message, exc.code, {k: v for k, v in exc.extra.items()
                                                                      if k != "job_id"})
            else:
                self.failed(job_id, "generation_failed", f"Could not finish the audio: {exc}")
            return
        self._forget(job_id)
        self.events.publish(event)

    def failed(self, job_id: int, code: str, message: str) -> None:
        plan = self._plan(job_id)
        if code == "interrupted":  # the process running it stopped (a remote worker): as after a restart
            self._close(job_id, "interrupted", message, code)
            return
        if code == "model_not_loaded" and plan is not None:
            message = self._not_loaded(plan.model_id)
        if code == "adapter_load_failed" and plan is not None and plan.adapter is not None:
            if not plan.plain:
                self._close(job_id, "failed", f"Adapters {plan.adapters_label()}: {message}", code,
                            {"adapter_ids": [ref.id for ref, _ in plan.stack]})
                return
            self._close(job_id, "failed", f"Adapter {plan.adapter.label}: {message}", code,
                        {"adapter_id": plan.adapter.id})
            return
        self._close(job_id, "failed", message, code)

    def cancelled(self, job_id: int) -> None:
        self._close(job_id, "cancelled", "Cancelled.", None)

    def _not_loaded(self, model_id: str) -> str:
        """Why a job for model_id cannot run, in names a person knows, with what to do."""
        name = self._name(model_id)
        with self._lock:
            why = self._switch_errors.get(model_id)
        loaded = self.manager.status().model_id
        now = f"{self._name(loaded)} is loaded" if loaded else "no model is loaded"
        reason = f" ({why})" if why else ""
        return (f"Not generated: this job was for {name}, which could not be loaded{reason}; {now}. Generate again "
                f"to run it on {self._name(loaded)}, or switch models again." if loaded else
                f"Not generated: this job was for {name}, which could not be loaded{reason}; {now}. Choose a model.")

    def _name(self, model_id: str | None) -> str:
        try:
            return self.registry.get(model_id).display_name if model_id else "no model"
        except NotFound:
            return str(model_id)

    def switch_progress(self, task: SwitchTask, event: ProgressEvent) -> None:
        if event.stage == "error":
            with self._lock:
                self._switch_errors[task.model_id] = event.message.rstrip(".")
        with self._lock:
            followers = self._switches.get(task.task_id)
            if event.terminal:
                self._switches.pop(task.task_id, None)
        if followers is not None:
            followers.put(event)

    def queue_changed(self) -> None:
        """Tell each waiting job its new place and ETA when they changed."""
        for entry in self.worker.snapshot():
            if entry.kind != "generate" or entry.state != "queued":
                continue
            told = (entry.position, None if entry.eta_s is None else round(entry.eta_s))
            with self._lock:
                if self._positions.get(entry.job_id) == told:
                    continue
                self._positions[entry.job_id] = told
            self.events.publish(JobEvent(job_id=entry.job_id, event="queued", status="queued",
                                         position=entry.position, eta_s=entry.eta_s,
                                         message=_position_text(entry.position, entry.eta_s)))

    # ---- helpers -------------------------------------------------------------------------------------------
    def _plan(self, job_id: int) -> JobPlan | None:
        with self._lock:
            return self._plans.get(job_id)

    def _forget(self, job_id: int) -> None:
        with self._lock:
            self._plans.pop(job_id, None)
            self._positions.pop(job_id, None)

    def _close(self, job_id: int, status: str, message: str, code: str | None, detail: dict | None = None) -> None:
        with session_scope(self.engine) as session:
            job = get_job(session, job_id)
            if job is not None:  # conditional: a job finished meanwhile keeps its result
                finish_job(session, job, status, error=message, error_code=code)
        self._forget(job_id)
        self.events.publish(JobEvent(job_id=job_id, event=status, status=status, message=message, code=code,
                                     detail=detail or None))

    def _store(self, job_id: int, plan: JobPlan, result: RowResult) -> JobEvent:
        """Write the job's audio and codes and record them, together or not at all."""
        want = plan.output_samples
        audio = result.audio[:want] if len(result.audio) >= want else np.pad(
            result.audio, ((0, want - len(result.audio)), (0, 0)))
        audio = finish_audio(audio, plan.sample_rate, plan.settings)
        name = download_name(plan.prompt, job_id, plan.settings.output_format)
        path, measured = write_measured(self.outputs_dir / name, audio, plan.sample_rate, plan.settings)
        codes = path.with_name(path.stem + ".codes.safetensors")
        try:
            _write_codes(codes, result.codes)
            with session_scope(self.engine) as session:
                job = get_job(session, job_id)
                gone = NotFound(f"Job {job_id} is no longer running.", code="job_not_running")
                if job is None or job.status != "running":  # cancelled meanwhile: no file without its record
                    raise gone
                used = [ref for ref, _ in plan.stack] or ([plan.adapter] if plan.adapter is not None else [])
                for ref in used:
                    if ref.id is not None:  # a checkpoint folder: no record
                        record_use(session, ref.id)  # committed with the job
                # conditional (still running): a cancel committed since the read above wins, with no file left
                if finish_job(session, job, "succeeded", expected=("running",),
                              output_file=path.relative_to(self.data_dir).as_posix(),
                              codes_file=codes.relative_to(self.data_dir).as_posix(),
                              loudness_lufs=measured.loudness_lufs, true_peak_dbtp=measured.true_peak_dbtp) is None:
                    raise gone
                elapsed = job.elapsed_s
        except BaseException:
            path.unlink(missing_ok=True)
            codes.unlink(missing_ok=True)
            raise
        return JobEvent(job_id=job_id, event="succeeded", status="succeeded", audio_url=audio_url(job_id),
                        message=f"Done in {elapsed or 0:.1f} s.", fraction=1.0)

    # ---- restart -------------------------------------------------------------------------------------------
    def resume(self, plan_of) -> list[int]:
        """Queue again the jobs a stopped studio had accepted and not started, in their order, with the model
        switches they need. plan_of(job) rebuilds a job's plan (or raises a StudioError: the job fails, saying
        why). Their ids."""
        with session_scope(self.engine) as session:
            jobs = queued_jobs(session, self.runner)  # this studio's own (other studios run theirs)
        resumed = []
        for job in jobs:
            with self._lock:
                if job.id in self._plans:  # accepted by this studio (while its start-up model loaded)
                    continue
            try:
                plan = plan_of(job)
            except StudioError as exc:
                self.failed(job.id, exc.code, f"Could not be run again after a restart: {exc.message}")
                continue
            if self.worker.target_model() != plan.model_id:
                self.worker.submit(SwitchTask(plan.model_id, "Loaded to run the jobs waiting when the studio "
                                                             "stopped."))
            with self._lock:
                self._plans[job.id] = plan
            self.events.open(job.id)
            self.worker.submit(plan.task(job.id))
            resumed.append(job.id)
        if resumed:
            log.info("running again %d job(s) queued when the studio stopped: %s", len(resumed),
                     ", ".join(map(str, resumed)))
        return resumed

    @staticmethod
    def _shown(plan: JobPlan, actor: Actor | None, user: str | None) -> bool:
        """Whether a waiting or running job is listed for the actor (None: the studio itself; a member: their own
        generations only), filtered by who submitted it (user). JobService.visible says the same of recorded jobs;
        here it reads the plans in memory (the view is refreshed every second or two by every open page)."""
        if user is not None and plan.submitted_by != user:
            return False
        if actor is None or actor.is_admin:
            return True
        person = plan.abtest_id is None and plan.evaluation_id is None and plan.training_run_id is None
        return person and actor.may_see(plan.submitted_by)

    def view(self, actor: Actor | None = None, user: str | None = None) -> QueueView:
        """What runs and waits: the model switches and the jobs the actor may see (a member: their own; None: the
        studio itself, everything), filtered by submitter (user), each at its place in the whole queue."""
        entries = self.worker.snapshot()
        with self._lock:
            plans = dict(self._plans)
        items = []
        entries = [e for e in entries if e.job_id is None or e.job_id in plans]  # over, the worker not yet told
        for e in entries:
            plan = plans.get(e.job_id) if e.job_id is not None else None
            if plan is not None and not self._shown(plan, actor, user):
                continue
            fraction = round(e.done / e.total, 4) if e.done is not None and e.total else None
            # a blind A/B test's clip shows as such: its prompt and adapter would tell a listener its side
            prompt = (f"clip of A/B test {plan.abtest_id}" if plan.abtest_id is not None else plan.prompt
                      ) if plan else None
            items.append(QueueItem(kind=e.kind, state=e.state, position=e.position, model_id=e.model_id,
                                   job_id=e.job_id, prompt=prompt,
                                   submitted_by=plan.submitted_by if plan else None, eta_s=e.eta_s,
                                   fraction=fraction, batch_size=e.batch_size, replica=e.replica))
        shown = {i.job_id for i in items if i.job_id is not None}
        return QueueView(items=items, waiting=sum(e.kind == "generate" and e.state == "queued" for e in entries),
                         max_queue=self.max_queue, next=self._next_text(entries, shown), training=self.training_line())

    def _next_text(self, entries: list[QueueEntry], shown: set[int]) -> str:
        name = self._name
        running = [e for e in entries if e.state == "running"]
        waiting = [e for e in entries if e.state == "queued"]
        if running and running[0].kind == "switch":
            now = f"Switching to {name(running[0].model_id)}."
        elif running:
            now = f"Generating {len(running)} job(s) with {name(running[0].model_id)}."
        else:
            now = "Idle."
        if not waiting:
            return now + " Nothing waits."
        first = waiting[0]
        job = f"job {first.job_id}" if first.job_id in shown else "a job"  # another member's job is not named
        then = (f"switch to {name(first.model_id)}" if first.kind == "switch"
                else f"generate {job} with {name(first.model_id)}")
        return f"{now} Next: {then}; {len(waiting)} task(s) wait."

    def close(self) -> None:
        self.worker.close()


def _write_codes(path: Path, codes: np.ndarray) -> None:
    """The job's codes as safetensors (never a pickle), written atomically."""
    from safetensors.numpy import save_file

    tmp = path.with_name(path.name + ".part")
    with storage_writes(path.parent):
        try:
            save_file({"codes": np.ascontiguousarray(codes, dtype=np.int64)}, str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _drain(events: stdqueue.SimpleQueue) -> Iterator[ProgressEvent]:
    while True:
        event = events.get()
        yield event
        if event.terminal:
            return
