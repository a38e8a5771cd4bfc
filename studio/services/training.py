"""Training runs: LoRA fine-tuning (sft on a dataset, dpo on an A/B test's votes) in a spawned subprocess the
studio supervises, its live events, stop and resume, auditions of every checkpoint through the job queue, and the
registration of any checkpoint as an adapter version with its provenance.

Device policy ("beside"): a run trains beside generation, never instead of it. On a CPU it takes `threads` cores
(default half) at a lower OS priority, so generation keeps the others; on a GPU it shares the device's memory with
the loaded model and fails with out_of_memory, saying so, when there is not enough. One run trains at a time; others
wait (queued). The queue view says which run is training and how.

The supervisor: the service writes the run folder's spec.json (studio/training/layout.py), starts
`python -m studio.training.run <folder>` in its own process group (stdout and stderr to train.log), and a thread per
running run tails events.jsonl (no database session is held while it waits), records step, loss, status and every
checkpoint, and publishes RunEvents to followers. Only this process writes the database. Auditions are ordinary jobs
of the queue (Job.training_run_id, Job.checkpoint_step), with a checkpoint folder as their adapter.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue as stdqueue
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from studio.db.abtests import get_test, pairs_of, votes_of
from studio.db.engine import session_scope
from studio.db.evaluation import scores_of
from studio.db.jobs import get_job
from studio.db.models import Dataset, TrainingRun, as_utc, utcnow
from studio.db.training import (add_run, audition_jobs, checkpoints_of, get_checkpoint, get_run, list_runs,
                                record_checkpoint, runs_with_status, save_run, set_status_if)
from studio.errors import Conflict, InvalidValues, NotFound, QueueFull, StudioError
from studio.gen_settings import MAX_SEED
from studio.runtime.fingerprint import weights_fingerprint
from studio.runtime.memory import cuda_available
from studio.services.adapters import Provenance, _clean_name, training_run_url
from studio.services.generation import GenerateRequest, acting_for, checkpoint_ref
from studio.training import layout
from studio.training.config import TrainingConfig, config_schema, cpu_threads, total_steps
from studio.users import LOCAL_USER

log = logging.getLogger(__name__)

RUNNER = "studio.training.run"  # the module a run's subprocess runs (python -m RUNNER <run folder>)
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the subprocess imports the studio from here
POLL_S = 0.2  # how often a supervisor reads events.jsonl (a step takes longer on any real model)
DB_EVERY_S = 2.0  # step and loss written to the database at most this often (every event reaches followers)
STOP_GRACE_S = 30.0  # a stop waits this long for the checkpoint and the end before the process is killed
KILL_WAIT_S = 5.0
FINISH_ATTEMPTS = 3  # recording a run's end is tried again this often before it is called interrupted
MAX_CURVE_POINTS = 2000  # loss curve points sent with a run (downsampled evenly beyond)
MAX_CACHED_CURVES = 8  # runs whose loss curve is kept in memory between reads (pages poll the runs they show)
METRICS_POINTS = 200  # loss curve points kept in a registered adapter's training_metrics
LOG_TAIL_BYTES = 4000
OVER = ("succeeded", "stopped", "failed", "interrupted")
RESUMABLE = ("stopped", "interrupted", "failed")
STUDIO_STOPPED = "studio_stopped"  # error_code of runs the studio's close() stopped: resumed at the next start
PID_FILE = "pid"  # the studio's own note of the subprocess (a restart ends a leftover one before resuming)

MAX_ID = 2**63 - 1
AuditionStatus = Literal["waiting", "queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
RunStatus = Literal["queued", "running", "stopping", "succeeded", "stopped", "failed", "interrupted"]
DEVICE_POLICY = ("beside: a run trains beside generation (on a CPU with its own share of the cores at a lower "
                 "priority, generation decoding on the others; on a GPU sharing its memory); generation jobs never "
                 "wait for it")


class CreateRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    method: Literal["sft", "dpo"] = Field("sft", description="sft: supervised on a dataset; dpo: preference "
                                                             "tuning on a finished A/B test's votes")
    name: str | None = Field(None, max_length=100, description="the adapter name its versions are registered "
                                                               "under; default: the dataset's or test's name")
    dataset_id: int | None = Field(None, ge=1, le=MAX_ID, description="sft: the dataset")
    abtest_id: int | None = Field(None, ge=1, le=MAX_ID, description="dpo: a closed A/B test with votes")
    start_adapter_id: int | None = Field(None, ge=1, le=MAX_ID, description=(
        "continue training this adapter version; dpo default: the side the votes preferred (none: the base)"))
    config: dict[str, Any] | None = Field(None, description="training configuration (schema: GET "
                                                            "/api/training/config/schema); missing fields: defaults")
    audition_prompts: list[str] | None = Field(None, max_length=8, description=(
        "prompts auditioned at every checkpoint; default: the first captions of the dataset (dpo: the test's "
        "prompts), as many as the configuration's audition_prompts"))
    auto_register: bool = Field(True, description="register the last checkpoint as an adapter version when the "
                                                  "run succeeds")
    description: str = Field("", max_length=2000, description="given to the adapter versions registered from it")


class RegisterCheckpointRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    step: int | None = Field(None, ge=1, le=MAX_ID, description="the checkpoint's step; default: the last one")
    name: str | None = Field(None, max_length=100, description="default: the run's name")
    description: str | None = Field(None, max_length=2000)


class LossPoint(BaseModel):
    step: int
    loss: float
    lr: float
    accuracy: float | None = None  # dpo


class AuditionClip(BaseModel):
    prompt: str
    seed: int
    job_id: int | None = Field(description="null: not queued yet")
    status: AuditionStatus = Field(description="the job's status, or 'waiting' (for the run's base model to be "
                                               "loaded, or for room in the queue)")
    audio_url: str | None
    score: float | None = Field(description="the automatic score (CLAP) when an evaluation model is available")


class CheckpointInfo(BaseModel):
    step: int = Field(description="0: the run's starting point (the base model, or the adapter it started from)")
    loss: float | None
    created_at: datetime | None
    resumable: bool = Field(description="its optimiser state is kept (keep_last): the run can resume from it")
    adapter_id: int | None = Field(description="the adapter version it was registered as")
    adapter_label: str | None
    auditions: list[AuditionClip]
    mean_score: float | None


class RunSummary(BaseModel):
    id: int
    name: str
    method: Literal["sft", "dpo"]
    model_id: str
    status: RunStatus
    step: int
    total_steps: int
    loss: float | None
    eta_s: float | None
    dataset_id: int | None
    dataset_name: str | None
    dataset_version: int | None
    abtest_id: int | None
    adapter_id: int | None = Field(description="the version registered when the run succeeded")
    adapter_label: str | None
    created_by: str
    created_at: datetime
    finished_at: datetime | None
    url: str = Field(description="the run's page link (the adapter timeline's run link)")


class RunInfo(RunSummary):
    config: dict[str, Any]
    dataset_hash: str | None
    start_adapter_id: int | None
    base_model_revision: str | None
    error: str | None
    error_code: str | None
    device_policy: str
    audition_prompts: list[str]
    audition_seeds: list[int]
    checkpoints: list[CheckpointInfo] = Field(description="step 0 (the starting point) first")
    loss_curve: list[LossPoint]
    log_tail: str | None = Field(description="the last lines of the subprocess's output when it failed")


class RunEvent(BaseModel):
    """One Server-Sent Event of GET /api/training/runs/{id}/events."""

    event: Literal["status", "stage", "step", "checkpoint", "audition", "done"]
    run_id: int
    status: RunStatus
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    lr: float | None = None
    accuracy: float | None = None
    eta_s: float | None = None
    fraction: float | None = None
    checkpoint_step: int | None = None
    message: str = ""



def _refuse(field: str, message: str, code: str, **extra) -> InvalidValues:
    return InvalidValues(message, code=code, errors=[{"field": field, "message": message}], **extra)


def _config_errors(exc: ValidationError) -> InvalidValues:
    errors = [{"field": ".".join(["config", *map(str, e["loc"])]), "message": e["msg"]} for e in exc.errors()]
    text = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return InvalidValues(f"The training configuration is not valid: {text}", code="invalid_config", errors=errors)


def _clean_prompt(prompt: str, field: str) -> str:
    text = (prompt or "").strip()
    if not text or len(text) > 1000 or "\x00" in text:
        raise _refuse(field, "Each audition prompt must be 1 to 1000 characters of text.", "invalid_prompt")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(field, "An audition prompt holds a character that is not valid text.", "invalid_prompt") \
            from None
    return text


def resumable_steps(folder: Path) -> list[int]:
    """Checkpoints that kept their optimiser state (a resume continues from the newest)."""
    return [s for s in layout.checkpoint_steps(folder)
            if (layout.checkpoint_folder(folder, s) / layout.TRAINER_STATE_FILE).is_file()]


def downsample(points: list, most: int) -> list:
    """At most `most` points, evenly spread, the first and the last always kept."""
    if len(points) <= most:
        return list(points)
    stride = (len(points) - 1) / (most - 1)
    return [points[round(i * stride)] for i in range(most)]


class _CurveCache:
    """A run's loss curve read from events.jsonl incrementally (a page polls it every second or two; a long run's
    file holds hundreds of thousands of lines): new lines only, the whole file again when it was rewritten."""

    def __init__(self):
        self.ident: tuple[int, int] | None = None
        self.offset = 0
        self.points: dict[int, LossPoint] = {}

    def read(self, path: Path) -> list[LossPoint]:
        try:
            stat = path.stat()
        except FileNotFoundError:
            self.ident, self.offset, self.points = None, 0, {}
            return []
        if (stat.st_ino, stat.st_dev) != self.ident or stat.st_size < self.offset:
            self.ident, self.offset, self.points = (stat.st_ino, stat.st_dev), 0, {}
        events, self.offset = layout.read_events(path, self.offset)
        for e in events:
            if e.kind == "step" and math.isfinite(e.loss):
                self.points[e.step] = LossPoint(step=e.step, loss=e.loss, lr=e.lr, accuracy=e.accuracy)
            elif e.kind == "resumed":  # steps after it are trained again (the trainer cut the file back too)
                self.points = {k: v for k, v in self.points.items() if k <= e.step}
        return [self.points[k] for k in sorted(self.points)]


def loss_curve(folder: Path, up_to: int | None = None) -> list[LossPoint]:
    """The run's steps as events.jsonl holds them now (a resumed run's file is cut back to its checkpoint by the
    trainer, so the curve is one trajectory); the last event of a step wins."""
    curve = _CurveCache().read(Path(folder) / layout.EVENTS_FILE)
    return [p for p in curve if up_to is None or p.step <= up_to]


def log_tail(folder: Path) -> str | None:
    path = Path(folder) / layout.LOG_FILE
    try:
        with open(path, "rb") as f:
            f.seek(max(path.stat().st_size - LOG_TAIL_BYTES, 0))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    return text if text.strip() else None


@dataclasses.dataclass
class _Live:
    """A run this studio's supervisor follows: its process and the latest figures (between database writes)."""

    run_id: int
    name: str
    proc: subprocess.Popen
    folder: Path
    started: float
    threads: int
    device: str
    step: int = 0
    total: int = 0
    loss: float | None = None
    eta_s: float | None = None
    stop_requested: bool = False
    registered: int | None = None  # the adapter version its end registered (auto_register)
    closing: bool = False
    start_ident: tuple[int, int] | None = None  # events.jsonl as it was before the start: not read again
    start_offset: int = 0
    thread: threading.Thread | None = None
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


class TrainingService:
    def __init__(self, engine, registry, store, manager, queue, generation, adapters, datasets, evaluation,
                 data_dir, device: str):
        self.engine, self.registry, self.store, self.manager = engine, registry, store, manager
        self.queue, self.generation, self.adapters, self.datasets = queue, generation, adapters, datasets
        self.evaluation, self.data_dir, self.device = evaluation, Path(data_dir), device
        self.runner = RUNNER
        self._lock = threading.RLock()  # guards _live, _followers, _pending, _closed; serialises starting runs
        self._audition_lock = threading.Lock()  # one submitter of auditions at a time (no clip queued twice)
        self._live: dict[int, _Live] = {}
        self._followers: dict[int, list[stdqueue.SimpleQueue]] = {}
        self._pending: set[int] = set()  # runs whose auditions may be missing (waiting for their model, or full)
        self._closed = False
        self._curve_lock = threading.Lock()
        self._curves: dict[int, _CurveCache] = {}  # loss curves read so far (runs shown since the start)
        queue.training_line = self.training_line  # the queue view says what trains beside it
        # an audition waiting for its model is queued once that model is loaded (never a switch of its own)
        manager.on_model_loaded(lambda: threading.Thread(target=self._flush_auditions, name="auditions",
                                                         daemon=True).start())

    # ---- configuration -------------------------------------------------------------------------------------
    def config_schema(self) -> dict:
        return config_schema()

    # ---- creating --------------------------------------------------------------------------------------------
    def create(self, req: CreateRunRequest, user: str = LOCAL_USER) -> RunInfo:
        """Validate everything, record the run (queued) with its spec.json, and start it when no run trains."""
        try:
            config = TrainingConfig.model_validate(req.config or {})
        except ValidationError as exc:
            raise _config_errors(exc) from None
        if config.device == "cuda" and not cuda_available():
            raise _refuse("config.device", "This machine has no CUDA GPU: train on the CPU (device auto or cpu).",
                          "invalid_config")
        if req.method == "sft":
            if req.abtest_id is not None:
                raise _refuse("abtest_id", "A supervised (sft) run trains on a dataset, not on an A/B test's "
                                           "votes: give dataset_id, or method dpo.", "invalid_method")
            if req.dataset_id is None:
                raise _refuse("dataset_id", "Choose the dataset to train on (dataset_id).", "missing_dataset")
            summary, clips = self.datasets.training_clips(req.dataset_id)
            model_id, default_name = summary.model_id, summary.name
            examples = len(clips)
            clip_refs = [layout.ClipRef(clip_id=c.clip_id, file=str(c.file), caption=c.caption, hash=c.hash)
                         for c in clips]
            pairs: list[layout.PreferencePair] = []
            winner = None
            prompts_default = list(dict.fromkeys(c.caption.strip() for c in clips if c.caption.strip()))
        else:
            if req.dataset_id is not None:
                raise _refuse("dataset_id", "A preference (dpo) run trains on a closed A/B test's votes: give "
                                            "abtest_id, not a dataset.", "invalid_method")
            if req.abtest_id is None:
                raise _refuse("abtest_id", "Choose the closed A/B test whose votes to train on (abtest_id).",
                              "missing_abtest")
            model_id, default_name, pairs, winner, prompts_default = self._preferences(req.abtest_id)
            clip_refs, examples, summary = [], len(pairs), None
        spec = self._model(model_id)
        folder = self.store.local_path(spec)
        if folder is None:
            raise Conflict(f"{spec.display_name} is not on this machine: load it once in Settings (it is "
                           "downloaded then), and create the run again.", code="model_not_available",
                           model_id=spec.id)
        start_id = req.start_adapter_id if req.start_adapter_id is not None else winner
        start_folder = None
        if start_id is not None:
            start_folder = self.adapters.for_generation(start_id, spec, None).folder
        name = _clean_name(req.name or default_name)
        if req.audition_prompts is not None:
            prompts = [_clean_prompt(p, f"audition_prompts.{i}") for i, p in enumerate(req.audition_prompts)]
        else:
            prompts = prompts_default[:config.audition_prompts]
        seeds = [(config.seed + i) % (MAX_SEED + 1) for i in range(len(prompts))]
        weights_hash = weights_fingerprint(folder)
        run = TrainingRun(
            name=name, method=req.method, model_id=spec.id, base_model_revision=spec.source.revision,
            base_weights_hash=weights_hash, dataset_id=req.dataset_id,
            dataset_version=summary.version if summary else None,
            dataset_hash=summary.content_hash if summary else None,
            abtest_id=req.abtest_id, start_adapter_id=start_id, config=config.model_dump(),
            audition_prompts=prompts, audition_seeds=seeds, status="queued", total_steps=total_steps(config, examples),
            folder="", auto_register=req.auto_register, created_by=user, runner=self.queue.runner)
        with session_scope(self.engine) as session:
            run = add_run(session, run)
            run_id = run.id
            run.folder = layout.run_folder(Path("."), run_id).as_posix().removeprefix("./")
            save_run(session, run)
        run_folder = self.data_dir / run.folder
        try:
            run_folder.mkdir(parents=True, exist_ok=False)
            run_spec = layout.RunSpec(
                run_id=run_id, method=req.method, model_id=spec.id, model_folder=str(folder), weights_hash=weights_hash,
                sample_rate=spec.sample_rate, frame_rate=spec.frame_rate, max_clip_s=float(spec.max_duration_s),
                device="cpu", config=config, clips=clip_refs, pairs=pairs,
                start_adapter=str(start_folder) if start_folder else None,
                codes_cache=str(layout.codes_cache(self.data_dir, spec.id, weights_hash)))
            layout.write_json_atomic(run_folder / layout.SPEC_FILE, run_spec)
            (run_folder / "description.txt").write_text(req.description, encoding="utf-8")
        except BaseException:  # all or nothing: no record without its folder
            shutil.rmtree(run_folder, ignore_errors=True)
            with session_scope(self.engine) as session:
                row = get_run(session, run_id)
                if row is not None:
                    session.delete(row)
                    session.commit()
            raise
        self._kick()
        return self.get(run_id)

    def _model(self, model_id: str):
        if model_id not in self.registry.ids():
            raise Conflict(f"The model {model_id!r} is not in the registry any more.", code="model_not_found",
                           model_id=model_id)
        return self.registry.get(model_id)

    def _preferences(self, test_id: int):
        """(model id, name, pairs, winning side's adapter, prompts) of a closed A/B test: each pair with decisive
        votes gives one preference (the majority side's codes chosen); ties and 'none' only are skipped."""
        with session_scope(self.engine) as session:
            test = get_test(session, test_id)
            if test is None:
                raise NotFound(f"There is no A/B test {test_id}.", code="abtest_not_found", abtest_id=test_id)
            if test.closed_at is None:
                raise Conflict(f"A/B test {test.name!r} is not closed: close it (its votes are then final) to train "
                               "on its votes.", code="test_not_closed", abtest_id=test_id)
            votes = votes_of(session, test_id)
            pairs, wins = [], {"a": 0, "b": 0}
            for pair in pairs_of(session, test_id):
                a = sum(v.pair_id == pair.id and v.choice == "a" for v in votes)
                b = sum(v.pair_id == pair.id and v.choice == "b" for v in votes)
                if a == b:
                    continue
                chosen, rejected = (pair.job_a_id, pair.job_b_id) if a > b else (pair.job_b_id, pair.job_a_id)
                jobs = [get_job(session, j) if j is not None else None for j in (chosen, rejected)]
                if any(j is None or not j.codes_file or not (self.data_dir / j.codes_file).is_file() for j in jobs):
                    continue
                wins["a" if a > b else "b"] += max(a, b)
                pairs.append(layout.PreferencePair(prompt=pair.prompt, chosen=str(self.data_dir / jobs[0].codes_file),
                                                   rejected=str(self.data_dir / jobs[1].codes_file),
                                                   votes=max(a, b)))
            if not pairs:
                raise Conflict(f"A/B test {test.name!r} has no pair with a decisive vote (ties and 'no preference' "
                               "teach nothing): collect more votes.", code="no_decisive_pairs", abtest_id=test_id)
            side = test.side_a if wins["a"] >= wins["b"] else test.side_b
            prompts = list(dict.fromkeys(test.prompts))
            return test.model_id, test.name, pairs, (side or {}).get("adapter_id"), prompts

    # ---- reading ---------------------------------------------------------------------------------------------
    def _row(self, session, run_id: int) -> TrainingRun:
        run = get_run(session, run_id) if 1 <= run_id <= MAX_ID else None
        if run is None:
            raise NotFound(f"There is no training run {run_id}.", code="run_not_found", run_id=run_id)
        return run

    def _summary_fields(self, session, run: TrainingRun) -> dict:
        live = self._live_of(run.id)
        dataset = session.get(Dataset, run.dataset_id) if run.dataset_id is not None else None
        return dict(
            id=run.id, name=run.name, method=run.method, model_id=run.model_id, status=run.status,
            step=max(run.step, live.step) if live else run.step, total_steps=(live.total or run.total_steps)
            if live else run.total_steps, loss=live.loss if live and live.loss is not None else run.loss,
            eta_s=live.eta_s if live and run.status == "running" else None, dataset_id=run.dataset_id,
            dataset_name=dataset.name if dataset else None, dataset_version=run.dataset_version,
            abtest_id=run.abtest_id, adapter_id=run.adapter_id, adapter_label=self.adapters.label(run.adapter_id),
            created_by=run.created_by, created_at=as_utc(run.created_at),
            finished_at=as_utc(run.finished_at) if run.finished_at else None, url=training_run_url(run.id))

    def list(self, *, status: str | None = None, model_id: str | None = None) -> list[RunSummary]:
        with session_scope(self.engine) as session:
            return [RunSummary(**self._summary_fields(session, r))
                    for r in list_runs(session, status=status, model_id=model_id)]

    def get(self, run_id: int) -> RunInfo:
        with session_scope(self.engine) as session:
            run = self._row(session, run_id)
            fields = self._summary_fields(session, run)
            folder = self.data_dir / run.folder
            rows = checkpoints_of(session, run_id)
            jobs = audition_jobs(session, run_id)
            scores: dict[int, float] = {}
            for score in scores_of(session, [j.id for j in jobs]):
                scores.setdefault(score.job_id, score.value)
            checkpoints = []
            started = run.started_at is not None or jobs or rows
            for step, cp in ([(0, None)] if started else []) + [(c.step, c) for c in rows]:
                clips = []
                for prompt, seed in zip(run.audition_prompts, run.audition_seeds):
                    job = next((j for j in reversed(jobs) if j.checkpoint_step == step and j.prompt == prompt
                                and j.seed == seed), None)
                    clips.append(AuditionClip(
                        prompt=prompt, seed=seed, job_id=job.id if job else None,
                        status=job.status if job else "waiting",
                        audio_url=f"/api/jobs/{job.id}/audio" if job and job.output_file else None,
                        score=scores.get(job.id) if job else None))
                got = [c.score for c in clips if c.score is not None]
                checkpoints.append(CheckpointInfo(
                    step=step, loss=cp.loss if cp else None, created_at=as_utc(cp.created_at) if cp else None,
                    resumable=step > 0 and (layout.checkpoint_folder(folder, step) / layout.TRAINER_STATE_FILE)
                    .is_file(), adapter_id=cp.adapter_id if cp else None,
                    adapter_label=self.adapters.label(cp.adapter_id) if cp else None, auditions=clips,
                    mean_score=round(sum(got) / len(got), 4) if got else None))
            return RunInfo(
                **fields, config=run.config, dataset_hash=run.dataset_hash, start_adapter_id=run.start_adapter_id,
                base_model_revision=run.base_model_revision, error=run.error, error_code=run.error_code,
                device_policy=DEVICE_POLICY, audition_prompts=run.audition_prompts, audition_seeds=run.audition_seeds,
                checkpoints=checkpoints, loss_curve=downsample(self._curve(run_id, folder), MAX_CURVE_POINTS),
                log_tail=log_tail(folder) if run.status in ("failed", "interrupted") else None)

    # ---- following -------------------------------------------------------------------------------------------
    def _status_event(self, run_id: int) -> RunEvent:
        info = self.get(run_id)
        event = "done" if info.status in OVER else "status"
        return RunEvent(event=event, run_id=run_id, status=info.status, step=info.step, total_steps=info.total_steps,
                        loss=info.loss, eta_s=info.eta_s,
                        message=info.error or f"Run {info.name}: {info.status}, step {info.step} of "
                                              f"{info.total_steps}.")

    def follow(self, run_id: int, keepalive_s: float | None = None) -> Iterator[RunEvent | None]:
        """The run's events from now to its end (None: a keep-alive tick); a run over: its final event."""
        events: stdqueue.SimpleQueue = stdqueue.SimpleQueue()
        with self._lock:
            self._followers.setdefault(run_id, []).append(events)
        try:
            first = self._status_event(run_id)  # NotFound for an unknown run
            yield first
            if first.event == "done":
                return
            while True:
                try:
                    event = events.get(timeout=keepalive_s)
                except stdqueue.Empty:
                    yield None
                    continue
                yield event
                if event.event == "done":
                    return
        finally:
            with self._lock:
                followers = self._followers.get(run_id, [])
                if events in followers:
                    followers.remove(events)
                if not followers:
                    self._followers.pop(run_id, None)

    def _publish(self, event: RunEvent) -> None:
        with self._lock:
            followers = list(self._followers.get(event.run_id, []))
        for f in followers:
            f.put(event)

    def _curve(self, run_id: int, folder: Path) -> list[LossPoint]:
        with self._curve_lock:
            cache = self._curves.pop(run_id, None) or _CurveCache()
            self._curves[run_id] = cache  # the most recently shown last: the oldest go first
            while len(self._curves) > MAX_CACHED_CURVES:
                self._curves.pop(next(iter(self._curves)))
            return cache.read(folder / layout.EVENTS_FILE)

    def _live_of(self, run_id: int) -> _Live | None:
        with self._lock:
            return self._live.get(run_id)

    # ---- starting and supervising ----------------------------------------------------------------------------
    def _kick(self) -> None:
        """Start the oldest queued run when none trains (one run at a time: they share the device)."""
        with self._lock:
            if self._closed or self._live:
                return
            with session_scope(self.engine) as session:
                queued = runs_with_status(session, "queued", runner=self.queue.runner)  # its folder is here
            for run in queued:
                try:
                    self._start(run.id)
                    return
                except Exception as exc:  # noqa: BLE001 - that run fails, saying why; the next one may start
                    log.exception("could not start training run %s", run.id)
                    message = exc.message if isinstance(exc, StudioError) else f"Could not start: {exc}"
                    self._set(run.id, status="failed", error=message, error_code="start_failed",
                              finished_at=utcnow())
                    self._publish(RunEvent(event="done", run_id=run.id, status="failed", message=message))

    def _threads(self, config: TrainingConfig) -> int:
        return cpu_threads(config.threads)

    def _device(self, config: TrainingConfig) -> str:
        if config.device != "auto":
            return config.device
        return str(self.manager.device)

    def _start(self, run_id: int) -> None:
        """Write this start's spec (resume from the newest resumable checkpoint, if any) and spawn the process."""
        with session_scope(self.engine) as session:
            run = self._row(session, run_id)
            folder = self.data_dir / run.folder
            name, total = run.name, run.total_steps
            first_start = run.started_at is None
        spec = layout.RunSpec.model_validate_json((folder / layout.SPEC_FILE).read_text(encoding="utf-8"))
        steps = resumable_steps(folder)
        resume_from = steps[-1] if steps else None
        if resume_from is None:  # a fresh start: no events of an earlier attempt mix into the curve
            (folder / layout.EVENTS_FILE).unlink(missing_ok=True)
        (folder / layout.STOP_FILE).unlink(missing_ok=True)
        threads = self._threads(spec.config)
        spec = spec.model_copy(update={"resume_from": resume_from, "device": self._device(spec.config)})
        layout.write_json_atomic(folder / layout.SPEC_FILE, spec)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
               "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        try:
            before = (folder / layout.EVENTS_FILE).stat()
            start_ident, start_offset = (before.st_ino, before.st_dev), before.st_size
        except FileNotFoundError:
            start_ident, start_offset = None, 0
        started = time.time()  # every event of this start is stamped later (same clock, the child's)
        with open(folder / layout.LOG_FILE, "ab") as logf:
            logf.write(f"---- start {time.strftime('%Y-%m-%d %H:%M:%S')} (resume from {resume_from})\n".encode())
            logf.flush()
            # its own session and process group: a stop or kill reaches the trainer and its children, and a ^C
            # to the server is not the run's (close() stops it, saving a checkpoint)
            proc = subprocess.Popen([sys.executable, "-m", self.runner, str(folder)], cwd=PROJECT_ROOT, env=env,
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        (folder / PID_FILE).write_text(str(proc.pid), encoding="utf-8")
        if not spec.device.startswith("cuda"):
            self.queue.share_cpu(threads)  # the worker decodes on the other cores meanwhile (device policy)
        live = _Live(run_id=run_id, name=name, proc=proc, folder=folder, started=started, threads=threads,
                     device=spec.device, step=resume_from or 0, total=total, start_ident=start_ident,
                     start_offset=start_offset)
        self._set(run_id, status="running", error=None, error_code=None, finished_at=None,
                  **({"started_at": utcnow()} if first_start else {}))
        with self._lock:
            self._live[run_id] = live
            self._pending.add(run_id)
        live.thread = threading.Thread(target=self._supervise, args=(live,), name=f"training-run-{run_id}",
                                       daemon=True)
        live.thread.start()
        self._publish(RunEvent(event="status", run_id=run_id, status="running", step=resume_from or 0,
                               message=f"Resuming from step {resume_from}." if resume_from else "Starting."))
        # step 0 (the starting point) is auditioned by the supervisor's first tick: not here, under the lock

    def _set(self, run_id: int, **fields) -> None:
        with session_scope(self.engine) as session:
            run = get_run(session, run_id)
            if run is None:
                return
            for key, value in fields.items():
                setattr(run, key, value)
            save_run(session, run)

    def _supervise(self, live: _Live) -> None:
        """Tail events.jsonl until the process ends; record and publish what it says. Whatever goes wrong here
        (a database write refused), the run is finished, never left 'running' without a supervisor."""
        done = None
        try:
            done = self._tail(live)
        except Exception:  # noqa: BLE001 - the process is ended; the run is recorded as interrupted (resumable)
            log.exception("training run %s: its supervisor failed", live.run_id)
            self._kill(live.proc)
        try:
            live.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:  # said it is done but does not end: ended here
            self._kill(live.proc)
        for attempt in range(FINISH_ATTEMPTS):
            try:
                self._finish(live, done)
                return
            except Exception:  # noqa: BLE001 - e.g. the database busy for long on a loaded machine: again
                log.exception("training run %s: could not record its end (attempt %d)", live.run_id, attempt + 1)
                time.sleep(POLL_S * 5)
        # said in the log; the page shows it interrupted (resumable) rather than 'stopping' for ever
        with self._lock:
            self._live.pop(live.run_id, None)
        try:
            self._set(live.run_id, status="interrupted", error="The end of the run could not be recorded; resume it "
                      "to go on from its last checkpoint.", error_code="process_died", finished_at=utcnow())
        except Exception:  # noqa: BLE001 - the next start finds it 'running' and resumes it
            log.exception("training run %s: could not record it interrupted", live.run_id)

    def _tail(self, live: _Live) -> layout.DoneEvent | None:
        """Events of this start only: the file as it was before the process started is skipped; a trainer that
        resumes replaces the file (kept up to its checkpoint), which is then read from its start, and the events
        it kept (older than this start) are not recorded again."""
        path = live.folder / layout.EVENTS_FILE
        ident, offset = live.start_ident, live.start_offset
        done, last_db = None, 0.0
        while done is None:
            exited = live.proc.poll() is not None
            for _ in range(2 if exited else 1):  # once more after the end: what it wrote as it ended
                try:
                    stat = path.stat()
                    if (stat.st_ino, stat.st_dev) != ident or stat.st_size < offset:
                        ident, offset = (stat.st_ino, stat.st_dev), 0
                except FileNotFoundError:
                    pass
                events, offset = layout.read_events(path, offset)
                for event in events:
                    if event.time < live.started:
                        continue
                    try:
                        done = self._handle(live, event) or done
                    except Exception:  # noqa: BLE001 - one event not recorded; the run goes on
                        log.exception("training run %s: could not record %s", live.run_id, event.kind)
            if exited or done is not None:
                return done
            if time.monotonic() - last_db >= DB_EVERY_S:
                last_db = time.monotonic()
                self._set(live.run_id, step=live.step, loss=live.loss, total_steps=live.total)
                with self._lock:
                    pending = live.run_id in self._pending
                if pending:
                    self._flush_auditions_aside(live.run_id)
            live.done.wait(POLL_S)
        return done

    def _handle(self, live: _Live, event) -> layout.DoneEvent | None:
        run_id = live.run_id
        if event.kind == "step":
            live.step, live.total, live.loss, live.eta_s = event.step, event.total_steps, event.loss, event.eta_s
            self._publish(RunEvent(event="step", run_id=run_id, status="stopping" if live.stop_requested else
                                   "running", step=event.step, total_steps=event.total_steps, loss=event.loss,
                                   lr=event.lr, accuracy=event.accuracy, eta_s=event.eta_s,
                                   message=f"Step {event.step} of {event.total_steps}"))
        elif event.kind == "stage":
            self._publish(RunEvent(event="stage", run_id=run_id, status="running", fraction=event.fraction,
                                   message=event.message))
        elif event.kind == "checkpoint":
            folder = (live.folder / layout.CHECKPOINTS_DIR / event.folder).relative_to(self.data_dir).as_posix()
            with session_scope(self.engine) as session:
                record_checkpoint(session, run_id, event.step, event.loss, folder)
                run = get_run(session, run_id)
                run.step = max(run.step, event.step)
                save_run(session, run)
            with self._lock:
                self._pending.add(run_id)
            self._publish(RunEvent(event="checkpoint", run_id=run_id, status="running", step=event.step,
                                   checkpoint_step=event.step, loss=event.loss,
                                   message=f"Checkpoint at step {event.step}"))
            self._flush_auditions_aside(run_id)
        elif event.kind == "resumed":
            live.step = event.step
            self._publish(RunEvent(event="status", run_id=run_id, status="running", step=event.step,
                                   message=f"Resumed after step {event.step}."))
        elif event.kind == "done":
            return event
        return None

    def _finish(self, live: _Live, done: layout.DoneEvent | None) -> None:
        run_id = live.run_id
        code = live.proc.returncode
        self.queue.share_cpu(0)  # the worker has every core again (one run trains at a time)
        if done is not None and done.status == "stopped" and live.closing:
            status, error, error_code = "interrupted", "The studio stopped; the run goes on at its next start.", \
                STUDIO_STOPPED
        elif done is not None:
            status = done.status
            error = done.message if done.status == "failed" else None
            error_code = (done.code or "training_failed") if done.status == "failed" else None
        elif live.closing:
            status, error, error_code = "interrupted", "The studio stopped; the run goes on at its next start.", \
                STUDIO_STOPPED
        elif live.stop_requested:
            status, error, error_code = "stopped", ("The run did not stop in time and was ended; it resumes from "
                                                    "its last checkpoint."), None
        else:
            status, error, error_code = "interrupted", (
                f"The training process ended without finishing (exit code {code}); resume it to go on from its "
                "last checkpoint."), "process_died"
        step = done.step if done is not None else live.step
        message = error or {"succeeded": "Training finished.", "stopped": "Stopped: resume it to go on."}.get(
            status, status)
        with session_scope(self.engine) as session:
            auto = get_run(session, run_id).auto_register and status == "succeeded"
        adapter_id = live.registered
        if auto and adapter_id is None:  # before the status says succeeded: whoever sees it succeeded sees its adapter
            try:  # (once: when recording the end is tried again, the version registered stays the one)
                info = self.register(run_id, RegisterCheckpointRequest())
                adapter_id = live.registered = info.id
                message += f" Registered as {info.label}."
            except StudioError as exc:
                log.warning("training run %s: not registered: %s", run_id, exc.message)
                error, error_code = f"Trained, but not registered: {exc.message}", exc.code
                message += f" Not registered: {exc.message}"
        with session_scope(self.engine) as session:
            run = get_run(session, run_id)
            run.status, run.error, run.error_code = status, error, error_code
            run.step, run.loss = max(step, 0), live.loss if live.loss is not None else run.loss
            if live.total:
                run.total_steps = live.total
            if adapter_id is not None:
                run.adapter_id = adapter_id
            run.finished_at = utcnow()
            save_run(session, run)
        (live.folder / PID_FILE).unlink(missing_ok=True)
        with self._lock:
            self._live.pop(run_id, None)
        self._flush_auditions(run_id)
        self._publish(RunEvent(event="done", run_id=run_id, status=status, step=step, total_steps=live.total or None,
                               loss=live.loss, message=message))
        self._kick()

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        """The whole process group: first asked (SIGTERM), then ended (SIGKILL)."""
        for sig, wait in ((signal.SIGTERM, KILL_WAIT_S), (signal.SIGKILL, KILL_WAIT_S)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            try:
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _stop_live(self, live: _Live, grace_s: float = STOP_GRACE_S) -> None:
        """Ask through the stop file; wait for the checkpoint and the end; end the process when it does not."""
        live.stop_requested = True
        try:
            (live.folder / layout.STOP_FILE).touch()
        except OSError:
            log.exception("training run %s: could not write its stop file", live.run_id)
        if live.thread is not None:
            live.thread.join(grace_s)
        if live.thread is not None and live.thread.is_alive():
            self._kill(live.proc)
            live.done.set()
            live.thread.join(STOP_GRACE_S)

    # ---- stop, resume, restart ---------------------------------------------------------------------------------
    def stop(self, run_id: int, user: str = LOCAL_USER) -> RunInfo:
        """Ask the run to stop; returns once it saved its checkpoint and ended (a few seconds at most), or at once
        for a queued run (which then never starts)."""
        log.info("training run %s: stop asked by %s", run_id, user)  # no column records it yet
        with self._lock:
            live = self._live.get(run_id)
            with session_scope(self.engine) as session:
                run = self._row(session, run_id)
                status = run.status
                if live is None and status == "queued":
                    run.status, run.finished_at = "stopped", utcnow()
                    save_run(session, run)
        if live is None and status == "queued":
            self._publish(RunEvent(event="done", run_id=run_id, status="stopped", message="Stopped before it "
                                                                                           "started."))
            return self.get(run_id)
        if live is None:
            if status in ("running", "stopping"):  # a run of a studio that stopped, not taken up (yet)
                self._set(run_id, status="interrupted", error="Not running any more.", error_code="process_died",
                          finished_at=utcnow())
                return self.get(run_id)
            raise Conflict(f"Training run {run_id} is {status}: there is nothing to stop.", code="run_not_running",
                           run_id=run_id, status=status)
        with session_scope(self.engine) as session:  # not over an end recorded meanwhile
            set_status_if(session, run_id, ("running",), "stopping")
        self._publish(RunEvent(event="status", run_id=run_id, status="stopping", step=live.step,
                               message="Stopping: saving a checkpoint."))
        self._stop_live(live)
        return self.get(run_id)

    def resume(self, run_id: int, user: str = LOCAL_USER) -> RunInfo:
        """A stopped, interrupted or failed run goes on from its last resumable checkpoint (queued again)."""
        log.info("training run %s: resume asked by %s", run_id, user)  # no column records it yet
        with self._lock:
            with session_scope(self.engine) as session:
                run = self._row(session, run_id)
                if run.runner not in (None, self.queue.runner):
                    raise Conflict(f"Training run {run_id} belongs to another studio sharing this database (its "
                                   "files are in that studio's data directory): resume it there.",
                                   code="run_of_another_studio", run_id=run_id)
                if run.status not in RESUMABLE:
                    raise Conflict(f"Training run {run_id} is {run.status}: only a stopped, interrupted or failed run "
                                   "resumes.", code="run_not_resumable", run_id=run_id, status=run.status)
                run.status, run.error, run.error_code, run.finished_at = "queued", None, None, None
                save_run(session, run)
            self._publish(RunEvent(event="status", run_id=run_id, status="queued", message="Queued to resume."))
            self._kick()
        return self.get(run_id)

    def resume_interrupted(self) -> list[int]:
        """At start: the runs that were running when the studio stopped go on from their last checkpoint; queued
        runs start; auditions still missing are queued when their model is."""
        resumed = []
        with session_scope(self.engine) as session:
            rows = runs_with_status(session, "running", "stopping", "interrupted", runner=self.queue.runner)
            todo = [(r.id, self.data_dir / r.folder) for r in rows
                    if r.status != "interrupted" or r.error_code == STUDIO_STOPPED]
            every = [r.id for r in list_runs(session)]
        for run_id, folder in todo:
            if self._live_of(run_id) is not None:
                continue
            self._end_leftover(folder)
            self._record_missed_checkpoints(run_id, folder)
            self._set(run_id, status="queued", error=None, error_code=None, finished_at=None)
            resumed.append(run_id)
        with self._lock:
            self._pending.update(every)
        if resumed:
            log.info("resuming %d training run(s) open when the studio stopped: %s", len(resumed),
                     ", ".join(map(str, resumed)))
        self._kick()
        self._flush_auditions()
        return resumed

    def _record_missed_checkpoints(self, run_id: int, folder: Path) -> None:
        """Checkpoints the trainer saved while the studio was down (its events were written, nobody read them): recorded
        now, so they are auditioned and can be registered like the others."""
        events, _ = layout.read_events(folder / layout.EVENTS_FILE, 0)
        new = False
        for event in events:
            if event.kind != "checkpoint" or not (folder / layout.CHECKPOINTS_DIR / event.folder).is_dir():
                continue
            where = (folder / layout.CHECKPOINTS_DIR / event.folder).relative_to(self.data_dir).as_posix()
            with session_scope(self.engine) as session:
                new = record_checkpoint(session, run_id, event.step, event.loss, where) or new
        if new:
            with self._lock:
                self._pending.add(run_id)

    def _end_leftover(self, folder: Path) -> None:
        """A trainer that outlived a killed studio: asked to stop (checkpoint), then ended, before the resume."""
        try:
            pid = int((folder / PID_FILE).read_text(encoding="utf-8").strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except (OSError, ValueError):
            return
        if str(folder) not in cmdline:  # the pid was reused by something else
            return
        (folder / layout.STOP_FILE).touch()
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        """The studio stops: running runs are stopped (checkpoint saved) and stay resumable."""
        with self._lock:
            self._closed = True
            lives = list(self._live.values())
        for live in lives:
            live.closing = True
        threads = [threading.Thread(target=self._stop_live, args=(live,), daemon=True) for live in lives]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # ---- queue view ------------------------------------------------------------------------------------------
    def training_line(self) -> str | None:
        """What the queue view says about training (None: no run trains)."""
        with self._lock:
            lives = list(self._live.values())
        if not lives:
            return None
        live = lives[0]
        where = (f"on the CPU with {live.threads} thread(s) at a lower priority" if live.device == "cpu"
                 else f"on {live.device}, sharing its memory")
        progress = f"step {live.step} of {live.total}" if live.total else "starting"
        loss = f", loss {live.loss:.3f}" if live.loss is not None else ""
        eta = f", about {live.eta_s:.0f} s left" if live.eta_s is not None else ""
        return (f"Training {live.name} (run {live.run_id}): {progress}{loss}{eta}; beside generation {where} "
                "(generation jobs do not wait for it).")

    # ---- auditions -------------------------------------------------------------------------------------------
    def _flush_auditions_aside(self, run_id: int) -> None:
        """_flush_auditions on a thread of its own: a supervisor never waits on the queue or the scorer (a stop's end
        is recorded at once). A flush under way already: the run stays pending, the supervisor's next tick retries."""
        if not self._audition_lock.locked():
            threading.Thread(target=self._flush_auditions, args=(run_id,), name=f"auditions-{run_id}",
                             daemon=True).start()

    def _flush_auditions(self, run_id: int | None = None) -> None:
        """Queue the auditions not queued yet (step 0 once a run started, and each checkpoint) of the pending runs
        whose base model is the one the queue runs; the others wait for it (no switch is ever queued for them)."""
        with self._audition_lock:
            with self._lock:
                todo = sorted(self._pending) if run_id is None else [run_id] if run_id in self._pending else []
            target = self.queue.target_model()
            for rid in todo:
                try:
                    if self._submit_auditions(rid, target):
                        with self._lock:
                            self._pending.discard(rid)
                except Exception:  # noqa: BLE001 - auditions are a view on the run: never its failure
                    log.exception("training run %s: could not queue its auditions", rid)

    def _submit_auditions(self, run_id: int, target: str | None) -> bool:
        """True when nothing is left to queue for this run now."""
        with session_scope(self.engine) as session:
            run = get_run(session, run_id)
            if run is None or not run.audition_prompts:
                return True
            started = run.started_at is not None
            steps = ([0] if started else []) + [c.step for c in checkpoints_of(session, run_id)]
            have = {j.checkpoint_step for j in audition_jobs(session, run_id)}
            missing = [s for s in steps if s not in have]
            prompts, seeds, model_id, start_id = run.audition_prompts, run.audition_seeds, run.model_id, \
                run.start_adapter_id
            duration, user = float(run.config.get("audition_duration_s", 4.0)), run.created_by
        if not missing:
            return run.status in OVER
        if target != model_id:
            return False  # waiting: queued when its model is loaded
        spec = self.registry.get(model_id)
        duration = min(duration, float(spec.max_duration_s))
        for step in missing:
            adapter = checkpoint_ref(self.data_dir, run_id, step) if step else None
            plans = []
            for prompt, seed in zip(prompts, seeds):
                req = GenerateRequest(prompt=prompt, duration_s=duration, seed=seed,
                                      adapter_id=start_id if step == 0 else None)
                plan = self.generation.plan(req, acting_for(user))[0]
                plans.append(dataclasses.replace(plan, adapter=adapter if step else plan.adapter,
                                                 training_run_id=run_id, checkpoint_step=step))
            try:
                ids = self.queue.accept(plans)
            except QueueFull:
                return False  # tried again at the next checkpoint, or the supervisor's next tick
            except Conflict as exc:
                if exc.code != "model_changed":
                    raise
                return False  # a switch came first: queued when the run's model is loaded again
            self.evaluation.request_scores(ids)
        return run.status in OVER

    # ---- registration ----------------------------------------------------------------------------------------
    def register(self, run_id: int, req: RegisterCheckpointRequest, user: str | None = None):
        """A checkpoint becomes an adapter version with its provenance (an AdapterInfo), registered by `user`
        (None: the run's creator, as at its automatic registration when it succeeds)."""
        with session_scope(self.engine) as session:
            run = self._row(session, run_id)
            folder = self.data_dir / run.folder
            steps = layout.checkpoint_steps(folder)
            if not steps:
                raise Conflict(f"Training run {run.name!r} has no checkpoint yet.", code="no_checkpoint",
                               run_id=run_id)
            step = req.step if req.step is not None else steps[-1]
            if step not in steps:
                raise NotFound(f"Training run {run.name!r} has no checkpoint at step {step} (it has "
                               f"{', '.join(map(str, steps))}).", code="checkpoint_not_found", run_id=run_id,
                               steps=steps)
            cp = get_checkpoint(session, run_id, step)
            if cp is not None and cp.adapter_id is not None and self.adapters.label(cp.adapter_id) not in (
                    None, "Deleted Adapter"):
                raise Conflict(f"Checkpoint {step} of {run.name!r} is registered already, as "
                               f"{self.adapters.label(cp.adapter_id)}.", code="checkpoint_registered",
                               adapter_id=cp.adapter_id)
            dataset = session.get(Dataset, run.dataset_id) if run.dataset_id is not None else None
            if dataset is not None:
                what = f"{dataset.name} v{run.dataset_version} (sha256:{(run.dataset_hash or '')[:16]}…)"
            elif run.abtest_id is not None:
                test = get_test(session, run.abtest_id)
                what = f"votes of A/B test {test.name if test else run.abtest_id} (id {run.abtest_id})"
            else:
                what = None
            config = {**run.config, "method": run.method, "base_model": run.model_id,
                      "start_adapter_id": run.start_adapter_id, "checkpoint_step": step}
            if run.abtest_id is not None:
                config["abtest_id"] = run.abtest_id
            trained_at = as_utc(cp.created_at) if cp is not None else utcnow()
            name, description = req.name or run.name, req.description
            model_id, revision, weights = run.model_id, run.base_model_revision, run.base_weights_hash
            user = user or run.created_by
        if description is None:
            path = folder / "description.txt"
            description = path.read_text(encoding="utf-8") if path.is_file() else ""
        provenance = Provenance(training_dataset=what, training_config=config,
                                training_metrics=self._metrics(folder, step), base_model_revision=revision,
                                base_weights_hash=weights, training_run_id=str(run_id), trained_at=trained_at)
        info = self.adapters.register_checkpoint(layout.checkpoint_folder(folder, step), name=name,
                                                 description=description, base_model=model_id, provenance=provenance,
                                                 user=user, step=step)
        with session_scope(self.engine) as session:
            cp = get_checkpoint(session, run_id, step)
            if cp is None:
                record_checkpoint(session, run_id, step, None,
                                  layout.checkpoint_folder(folder, step).relative_to(self.data_dir).as_posix())
                cp = get_checkpoint(session, run_id, step)
            cp.adapter_id = info.id
            session.add(cp)
            session.commit()
        return info

    @staticmethod
    def _metrics(folder: Path, step: int) -> dict:
        """The loss curve up to the checkpoint, summarised (first, last, min) and downsampled."""
        curve = loss_curve(folder, up_to=step)
        if not curve:
            return {"steps": step}
        losses = [p.loss for p in curve]
        kept = downsample(curve, METRICS_POINTS)
        metrics = {"steps": step, "first_loss": losses[0], "final_loss": losses[-1], "min_loss": min(losses),
                   "loss": [round(p.loss, 6) for p in kept], "loss_steps": [p.step for p in kept]}
        accuracies = [p.accuracy for p in curve if p.accuracy is not None]
        if accuracies:
            metrics["final_accuracy"] = accuracies[-1]
        return metrics
