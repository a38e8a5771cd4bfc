"""The studio's side of GPU workers on Ray Serve: the same Worker protocol as the in-process worker.

RayWorker keeps the queue of generation jobs in the studio (so waiting jobs, their places, cancel and a restart
behave exactly as with the in-process worker) and sends each batch, when a replica is free for it, through a Serve
handle whose multiplexed model id is the batch's model and adapters: Serve routes it to a replica that holds them.
One lane per replica: each lane runs one batch at a time and reads its events as a stream (the same tuples the
in-process worker's device work emits), so progress, streamed audio and results reach the listener as they do in
process. Model switches and scoring stay with an in-process LocalWorker (the studio keeps the loaded model's
description for its pages, and scores on its own device).

A replica lost mid-batch (killed, its machine gone) leaves the batch's started jobs `interrupted`; jobs it had not
started go back to the front of the queue. Replicas never see the database.
"""
from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Literal

from studio.registry import ModelSpec
from studio.runtime.worker import (GenerateTask, LocalWorker, QueueEntry, Task, WorkerListener, _BatchRun,
                                   _Telling)

log = logging.getLogger(__name__)

HEAD_PROBE_S = 5.0  # a Ray head's GCS port answers at once; ray.init would retry an absent one for ever
LOST = ("interrupted: the GPU worker running this job stopped (replica {replica}); submit it again "
        "(POST /api/jobs/{job_id}/resubmit)")


@dataclass
class ReplicaStats:
    """Where batches ran: `hits` when the replica already held the model and every adapter (no load)."""
    batches: int = 0
    hits: int = 0
    jobs_by_replica: Counter = field(default_factory=Counter)
    lost: int = 0  # batches whose replica stopped mid-run
    # the last batches: (job ids, replica, hit, multiplexed id), for the tests and the benchmark to read
    placements: deque = field(default_factory=lambda: deque(maxlen=1000))

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.batches if self.batches else None


def multiplexed_id(task: GenerateTask) -> str:
    """A job's multiplexed model id: its base model and adapters with their strengths (adapter keys). A batch sent
    to Ray holds jobs of one id alone, so that Serve routes it to a replica holding exactly those adapters."""
    row = task.row
    if row.adapters:
        parts = [f"{name}@{float(strength)!r}" for name, strength in row.adapters]  # exact: as batch_key tells
    else:
        parts = [f"{row.adapter}@1.0"] if row.adapter is not None else []
    return f"{task.model_id}|{'+'.join(parts)}"


def adapters_of(key: str) -> list[str]:
    """The adapter keys of a multiplexed id written by multiplexed_id()."""
    _, _, rest = key.partition("|")
    return [part.rsplit("@", 1)[0] for part in rest.split("+") if part]


def take_batch(pending: list[GenerateTask] | deque, max_batch: Callable[[str], int]) -> list[GenerateTask]:
    """The next batch for a replica: the first job waiting and the next ones with its multiplexed id, up to its
    model's max_batch, from anywhere in the queue (jobs of other adapters it passes are taken by the other
    lanes at the same time). The in-process worker mixes adapters in one batch instead (PEFT's per-row adapter
    names); a replica batch holds one set, or the routing by adapter would mean nothing."""
    key = multiplexed_id(pending[0])
    limit = max_batch(pending[0].model_id)
    return [t for t in pending if multiplexed_id(t) == key][:limit]


class _Lane(_Telling):
    """One batch in flight on one replica; what _BatchRun and _BatchHooks read of a worker."""

    def __init__(self, owner: "RayWorker", index: int):
        self.owner, self.index = owner, index
        self.listener = owner.listener
        self._cond = owner._cond  # one lock over the queue, every lane and the stopping jobs: no job between two
        self._stopping = owner._stopping  # shared: a job id is in one lane at most
        self._running: list[GenerateTask] = []
        self._progress: tuple[int, int] | None = None
        self._ends: dict[int, int] = {}
        self._told: set[int] = set()
        self.replica: str | None = None
        self.response = None  # the Serve response being read (cancelled to stop every row)

    def _measure_step(self, model_id: str, seconds: float) -> None:
        self.owner._measure_step(model_id, seconds)

    def step_seconds(self, model_id: str) -> float | None:
        return self.owner.step_seconds(model_id)


class RayWorker:
    """Generation on Ray Serve replicas behind the Worker protocol. `handle`: the Serve deployment's handle (the
    studio's own, from connect()); `replicas`: how many batches may run at once (one per replica)."""

    def __init__(self, handle, listener: WorkerListener, local: LocalWorker, spec_of: Callable[[str], ModelSpec], *,
                 replicas: int, max_batch: Callable[[str], int], on_close: Callable[[], None] | None = None):
        self.handle, self.listener, self.local = handle, listener, local
        self.on_close = on_close  # leaves the cluster (disconnect) once the lanes are done
        self.spec_of, self.max_batch = spec_of, max_batch
        self._cond = threading.Condition()  # guards _pending, _closed, _step_s, stats, _attempts and every lane
        self._pending: deque[GenerateTask] = deque()
        self._attempts: dict[int, int] = {}  # job -> batches it was sent in that a lost replica never started
        self._stopping: set[int] = set()
        self._step_s: dict[str, float] = {}
        self._closed = False
        self.stats = ReplicaStats()
        self._lanes = [_Lane(self, i) for i in range(max(1, replicas))]
        self._threads: list[threading.Thread] = []

    # ---- the protocol ------------------------------------------------------------------------------------
    def submit(self, *tasks: Task) -> None:
        jobs = [t for t in tasks if isinstance(t, GenerateTask)]
        others = [t for t in tasks if not isinstance(t, GenerateTask)]
        if others:
            self.local.submit(*others)
        if not jobs:
            return
        with self._cond:
            if self._closed:
                raise RuntimeError("the worker is closed")
            self._pending.extend(jobs)
            if not self._threads:  # started on first use
                for lane in self._lanes:
                    thread = threading.Thread(target=self._lane_loop, args=(lane,), daemon=True,
                                              name=f"studio-ray-lane-{lane.index}")
                    thread.start()
                    self._threads.append(thread)
            self._cond.notify_all()
        self.listener.queue_changed()

    def cancel(self, job_id: int) -> Literal["queued", "running"] | None:
        close = None
        with self._cond:
            task = next((t for t in self._pending if t.job_id == job_id), None)
            if task is not None:
                self._pending = deque(t for t in self._pending if t.job_id != job_id)
            lane = next((ln for ln in self._lanes if any(t.job_id == job_id for t in ln._running)), None)
            if lane is not None:
                self._stopping.add(job_id)
                # the replica decodes on until its stream is closed: closed once every row still open is cancelled
                # (a row cancelled alone is dropped here and told cancelled when the batch ends)
                if all(t.job_id in self._stopping or t.job_id in lane._told for t in lane._running):
                    close = lane.response
        if task is not None:
            self.listener.cancelled(job_id)
            self.listener.queue_changed()
            return "queued"
        if lane is not None:
            if close is not None:
                close.cancel()  # the lane sees it as the end of the stream; a lane not yet sending checks _stopping
            return "running"
        return self.local.cancel(job_id)

    def target_model(self) -> str | None:
        return self.local.target_model()

    def pending_jobs(self) -> int:
        with self._cond:
            return len(self._pending)

    def share_cpu(self, threads: int) -> None:
        self.local.share_cpu(threads)  # replicas run on their own machines' cores

    def step_seconds(self, model_id: str) -> float | None:
        with self._cond:
            return self._step_s.get(model_id)

    def _measure_step(self, model_id: str, seconds: float) -> None:
        with self._cond:
            old = self._step_s.get(model_id)
            self._step_s[model_id] = seconds if old is None else 0.9 * old + 0.1 * seconds

    def snapshot(self) -> list[QueueEntry]:
        """Running batches (one per busy replica, with where they run), then the switches and jobs waiting, each
        with an estimate: a waiting batch starts when the earliest lane is free."""
        entries: list[QueueEntry] = []
        free_at = []
        sent: list[GenerateTask] = []
        for lane in self._lanes:
            with self._cond:
                running, progress, ends, replica = list(lane._running), lane._progress, dict(lane._ends), lane.replica
            if not running:
                free_at.append(0.0)
                continue
            per = self.step_seconds(running[0].model_id)
            done, total = progress or (0, max(t.steps() for t in running))
            free_at.append((total - done) * per if per is not None else 0.0)
            if replica is None:  # sent, but no replica has taken it yet (Serve waits for a free one): still waiting
                sent.extend(running)
                continue
            for t in running:
                own = ends.get(t.job_id, total)
                eta = round(max(own - done, 0) * per, 1) if per is not None else None
                entries.append(QueueEntry("generate", "running", 0, t.model_id, t.job_id, eta, min(done, own), own,
                                          len(running), replica=replica))
        local = self.local.snapshot()
        entries += [e for e in local if e.state == "running"]
        queued = [QueueEntry("generate", "queued", 0, t.model_id, t.job_id) for t in sent]
        queued += [e for e in local if e.state == "queued"]
        with self._cond:
            pending = list(self._pending)
        while pending:
            batch = take_batch(pending, self.max_batch)
            taken = {t.job_id for t in batch}
            pending = [t for t in pending if t.job_id not in taken]
            per = self.step_seconds(batch[0].model_id)
            lane = min(range(len(free_at)), key=free_at.__getitem__)
            if per is not None:
                free_at[lane] += max(t.steps() for t in batch) * per
            for t in batch:
                queued.append(QueueEntry("generate", "queued", 0, t.model_id, t.job_id,
                                         round(free_at[lane], 1) if per is not None else None))
        entries += [QueueEntry(**{**e.__dict__, "position": n}) for n, e in enumerate(queued, start=1)]
        return entries

    def close(self, timeout: float = 10.0) -> None:
        """Stop reading the replicas (running jobs are cancelled there; waiting ones stay recorded as queued)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        with self._cond:
            responses = [lane.response for lane in self._lanes if lane.response is not None]
            for lane in self._lanes:
                self._stopping.update(t.job_id for t in lane._running)
        for response in responses:
            response.cancel()
        for thread in self._threads:
            thread.join(timeout)
        self.local.close(timeout)
        on_close, self.on_close = self.on_close, None  # once: a second close must not reach Ray again
        if on_close is not None:
            on_close()

    # ---- one lane per replica ----------------------------------------------------------------------------
    def _lane_loop(self, lane: _Lane) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = take_batch(self._pending, self.max_batch)
                taken = {t.job_id for t in batch}
                self._pending = deque(t for t in self._pending if t.job_id not in taken)
                # in the same critical section: a cancel finds the job waiting or running, never neither
                lane._running, lane._progress, lane._ends, lane._told, lane.replica = batch, None, {}, set(), None
            self.listener.queue_changed()
            try:
                self._run(lane, batch)
            except Exception:  # noqa: BLE001 - a lane outlives any one batch
                log.exception("ray lane crashed")
                for task in batch:
                    if task.job_id not in lane._told:
                        lane._failed(task.job_id, "generation_failed", "Generation failed on the GPU workers.")
            finally:
                with self._cond:
                    self._stopping.difference_update(t.job_id for t in batch)
                    lane._running, lane._progress, lane._ends, lane.response = [], None, {}, None
            self.listener.queue_changed()

    def _run(self, lane: _Lane, batch: list[GenerateTask]) -> None:
        from ray.exceptions import ActorUnavailableError, RayActorError
        from ray.serve.exceptions import RequestCancelledError

        run = _BatchRun(lane, batch, remote=True)  # a row cancelled here is cancelled whatever the replica sent
        handle = self.handle.options(multiplexed_model_id=multiplexed_id(batch[0]), stream=True)
        try:
            response = handle.generate.remote(self.spec_of(batch[0].model_id), batch)
            with self._cond:
                lane.response = response
                cancelled = all(t.job_id in self._stopping for t in batch)
            if cancelled:  # every row was cancelled before the request went out
                response.cancel()
            for event in response:
                if event[0] == "placed":
                    self._placed(lane, batch, event[1], event[2], multiplexed_id(batch[0]))
                    continue
                run.handle(event)
        except RequestCancelledError:
            pass  # every row was cancelled: told below
        except (RayActorError, ActorUnavailableError) as exc:
            self._lost(lane, batch, run, exc)
            return
        run.finish()
        # a stream that ended before the decode started (the replica could not load the model, or every row was
        # cancelled while it waited or loaded): each job still open is told how it ended
        for task in batch:
            if task.job_id in lane._told:
                continue
            if task.job_id in self._stopping:
                lane._cancelled(task.job_id)
            else:
                lane._failed(task.job_id, "generation_failed",
                             f"Generation failed: {run.decode_error or 'the GPU worker sent no result'}.")

    def _placed(self, lane: _Lane, batch: list[GenerateTask], replica: str, hit: bool, key: str) -> None:
        with self._cond:
            lane.replica = replica
            for t in batch:
                self._attempts.pop(t.job_id, None)
            self.stats.placements.append(([t.job_id for t in batch], replica, hit, key))
            self.stats.batches += 1
            self.stats.hits += int(hit)
            self.stats.jobs_by_replica[replica] += len(batch)
        self.listener.queue_changed()

    def _lost(self, lane: _Lane, batch: list[GenerateTask], run: _BatchRun, exc: Exception) -> None:
        """The replica stopped mid-batch: started jobs are interrupted; the others wait again, first in line."""
        log.warning("replica %s stopped during a batch: %s", lane.replica, exc)
        started = {t.job_id for t in run.hooks.tasks} if run.hooks is not None else set()
        with self._cond:
            # put back once: a replica that dies again on the same jobs (a model that never fits, a machine that
            # keeps going away) must not stall the queue for ever
            again = [t for t in batch if t.job_id not in started and t.job_id not in lane._told
                     and t.job_id not in self._stopping and self._attempts.get(t.job_id, 0) < 1]
            queued_again = {t.job_id for t in again}
            for t in batch:
                if t.job_id in queued_again:
                    self._attempts[t.job_id] = self._attempts.get(t.job_id, 0) + 1
                else:
                    self._attempts.pop(t.job_id, None)
            self.stats.lost += 1
            self._pending.extendleft(reversed(again))
            self._cond.notify_all()
        for task in batch:
            if task.job_id in lane._told or task.job_id in queued_again:
                continue
            if task.job_id in self._stopping:
                lane._cancelled(task.job_id)
            else:
                lane._failed(task.job_id, "interrupted", LOST.format(replica=lane.replica or "unknown",
                                                                         job_id=task.job_id))


def app_name(studio_id: str | None) -> str:
    """The studio's Serve application: one per studio, so that two studios on one cluster keep their workers."""
    return f"text2song-{(studio_id or 'studio')[:12]}"


def head_address(address: str) -> str:
    """The Ray head (GCS) that ray.init(address) dials: HOST:PORT as given; for 'auto', RAY_ADDRESS or the address
    the last `ray start` on this machine recorded (else a Ray running here). ConnectionError, in the studio's
    words, when there is none."""
    from ray._private.services import get_ray_address_from_environment

    try:
        return get_ray_address_from_environment(address, None)
    except ConnectionError:
        raise ConnectionError("no Ray cluster runs on this machine: start one (python -m studio.cluster, or ray "
                              "start --head), or name another machine's head: --workers ray:HOST:6379") from None


def check_head(address: str, timeout: float = HEAD_PROBE_S) -> None:
    """ConnectionError, in one line, unless a Ray head answers where ray.init(address) would go: for an address
    nothing answers at (a stopped cluster, a wrong host or port), ray.init waits for ever, printing a warning every
    few seconds, and the studio would never start nor say why."""
    try:
        from ray._private.utils import get_ray_address_file, read_ray_address
    except ImportError:  # another Ray than requirements-ray.txt's: ray.init alone decides
        return
    target = head_address(address)
    if not target or "://" in target:
        return
    host, _, port = target.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "no answer"
        left = (f" (the address the last `ray start` on this machine left in {get_ray_address_file(None)}: that "
                "cluster has stopped)" if address == "auto" and not os.environ.get("RAY_ADDRESS")
                and target == read_ray_address() else "")
        raise ConnectionError(f"no Ray head answers at {target}{left}: {reason.rstrip('.').lower()}") from None


def connect(address: str, *, replicas: int, gpus: float | None, config, project_root: str, name: str):
    """Join (or start) the Ray cluster at `address` ('local': a private one in this process tree; 'auto': the one
    `ray start` runs on this machine; HOST:PORT: a head's GCS) and deploy the studio's workers on it: `replicas`
    replicas of studio.runtime.ray_serve.StudioWorker, each with `gpus` GPUs (None: 1 when the cluster has GPUs,
    else 0). The handle. Ray's own output stays out of the studio's console."""
    import ray
    from ray import serve

    from studio.runtime.ray_serve import StudioWorker

    env = {"PYTHONPATH": os.pathsep.join(p for p in (project_root, os.environ.get("PYTHONPATH")) if p)}
    for variable in ("HF_HOME", "HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_ENDPOINT"):
        if variable in os.environ:  # not `name`: that is the Serve application's
            env[variable] = os.environ[variable]
    options = dict(include_dashboard=False, log_to_driver=False, namespace="text2song", ignore_reinit_error=True,
                   runtime_env={"env_vars": env}, logging_level=logging.WARNING)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its INFO lines would fill the studio's console
    if address == "local":  # a new private cluster, even when `ray start` runs one on this machine
        options.update(num_cpus=max(os.cpu_count() or 1, replicas), object_store_memory=256 * 2**20)
        ray.init(address="local", **options)
    else:
        check_head(address)
        ray.init(address=address, **options)
    have = ray.available_resources().get("GPU", 0)  # free ones: another studio's workers may hold some
    if gpus is None:
        gpus = 1.0 if have >= 1 else 0.0
    if gpus and replicas * gpus > have:  # Serve would wait for them for ever
        ray.shutdown()
        fix = ("--ray-gpus 0 for CPU replicas, or add GPU machines" if not have else
               "use fewer replicas (--ray-replicas) or add GPU machines")
        raise RuntimeError(f"{replicas} replica(s) with {gpus:g} GPU each need {replicas * gpus:g} GPUs; the Ray "
                           f"cluster has {have:g} free: {fix}")
    cpus = 0.0 if gpus else 1.0 / max(replicas, 1)  # CPU replicas: logical shares, torch threads split below
    # CPU replicas: a core's share each, one core left to the studio and Ray's own processes (measured on 2
    # cores: a replica at 2 threads beside them decoded 4 times slower than at 1)
    threads = max(1, ((os.cpu_count() or 1) - 1) // max(replicas, 1)) if not gpus else None
    serve.start(proxy_location="Disabled")
    app = StudioWorker.options(num_replicas=replicas,
                               ray_actor_options={"num_gpus": gpus, "num_cpus": cpus}).bind(config, threads)
    handle = serve.run(app, name=name, route_prefix=None, blocking=False)
    # a studio stopped without closing (Ctrl-C ends uvicorn, then the interpreter) still gives the cluster's GPUs
    # back; before Ray's own exit hook, which runs after this one
    atexit.register(disconnect, name)
    return handle


def disconnect(name: str) -> None:
    """Remove the studio's workers and leave the cluster (a cluster started by connect('local') stops). Safe to
    call again."""
    import ray
    from ray import serve

    if not ray.is_initialized():  # Serve's calls would start a new local Ray
        return
    try:
        serve.delete(name)
    except Exception:  # noqa: BLE001 - the cluster may be gone already
        log.warning("could not remove the Ray Serve workers", exc_info=True)
    ray.shutdown()
