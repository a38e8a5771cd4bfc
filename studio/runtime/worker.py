"""The worker: the one user of the device, the loaded model and its adapters.

Callers submit tasks and may cancel them; the worker runs them in the order they came, one at a time: a model
switch is a barrier (jobs submitted before it run on the old model, jobs after it on the new one), and the
generation jobs waiting together for the loaded model are decoded as one batch, and a score task (an evaluation
model scoring clips) runs between them, so scoring never races generation for the device. What happens is told to a
WorkerListener, so the same protocol fits a worker in another process or on another machine (a Ray Serve replica):
only these plain events cross the seam.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Protocol

import numpy as np

from studio.runtime.backend import DecodeHooks, Row, RowResult
from studio.runtime.clap import ClapScorer, read_audio
from studio.runtime.decode import plan_windows
from studio.runtime.manager import ModelManager
from studio.runtime.progress import ProgressEvent
from studio.runtime.stacks import batch_key
from studio.runtime.zerogpu import gpu_function, gpu_seconds

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.25  # progress events per job at most this often (a step can take 2 ms)
SWITCH_GUESS_S = 10.0  # a switch's duration before one was measured


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
    return text.strip().splitlines()[0][:300].rstrip(".")


@dataclass(frozen=True)
class GenerateTask:
    job_id: int
    model_id: str  # the model the job was validated against: it runs on that model or fails, never on another
    row: Row
    adapter_folder: Path | None = None  # where row.adapter's files are (loaded on first use)
    # A clip to continue, float32 (samples, channels) at the model's rate: encoded with the model's codec on the
    # worker (the device's owner) into row.prompt_codes just before decoding
    continue_audio: np.ndarray | None = field(default=None, compare=False, repr=False)
    window: int | None = None  # frames of one decoding window (None: the model's own)
    stride: int | None = None  # new frames each further window adds

    @property
    def prompt_frames(self) -> int:
        """Frames of the codes it continues (an audio clip's: about, before it is encoded)."""
        if self.row.prompt_codes is not None:
            return int(self.row.prompt_codes.shape[-1])
        return 0

    def steps(self, per_channel: int = 4, frame_rate: float = 50.0, sample_rate: int = 32000) -> int:
        """Decoding steps this job takes alone: every window's context and new frames, and the delay pattern."""
        prompt = self.prompt_frames
        if self.continue_audio is not None:
            prompt = round(len(self.continue_audio) / sample_rate * frame_rate)
        plan = plan_windows(prompt, self.row.frames, self.window, self.stride)
        return sum(c + n + per_channel - 1 for c, n in plan)
    # where the files of row.adapters (a stack) are, in the same order (loaded on first use)
    stack_folders: tuple[Path, ...] = ()

    def adapter_files(self) -> list[tuple[str, Path]]:
        """(adapter name, folder) of every adapter the job runs with."""
        if self.row.adapters:
            return [(name, folder) for (name, _), folder in zip(self.row.adapters, self.stack_folders)]
        return [(self.row.adapter, self.adapter_folder)] if self.row.adapter is not None else []


@dataclass(frozen=True)
class SwitchTask:
    model_id: str
    note: str | None = None  # why the model is loaded, for the page's header
    task_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class ScoreTask:
    """Score (text, audio file) pairs with an evaluation model, on the device, in queue order. The model is loaded
    from `folder` the first time and kept until another one is asked for or the generation model switches.
    `result` gets one value per item (None: that clip could not be read) or the exception that stopped the task."""
    scorer_id: str
    folder: Path
    items: tuple[tuple[str, Path], ...]
    result: Future = field(default_factory=Future, compare=False, repr=False)
    task_id: str = field(default_factory=lambda: uuid.uuid4().hex)


Task = GenerateTask | SwitchTask | ScoreTask


@dataclass(frozen=True)
class QueueEntry:
    """One task as the queue view shows it."""
    kind: Literal["generate", "switch"]
    state: Literal["running", "queued"]
    position: int  # 0: running; 1, 2, ...: waiting, in the order they will start
    model_id: str
    job_id: int | None = None
    eta_s: float | None = None  # seconds until it is done, from measured speeds (None: nothing measured yet)
    done: int | None = None  # decoding steps done (running jobs)
    total: int | None = None
    batch_size: int | None = None
    task_id: str | None = None  # switches
    replica: str | None = None  # where a running job decodes, when the worker is not this process (Ray Serve)


class WorkerListener(Protocol):
    """What a worker tells its owner. Called from the worker's thread, never while it holds its lock."""

    def started(self, job_ids: list[int], batch_size: int) -> None: ...

    def progress(self, job_id: int, done: int, total: int, eta_s: float | None) -> None: ...

    def audio(self, job_id: int, start_sample: int, chunk: np.ndarray) -> None: ...

    def finished(self, job_id: int, result: RowResult) -> None: ...

    def failed(self, job_id: int, code: str, message: str) -> None: ...

    def cancelled(self, job_id: int) -> None: ...

    def switch_progress(self, task: SwitchTask, event: ProgressEvent) -> None: ...

    def queue_changed(self) -> None: ...


class Worker(Protocol):
    """The seam between the studio's queue service and whatever owns a device (this process, or a remote one)."""

    def submit(self, *tasks: Task) -> None: ...

    def cancel(self, job_id: int) -> Literal["queued", "running"] | None: ...

    def snapshot(self) -> list[QueueEntry]: ...

    def target_model(self) -> str | None: ...

    def share_cpu(self, threads: int) -> None: ...

    def close(self) -> None: ...


class _BatchHooks(DecodeHooks):
    def __init__(self, worker: "LocalWorker", tasks: list[GenerateTask], model_id: str):
        self.worker, self.tasks, self.model_id = worker, tasks, model_id
        self.ends: list[int] | None = None  # the batch's step at which each row is done (the loop's plan)
        self.last_step = time.perf_counter()
        self.last_done = 0
        self.last_sent = 0.0

    def on_plan(self, ends: list[int], total: int) -> None:
        self.ends = list(ends)
        with self.worker._cond:
            self.worker._ends = {t.job_id: e for t, e in zip(self.tasks, ends)}

    def on_step(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done > self.last_done:  # per step: a remote decode sends its steps a few at a time
            self.worker._measure_step(self.model_id, (now - self.last_step) / (done - self.last_done))
        self.last_step, self.last_done = now, done
        with self.worker._cond:
            self.worker._progress = (done, total)
        if done < total and now - self.last_sent < PROGRESS_EVERY_S:
            return
        self.last_sent = now
        step_s = self.worker.step_seconds(self.model_id)
        for i, task in enumerate(self.tasks):
            own = self.ends[i] if self.ends is not None else total
            if self.stopped(i) or done > own:
                continue
            eta = (own - done) * step_s if step_s is not None else None
            self.worker.listener.progress(task.job_id, done, own, eta)

    def stopped(self, row: int) -> bool:
        return self.tasks[row].job_id in self.worker._stopping

    def on_audio(self, row: int, start_sample: int, chunk: np.ndarray) -> None:
        if not self.stopped(row):
            self.worker.listener.audio(self.tasks[row].job_id, start_sample, chunk)


def _windows(task: GenerateTask) -> dict:
    """The window arguments of a batch (its jobs are for one model), left out when the task has none: a backend
    then uses its model's own."""
    return {k: v for k, v in (("window", task.window), ("stride", task.stride)) if v is not None}


class _Telling:
    """How a batch's end reaches the listener, once per job: `_told` holds the jobs of the running batch told."""
    listener: WorkerListener
    _told: set[int]

    def _failed(self, job_id: int, code: str, message: str) -> None:
        self._told.add(job_id)
        self.listener.failed(job_id, code, message)

    def _cancelled(self, job_id: int) -> None:
        self._told.add(job_id)
        self.listener.cancelled(job_id)

    def _finished(self, job_id: int, result: RowResult) -> None:
        self._told.add(job_id)
        self.listener.finished(job_id, result)


class LocalWorker(_Telling):
    """The in-process worker: one thread that owns the ModelManager's model (nothing else uses it)."""

    def __init__(self, manager: ModelManager, listener: WorkerListener, *, max_batch: Callable[[str], int],
                 stream_every_s: float | None = 1.0, on_space: bool = False):
        self.manager, self.listener = manager, listener
        self.max_batch, self.stream_every_s = max_batch, stream_every_s
        self._cond = threading.Condition()  # guards every field below
        self._pending: deque[Task] = deque()
        self._running: list[GenerateTask] | SwitchTask | ScoreTask | None = None
        self._stopping: set[int] = set()  # running jobs asked to stop
        self._progress: tuple[int, int] | None = None  # (done, total) steps of the running batch
        self._ends: dict[int, int] = {}  # running job -> the batch's step at which it is done
        self._step_s: dict[str, float] = {}  # measured seconds per decoding step, per model
        self._switch_s: dict[str, float] = {}  # measured seconds per switch, per model
        self._told: set[int] = set()  # jobs of the running batch whose end the listener was told (worker thread)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._scorer: tuple[str, Path, ClapScorer] | None = None  # the loaded evaluation model (worker thread only)
        self._cpu_share = 0  # CPU threads a training run beside the worker holds (share_cpu)
        self._own_threads: int | None = None  # torch's threads when the worker started (worker thread only)
        # On a Hugging Face Space the device work of a batch is a spaces.GPU function (ZeroGPU attaches a GPU
        # for each call; elsewhere the package leaves it as is); off a Space it is called directly.
        self._gpu_batch = gpu_function(self._gpu_events, self._gpu_duration) if on_space else None
        self._gpu_model = None  # the model the GPU function decodes with (worker thread only)

    # ---- the protocol ------------------------------------------------------------------------------------
    def submit(self, *tasks: Task) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the worker is closed")
            self._pending.extend(tasks)
            if self._thread is None:  # started on first use: a context that never generates has no thread
                self._thread = threading.Thread(target=self._loop, name="studio-worker", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        self.listener.queue_changed()

    def cancel(self, job_id: int) -> Literal["queued", "running"] | None:
        """Remove a waiting job (told as cancelled at once) or stop a running one at its next step."""
        with self._cond:
            running = self._running if isinstance(self._running, list) else []
            if any(t.job_id == job_id for t in running):
                self._stopping.add(job_id)
                return "running"
            task = next((t for t in self._pending if isinstance(t, GenerateTask) and t.job_id == job_id), None)
            if task is None:
                return None
            self._pending.remove(task)
        self.listener.cancelled(job_id)
        self.listener.queue_changed()
        return "queued"

    def share_cpu(self, threads: int) -> None:
        """A training run beside the worker holds `threads` CPU threads (0: none): from the next task on, the
        worker decodes with that many fewer (at least 1). Both at full width on the same cores made each wait for
        the other's threads: a generation took 15 times as long while a run trained on 2 cores."""
        with self._cond:
            self._cpu_share = max(0, int(threads))

    def _fit_threads(self) -> None:
        import torch

        with self._cond:
            share = self._cpu_share
        if self._own_threads is None:
            self._own_threads = torch.get_num_threads()
        want = max(1, self._own_threads - share)
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)  # the calling thread's parallel regions: this worker's decodes

    def target_model(self) -> str | None:
        """The model a job submitted now will run on: the last switch waiting, the one running, or the loaded one."""
        with self._cond:
            switches = [t for t in self._pending if isinstance(t, SwitchTask)]
            if switches:
                return switches[-1].model_id
            if isinstance(self._running, SwitchTask):
                return self._running.model_id
        return self.manager.status().model_id

    def pending_jobs(self) -> int:
        with self._cond:
            return sum(isinstance(t, GenerateTask) for t in self._pending)

    def step_seconds(self, model_id: str) -> float | None:
        with self._cond:
            return self._step_s.get(model_id)

    def snapshot(self) -> list[QueueEntry]:
        """What runs and what waits, in order, each with an estimate of when it will be done."""
        with self._cond:
            running, pending, progress = self._running, list(self._pending), self._progress
            step_s, switch_s = dict(self._step_s), dict(self._switch_s)
        entries: list[QueueEntry] = []
        clock = 0.0  # seconds from now, while the simulation walks the queue
        known = True
        model = self.manager.status().model_id

        def cost(model_id: str, steps: int) -> float | None:
            per = step_s.get(model_id)
            return steps * per if per is not None else None

        if isinstance(running, SwitchTask):
            entries.append(QueueEntry("switch", "running", 0, running.model_id, task_id=running.task_id))
            clock += switch_s.get(running.model_id, SWITCH_GUESS_S) / 2
            model = running.model_id
        elif isinstance(running, list) and running:
            with self._cond:
                ends = dict(self._ends)
            done, total = progress or (0, max(t.steps() for t in running))
            left = cost(running[0].model_id, max(total - done, 0))
            known = left is not None
            clock += left or 0.0
            for t in running:
                own = ends.get(t.job_id, total)
                eta = cost(t.model_id, max(own - done, 0)) if known else None
                eta = None if eta is None else round(eta, 1)
                entries.append(QueueEntry("generate", "running", 0, t.model_id, t.job_id, eta, min(done, own), own,
                                          len(running)))
        position = 0
        i = 0
        while i < len(pending):
            task = pending[i]
            if isinstance(task, ScoreTask):  # short, and not a job: not shown
                i += 1
                continue
            if isinstance(task, SwitchTask):
                position += 1
                clock += switch_s.get(task.model_id, SWITCH_GUESS_S)
                entries.append(QueueEntry("switch", "queued", position, task.model_id,
                                          eta_s=round(clock, 1) if known else None, task_id=task.task_id))
                model = task.model_id
                i += 1
                continue
            batch = self._batch_of(pending, i, model)
            steps = max(t.steps() for t in batch)  # the delay pattern: 4 codebooks a channel, about
            c = cost(task.model_id, steps)
            known = known and c is not None
            clock += c or 0.0
            for t in batch:
                position += 1
                entries.append(QueueEntry("generate", "queued", position, t.model_id, t.job_id,
                                          round(clock, 1) if known else None))
            i += len(batch)
        return entries

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the running step (running jobs are cancelled; waiting ones stay recorded as queued)."""
        with self._cond:
            self._closed = True
            if isinstance(self._running, list):
                self._stopping.update(t.job_id for t in self._running)
            scores = [t for t in self._pending if isinstance(t, ScoreTask)]
            for task in scores:
                self._pending.remove(task)
            self._cond.notify_all()
            thread = self._thread
        for task in scores:  # nobody will run them: their waiters are told
            if not task.result.done():
                task.result.set_exception(RuntimeError("the studio stopped before the clips were scored"))
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ---- the thread --------------------------------------------------------------------------------------
    def _batch_of(self, pending: list[Task] | deque, start: int, loaded: str | None) -> list[GenerateTask]:
        """The jobs decoded together from pending[start]: the next ones for the same model, up to its max_batch,
        never past a switch. A job for a model that is not the loaded one runs alone (it will fail)."""
        head = pending[start]
        if head.model_id != loaded:
            return [head]
        limit = self.max_batch(head.model_id)
        key = batch_key(head.row)  # rows with other adapter stacks (or strengths) wait for their own batch
        batch = []
        for task in itertools.islice(pending, start, None):
            if (not isinstance(task, GenerateTask) or task.model_id != head.model_id or len(batch) >= limit
                    or batch_key(task.row) != key):
                break
            batch.append(task)
        return batch

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                head = self._pending[0]
                if isinstance(head, (SwitchTask, ScoreTask)):
                    work: list[GenerateTask] | SwitchTask | ScoreTask = self._pending.popleft()
                else:
                    work = self._batch_of(self._pending, 0, self.manager.status().model_id)
                    # bounded by memory: a row holds one window at most
                    work = work[:self.manager.rows_that_fit([t.prompt_frames + t.row.frames for t in work])]
                    for _ in work:
                        self._pending.popleft()
                self._running, self._progress = work, None
            self.listener.queue_changed()
            try:
                self._fit_threads()
                if isinstance(work, SwitchTask):
                    self._switch(work)
                elif isinstance(work, ScoreTask):
                    self._score(work)
                else:
                    self._generate(work)
            except Exception as exc:  # noqa: BLE001 - the worker outlives any one task, and says why it failed
                log.exception("worker task crashed")
                if isinstance(work, ScoreTask):
                    if not work.result.done():
                        work.result.set_exception(exc)
                elif isinstance(work, SwitchTask):
                    self.listener.switch_progress(work, ProgressEvent(
                        "error", f"Switch failed: {_reason(exc)}", work.model_id, code="switch_failed"))
                else:
                    for task in work:
                        if task.job_id not in self._told:
                            self.listener.failed(task.job_id, "generation_failed",
                                                 f"Generation failed: {_reason(exc)}.")
            finally:
                with self._cond:
                    if isinstance(work, list):
                        self._stopping.difference_update(t.job_id for t in work)
                    self._running, self._progress, self._ends = None, None, {}
                    self._told = set()
            self.listener.queue_changed()

    def _measure_step(self, model_id: str, seconds: float) -> None:
        with self._cond:
            old = self._step_s.get(model_id)
            # smoothed over about a second of steps: single steps jitter with the machine's load
            self._step_s[model_id] = seconds if old is None else 0.98 * old + 0.02 * seconds

    def _switch(self, task: SwitchTask) -> None:
        self._scorer = None  # the evaluation model leaves the device to the new model; it loads again in a second
        started = time.perf_counter()
        final = self.manager.switch_and_wait(task.model_id, task.note,
                                             on_event=lambda e: self.listener.switch_progress(task, e))
        if final.stage == "ready":
            with self._cond:
                self._switch_s[task.model_id] = time.perf_counter() - started
        else:
            log.warning("switch to %s failed: %s", task.model_id, final.message)

    def _score(self, task: ScoreTask) -> None:
        if self._scorer is None or self._scorer[:2] != (task.scorer_id, task.folder):
            self._scorer = None  # one evaluation model on the device at a time
            self._scorer = (task.scorer_id, task.folder, ClapScorer.load(task.folder, self.manager.device))
        scorer = self._scorer[2]
        values: list[float | None] = []
        for text, path in task.items:
            try:
                audio, rate = read_audio(path)
            except Exception as exc:  # noqa: BLE001 - a clip deleted or damaged since: that clip has no score
                log.warning("cannot read %s for scoring: %s", path, exc)
                values.append(None)
                continue
            values.append(scorer.score([(text, audio, rate)])[0])
        task.result.set_result(values)

    def _generate(self, batch: list[GenerateTask]) -> None:
        loaded = self.manager.status().model_id
        if batch[0].model_id != loaded:
            for task in batch:
                what = f"model {loaded} is loaded" if loaded else "no model is loaded"
                self._failed(task.job_id, "model_not_loaded",
                             f"This job was for model {task.model_id}, but {what} (its switch failed or another "
                             "switch came first). Submit it again.")
            return
        run = _BatchRun(self, batch, remote=self._gpu_batch is not None)
        with self.manager.use(f"generating {len(batch)} job(s)") as model:
            if self._gpu_batch is None:
                device_work(model, batch, self._stopping, run.handle, self.stream_every_s)
            else:
                self._gpu_model = model  # what the GPU function decodes with (on ZeroGPU: its forked copy)
                events = self._gpu_batch(batch, id(model))
                try:
                    for event in events:
                        run.handle(event)
                        if run.all_stopped():
                            break  # every row cancelled: closing the stream stops the GPU call
                finally:
                    events.close()
        run.finish()

    def _gpu_events(self, batch: list[GenerateTask], model_key: int) -> Iterator[tuple]:
        """The ZeroGPU function: _device_work as a stream of its events. On ZeroGPU it runs in a process forked
        from this one with the GPU attached, so its arguments and events are plain data and the model is the one
        this process held when that process was forked: `model_key` (the loaded model's id here) checks that it
        is still the one loaded. A generator (ZeroGPU streams what it yields), never a coroutine (ZeroGPU refuses
        those); the decode runs in a thread because the model reports through callbacks."""
        model = self._gpu_model
        if model is None or id(model) != model_key:
            raise RuntimeError("the GPU process holds an earlier model than the one loaded: restart the Space to "
                               "generate with the new one")
        events: queue.SimpleQueue = queue.SimpleQueue()
        abandoned = set(t.job_id for t in batch)  # stands for 'every row stopped' once the stream is closed
        stopping = _Either(self._stopping, abandoned)

        def work() -> None:
            try:
                device_work(model, batch, stopping, events.put, self.stream_every_s)
            except Exception as exc:  # noqa: BLE001 - said to the studio as the batch's failure
                log.exception("GPU batch failed")
                events.put(("decode_failed", _reason(exc)))
            finally:
                events.put(None)

        thread = threading.Thread(target=work, name="studio-gpu-batch", daemon=True)
        thread.start()
        try:
            while (event := events.get()) is not None:
                yield event
        finally:
            stopping.closed = True  # a closed stream: the decode stops at its next step
            thread.join()

    def _gpu_duration(self, batch: list[GenerateTask], model_key: int) -> int:
        """Seconds of GPU the call asks ZeroGPU for (zerogpu.gpu_seconds): the batch's longest job's steps at the
        speed measured for the model, else a guess from its size."""
        spec = self.manager.registry.get(batch[0].model_id)
        steps = max(t.steps(spec.codebooks // spec.channels, spec.frame_rate, spec.sample_rate) for t in batch)
        return gpu_seconds(steps, self.step_seconds(spec.id), spec.parameters)


def device_work(model, batch: list[GenerateTask], stopping, emit: Callable[[tuple], None],
                stream_every_s: float | None) -> None:
    """Everything a batch does on the device: encode the clips to continue with the model's codec, apply the
    adapters, decode. What happens goes to `emit` as plain tuples (_BatchRun.handle reads them), so the same
    work runs here, in ZeroGPU's GPU process or in a Ray Serve replica (studio.runtime.ray_serve). `stopping`: job
    ids asked to stop (live here; elsewhere a copy, and the studio drops what a cancelled row still sends)."""
    ready: list[GenerateTask] = []
    # making room for one never unloads another adapter this batch runs with
    needed = [name for task in batch for name, _ in task.adapter_files()]
    for task in batch:
        if task.continue_audio is not None:
            try:  # the clip to continue, encoded with this model's codec
                codes = model.encode(task.continue_audio)
            except Exception as exc:  # noqa: BLE001 - this job's clip, not the batch's fault
                log.exception("encoding the clip of job %s failed", task.job_id)
                emit(("failed", task.job_id, "continuation_failed",
                      f"The clip to continue could not be encoded: {_reason(exc)}."))
                continue
            task = dataclasses.replace(task, row=dataclasses.replace(task.row, prompt_codes=codes),
                                       continue_audio=None)
        try:
            for name, folder in task.adapter_files():
                model.load_adapter(name, folder, keep=needed)
        except Exception as exc:  # noqa: BLE001 - the adapter's files: this job's fault, not the batch's
            emit(("failed", task.job_id, "adapter_load_failed",
                  f"The adapter could not be applied: {_reason(exc)}."))
            continue
        ready.append(task)
    if not ready:
        return
    emit(("started", [t.job_id for t in ready]))
    hooks = _DeviceHooks(emit, [t.job_id for t in ready], stopping)
    try:
        results = model.generate_batch([t.row for t in ready], hooks, stream_every_s=stream_every_s,
                                       **_windows(ready[0]))
    except Exception as exc:  # noqa: BLE001 - every job of the batch is told why
        log.exception("decoding failed")
        emit(("decode_failed", _reason(exc)))
        return
    emit(("results", results))



class _Either:
    """A set-like view for _DeviceHooks: a job is stopping when the worker says so or the GPU stream was closed."""

    def __init__(self, stopping: set[int], batch_ids: set[int]):
        self.stopping, self.batch_ids, self.closed = stopping, batch_ids, False

    def __contains__(self, job_id: int) -> bool:
        return job_id in self.stopping or (self.closed and job_id in self.batch_ids)


class _DeviceHooks(DecodeHooks):
    """The decode's hooks on the device side: what it reports becomes events; `stopped` reads the stopping jobs."""

    def __init__(self, emit: Callable[[tuple], None], job_ids: list[int], stopping):
        self.emit, self.job_ids, self.stopping = emit, job_ids, stopping

    def on_plan(self, ends: list[int], total: int) -> None:
        self.emit(("plan", list(ends), total))

    def on_step(self, done: int, total: int) -> None:
        self.emit(("step", done, total))

    def stopped(self, row: int) -> bool:
        return self.job_ids[row] in self.stopping

    def on_audio(self, row: int, start_sample: int, chunk: np.ndarray) -> None:
        self.emit(("audio", row, start_sample, chunk))


class _BatchRun:
    """The studio's side of a batch: turns the device work's events into what the listener is told."""

    def __init__(self, worker: LocalWorker, batch: list[GenerateTask], remote: bool):
        # remote: the decode ran behind the GPU function, which may not have seen a cancel in time (on ZeroGPU it
        # reads a copy of the stopping jobs): a row cancelled here is cancelled whatever it sent
        self.worker, self.batch, self.remote = worker, batch, remote
        self.hooks: _BatchHooks | None = None
        self.results: list[RowResult | None] | None = None
        self.decode_error: str | None = None

    def handle(self, event: tuple) -> None:
        kind, *args = event
        if kind == "failed":
            self.worker._failed(*args)
        elif kind == "started":
            by_id = {t.job_id: t for t in self.batch}
            ready = [by_id[j] for j in args[0]]
            self.worker.listener.started(args[0], len(ready))
            self.hooks = _BatchHooks(self.worker, ready, ready[0].model_id)
        elif kind == "plan":
            self.hooks.on_plan(*args)
        elif kind == "step":
            self.hooks.on_step(*args)
        elif kind == "audio":
            self.hooks.on_audio(*args)
        elif kind == "results":
            self.results = args[0]
        elif kind == "decode_failed":
            self.decode_error = args[0]

    def all_stopped(self) -> bool:
        return self.hooks is not None and all(self.hooks.stopped(i) for i in range(len(self.hooks.tasks)))

    def finish(self) -> None:
        """After the model is released: each started job finished, cancelled or failed."""
        if self.hooks is None:
            return
        ready = self.hooks.tasks
        results = self.results if self.results is not None else [None] * len(ready)
        for i, (task, result) in enumerate(zip(ready, results)):
            if result is not None and not (self.remote and self.hooks.stopped(i)):
                self.worker._finished(task.job_id, result)
            elif self.results is not None or self.hooks.stopped(i):  # the decode stopped this row
                self.worker._cancelled(task.job_id)
            else:
                reason = self.decode_error or "the GPU call ended before the decode did"
                self.worker._failed(task.job_id, "generation_failed", f"Generation failed: {reason}.")
