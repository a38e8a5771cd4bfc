"""Automatic scores and evaluation runs.

The score of a clip is its text-audio agreement: the cosine of an evaluation model's (a CLAP's) embeddings of the
job's prompt and of its audio, in [-1, 1]; higher means the clip fits its prompt better. Scores are stored once per
job and evaluation model. The CLAP runs in the worker (a ScoreTask, in queue order between generations), so it never
races generation for the device.

An evaluation run generates the fixed evaluation prompt set (studio/eval_prompts.yaml: prompts with fixed seeds, a
fixed short duration) with a model or an adapter version through the job queue, scores every clip and stores the
mean and count. Two runs on the same prompts and seeds (the base model and an adapter, or two versions) are compared
clip by clip (`paired_scores`, `compare`). A run survives a restart: clips still queued run again, clips that were
running are generated again (same prompt and seed) when their model is loaded, otherwise the run is recorded as
failed saying so.
"""
from __future__ import annotations

import logging
import math
import queue as stdqueue
import threading
from pathlib import Path
from typing import Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from studio.db.engine import session_scope
from studio.db.evaluation import (add_score, create_evaluation, finish_evaluation, get_evaluation, get_score,
                                  jobs_of_evaluation, list_evaluations, scores_of)
from studio.db.jobs import find_job, get_job
from studio.db.models import Evaluation, Job, UTCTimestamp
from studio.errors import Conflict, NotFound, OperationFailed, StudioError
from studio.gen_settings import MAX_SEED
from studio.registry import EvaluationModelSpec, Registry
from studio.runtime.progress import ProgressEvent
from studio.runtime.store import ModelStore
from studio.runtime.worker import ScoreTask
from studio.services.adapters import AdapterService
from studio.services.generation import GenerationService, JobRequest, acting_for
from studio.services.jobs import JobService
from studio.services.queue import JobQueue
from studio.services.stats import TwoSampleTest, wilcoxon_paired
from studio.users import LOCAL_USER, Actor

log = logging.getLogger(__name__)

PROMPTS_FILE = Path(__file__).resolve().parent.parent / "eval_prompts.yaml"
POLL_S = 0.25  # how often a run looks at its jobs (a short read; clips take seconds)
OVER = ("succeeded", "failed", "cancelled", "interrupted")

EvaluationStatus = Literal["running", "succeeded", "failed", "cancelled"]


# ---- the prompt set ------------------------------------------------------------------------------------------
class EvaluationPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)  # jobs store prompts stripped

    prompt: str = Field(min_length=1, max_length=1000)
    seed: int = Field(ge=0, le=MAX_SEED)


class PromptSet(BaseModel):
    """The fixed evaluation prompt set: every run generates each prompt with its seed, duration_s long."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float = Field(gt=0, le=30)
    prompts: list[EvaluationPrompt] = Field(min_length=1, max_length=64)


def load_prompt_set(path: Path = PROMPTS_FILE) -> PromptSet:
    return PromptSet.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))


# ---- public records ------------------------------------------------------------------------------------------
class EvaluationModelInfo(BaseModel):
    id: str
    display_name: str
    description: str
    kind: Literal["clap"]
    hub_repo: str | None
    revision: str | None
    builtin: bool
    parameters: int
    sample_rate: int = Field(description="clips are resampled to this rate before scoring")
    memory_gb: float
    download_gb: float
    available: bool = Field(description="on this machine (built-in models are built on first use)")
    in_use: bool = Field(description="the model that scores clips now")


class EvaluationModels(BaseModel):
    models: list[EvaluationModelInfo]
    current: str | None = Field(description="the evaluation model in use (None: scores are not available)")
    note: str = Field(description="why this one is in use, or what to do to get one, for a person")


class ScoreInfo(BaseModel):
    job_id: int
    scorer: str = Field(description="the evaluation model that scored the clip")
    value: float = Field(description="text-audio agreement: cosine of the CLAP's prompt and audio embeddings, "
                                     "-1 to 1 (higher: the clip fits its prompt better)")
    created_at: UTCTimestamp


class EvaluationClip(BaseModel):
    position: int = Field(description="0, 1, ... in the prompt set's order")
    prompt: str
    seed: int
    job_id: int | None = Field(description="the job that made the clip (the latest, if it was run again)")
    status: Literal["pending", "queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    score: float | None


class EvaluationInfo(BaseModel):
    id: int
    model_id: str
    adapter_id: int | None = Field(description="None: the base model")
    adapter_label: str | None = Field(description="'name vN', or 'Deleted Adapter'")
    scorer: str = Field(description="the evaluation model that scores the clips")
    status: EvaluationStatus
    error: str | None
    mean_score: float | None = Field(description="mean score of the clips scored (None until the run is over)")
    n: int = Field(description="clips scored")
    total: int = Field(description="clips in the run (the prompt set)")
    done: int = Field(description="clips over (generated and scored, or failed)")
    duration_s: float
    created_by: str
    created_at: UTCTimestamp
    finished_at: UTCTimestamp | None
    clips: list[EvaluationClip]


class EvaluationComparison(BaseModel):
    a: int = Field(description="evaluation run A")
    b: int = Field(description="evaluation run B")
    pairs: list[tuple[float, float]] = Field(description="(score in A, score in B) of each clip both runs scored, "
                                                         "matched by prompt and seed")
    test: TwoSampleTest = Field(description="two-sided Wilcoxon signed-rank test on the pairs")


class EvaluationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model_id: str | None = Field(None, min_length=1, max_length=64, description=(
        "the base model (it must be the model loaded, or the one the queue will load next); none: that one"))
    adapter_id: int | None = Field(None, ge=1, le=2**63 - 1, description="an adapter version of it; none: the base")


def _size(gb: float) -> str:
    return f"{gb:.1f} GB" if gb >= 1 else f"{max(gb * 1024, 1):.0f} MB"


def _no_evaluation_model(registry: Registry, chosen: EvaluationModelSpec | None = None) -> Conflict:
    if not registry.evaluation_models:
        return Conflict("No evaluation model is available: registry.yaml lists none (add an evaluation_models "
                        "entry).", code="no_evaluation_model")
    default = (registry.evaluation_model(registry.default_evaluation_model)
               if registry.default_evaluation_model else registry.evaluation_models[0])
    get = (f"download {default.display_name} (about {_size(default.download_gb)}) in Settings > Evaluation or with "
           f"POST /api/evaluation/models/current {{\"model_id\": \"{default.id}\"}}")
    builtin = next((s for s in registry.evaluation_models if s.is_builtin), None)
    offline = (f"; offline, start the studio with --eval-model {builtin.id} (random weights: its scores mean "
               "nothing)") if builtin else ""
    if chosen is not None:
        return Conflict(f"No evaluation model is available: {chosen.display_name} is chosen for scores but is not "
                        f"on this machine. To score clips, {get}{offline}.", code="no_evaluation_model",
                        model_id=chosen.id)
    return Conflict(f"No evaluation model is available. To score clips, {get}{offline}.",
                    code="no_evaluation_model")


class EvaluationService:
    def __init__(self, engine, registry: Registry, store: ModelStore, queue: JobQueue, generation: GenerationService,
                 adapters: AdapterService, data_dir: Path, eval_model: str | None = None,
                 prompt_set: PromptSet | None = None):
        self.engine, self.registry, self.store, self.queue = engine, registry, store, queue
        self.generation, self.adapters = generation, adapters
        self.data_dir = Path(data_dir)
        self.prompt_set = prompt_set or load_prompt_set()
        if eval_model is not None:
            registry.evaluation_model(eval_model)  # NotFound, naming the known ones
        self._lock = threading.Lock()  # guards _selected, _runs, _cancelled
        self._selected = eval_model  # chosen by --eval-model or POST /api/evaluation/models/current
        self._runs: dict[int, threading.Thread] = {}  # evaluation runs followed by this studio
        self._cancelled: set[int] = set()
        self._stop = threading.Event()

    # ---- evaluation models ---------------------------------------------------------------------------------
    def current_model(self) -> EvaluationModelSpec | None:
        """The evaluation model that scores clips: the one chosen (--eval-model, or chosen since), else the
        registry's default once it is on this machine; None when there is none."""
        with self._lock:
            chosen = self._selected
        if chosen is not None:
            return self.registry.evaluation_model(chosen)
        default = self.registry.default_evaluation_model
        if default is not None and self.store.available(self.registry.evaluation_model(default)):
            return self.registry.evaluation_model(default)
        return None

    def models(self) -> EvaluationModels:
        current = self.current_model()
        infos = [EvaluationModelInfo(
            id=s.id, display_name=s.display_name, description=s.description, kind=s.kind, hub_repo=s.source.hub,
            revision=s.source.revision, builtin=s.is_builtin, parameters=s.parameters, sample_rate=s.sample_rate,
            memory_gb=s.memory_gb, download_gb=s.download_gb, available=self.store.available(s),
            in_use=current is not None and current.id == s.id and self.store.available(s))
            for s in self.registry.evaluation_models]
        if current is None or not self.store.available(current):
            note = _no_evaluation_model(self.registry, current).message
            return EvaluationModels(models=infos, current=None, note=note)
        with self._lock:
            chosen = self._selected is not None
        why = "it was chosen" if chosen else "it is the studio's default evaluation model and is on this machine"
        tiny = " Its weights are random: its scores mean nothing." if current.is_builtin else ""
        return EvaluationModels(models=infos, current=current.id,
                                note=f"{current.display_name} scores clips: {why}.{tiny}")

    def use_model(self, model_id: str) -> Iterator[ProgressEvent]:
        """Make `model_id` the evaluation model, downloading (byte progress) or building it first; its progress
        events, the last one 'ready' or 'error'. NotFound before anything starts. It loads onto the device at its
        first score."""
        spec = self.registry.evaluation_model(model_id)
        events: stdqueue.SimpleQueue[ProgressEvent] = stdqueue.SimpleQueue()

        def on_bytes(done: int, total: int) -> None:
            pct = f" ({done / total:.0%})" if total else ""
            events.put(ProgressEvent("downloading", f"Downloading {spec.display_name}: {done / 2**20:.0f} MB of "
                                                    f"{total / 2**20:.0f} MB{pct}", spec.id,
                                     fraction=done / total if total else None, bytes_done=done, bytes_total=total))

        def run() -> None:
            try:
                events.put(ProgressEvent("checking", f"Checking {spec.display_name}", spec.id, fraction=0.0))
                if not self.store.available(spec):
                    events.put(ProgressEvent("downloading", f"Downloading {spec.display_name} (about "
                                                            f"{_size(spec.download_gb)})", spec.id, fraction=0.0))
                elif spec.is_builtin and self.store.local_path(spec) is None:
                    events.put(ProgressEvent("loading", f"Building {spec.display_name} on this machine", spec.id,
                                             fraction=0.0))
                self.store.fetch(spec, on_bytes)
                if not self.store.available(spec):  # the hub copy lacks config.json or safetensors weights
                    raise Conflict(f"{spec.source.hub} has no config.json with safetensors weights; the studio never "
                                   "loads pickled weights.", code="no_safetensors")
            except Exception as exc:  # noqa: BLE001 - network, disk, hub errors: said in the stream's last event
                reason = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
                events.put(ProgressEvent("error", f"Could not get {spec.display_name}: {reason}", spec.id,
                                         code=exc.code if isinstance(exc, StudioError) else "download_failed"))
                return
            with self._lock:
                self._selected = spec.id
            events.put(ProgressEvent("ready", f"{spec.display_name} scores clips now.", spec.id, fraction=1.0))

        threading.Thread(target=run, name=f"eval-model-{spec.id}", daemon=True).start()
        return _drain(events)

    def _scorer(self) -> tuple[EvaluationModelSpec, Path]:
        """The evaluation model in use and its folder, or Conflict no_evaluation_model saying how to get one."""
        spec = self.current_model()
        if spec is None or not self.store.available(spec):
            raise _no_evaluation_model(self.registry, spec)
        return spec, self.store.fetch(spec, lambda done, total: None)  # builds a built-in one on first use

    # ---- scores ------------------------------------------------------------------------------------------------
    def _score_jobs(self, spec: EvaluationModelSpec, folder: Path, job_ids: list[int]) -> dict[int, float]:
        """Score the succeeded jobs among job_ids not scored by spec yet (in the worker, in queue order), store
        them; every score of these jobs by spec, by job id."""
        items, ids = [], []
        with session_scope(self.engine) as session:
            for job_id in job_ids:
                job = get_job(session, job_id)
                if job is None or job.status != "succeeded" or not job.output_file:
                    continue
                if get_score(session, job_id, spec.id) is None:
                    items.append((job.prompt, self._audio_path(job)))
                    ids.append(job_id)
        if items:
            task = ScoreTask(spec.id, folder, tuple(items))
            self.queue.worker.submit(task)
            try:
                values = task.result.result()
            except Exception as exc:  # noqa: BLE001 - a broken download, out of memory: said, never a traceback
                if self._stop.is_set():
                    raise
                reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc.__class__.__name__
                raise OperationFailed(f"Scoring with {spec.display_name} failed: {reason}",
                                      code="scoring_failed", scorer=spec.id) from None
            with session_scope(self.engine) as session:
                for job_id, value in zip(ids, values):
                    if value is not None and math.isfinite(value):
                        add_score(session, job_id, spec.id, value)
        with session_scope(self.engine) as session:
            return {s.job_id: s.value for s in scores_of(session, job_ids, spec.id)}

    def _audio_path(self, job: Job) -> Path:
        root = self.data_dir.resolve()
        path = (root / job.output_file).resolve()
        return path if path.is_relative_to(root) else root / "missing"  # confined to the data directory

    def score_job(self, job_id: int, actor: Actor | None = None) -> ScoreInfo:
        """The job's score by the evaluation model in use, computed now (queued behind the jobs accepted before) if
        it has none yet. actor: who asks (a member scores their own jobs only; None: the studio itself). NotFound
        (job_not_found); Conflict no_evaluation_model, job_not_scorable (no audio yet, or its generation failed)."""
        with session_scope(self.engine) as session:
            job = find_job(session, job_id, JobService.visible("all", actor)) if actor is not None \
                else get_job(session, job_id)
            if job is None:
                raise NotFound(f"There is no job {job_id}.", code="job_not_found", job_id=job_id)
            status, has_audio = job.status, job.output_file is not None
        if status != "succeeded" or not has_audio:
            when = "once it has succeeded" if status in ("queued", "running") else "only when it made audio"
            raise Conflict(f"Job {job_id} is {status}: a job can be scored {when}.", code="job_not_scorable",
                           job_id=job_id, status=status)
        spec, folder = self._scorer()
        with session_scope(self.engine) as session:
            score = get_score(session, job_id, spec.id)
            if score is not None:
                return ScoreInfo.model_validate(score, from_attributes=True)
        if job_id not in self._score_jobs(spec, folder, [job_id]):
            raise Conflict(f"The audio of job {job_id} could not be read for scoring (its file is missing or "
                           "damaged).", code="job_not_scorable", job_id=job_id, status=status)
        with session_scope(self.engine) as session:
            log.info("job %d scored by %s for %s", job_id, spec.id, actor.name if actor else "the studio")
            return ScoreInfo.model_validate(get_score(session, job_id, spec.id), from_attributes=True)

    def scores(self, job_ids: list[int]) -> dict[int, list[ScoreInfo]]:
        """Every stored score of these jobs (by any evaluation model), by job id (jobs without scores left out)."""
        out: dict[int, list[ScoreInfo]] = {}
        with session_scope(self.engine) as session:
            for s in scores_of(session, list(job_ids)):
                out.setdefault(s.job_id, []).append(ScoreInfo.model_validate(s, from_attributes=True))
        return out

    def request_scores(self, job_ids: list[int]) -> bool:
        """Score these jobs in the background once each is over (e.g. the clips of an A/B test): the succeeded ones
        get a score by the evaluation model in use; the rest are skipped. False (and nothing happens) when no
        evaluation model is available; never raises for that."""
        try:
            spec, folder = self._scorer()
        except StudioError as exc:
            log.info("clips %s not scored: %s", job_ids, exc.message)
            return False
        ids = list(job_ids)

        def run() -> None:
            try:
                if self._wait_over(ids):
                    self._score_jobs(spec, folder, ids)
            except Exception:  # noqa: BLE001 - a background score: the clips stay unscored, said in the log
                if not self._stop.is_set():  # (stopping: the worker is gone, nothing to say)
                    log.exception("scoring jobs %s failed", ids)

        threading.Thread(target=run, name="score-jobs", daemon=True).start()
        return True

    def _wait_over(self, job_ids: list[int]) -> bool:
        """Wait until every job is over; False when the studio stops first."""
        while not self._stop.is_set():
            with session_scope(self.engine) as session:
                left = [j for j in job_ids if (job := get_job(session, j)) is not None and job.status not in OVER]
            if not left:
                return True
            self._stop.wait(POLL_S)
        return False

    # ---- evaluation runs ---------------------------------------------------------------------------------------
    def evaluate(self, model_id: str | None, adapter_id: int | None, user: str = LOCAL_USER) -> EvaluationInfo:
        """Start an evaluation run of a model (or an adapter version of it) over the prompt set: its clips are
        queued at once, then scored as they finish. The model must be the one the queue runs new jobs on.
        NotFound (model, adapter); Conflict no_evaluation_model, model_not_loaded, adapter refusals; QueueFull."""
        target = self.queue.target_model()
        model_id = model_id or target
        if model_id is None:
            raise Conflict("No model is loaded: load the model to evaluate first.", code="no_model_loaded")
        spec = self.registry.get(model_id)
        if model_id != target:
            now = self.registry.get(target).display_name if target else "no model"
            raise Conflict(f"An evaluation of {spec.display_name} needs it loaded ({now} is): switch to it first.",
                           code="model_not_loaded", model_id=model_id)
        scorer, _ = self._scorer()
        duration = min(self.prompt_set.duration_s, spec.max_duration_s)
        requests = [JobRequest(prompt=p.prompt, duration_s=duration, seed=p.seed, adapter_id=adapter_id)
                    for p in self.prompt_set.prompts]
        self.generation.plan(requests[0], acting_for(user))  # refusals (adapter, limits) before anything is recorded
        with session_scope(self.engine) as session:
            evaluation_id = create_evaluation(
                session, model_id=model_id, adapter_id=adapter_id, scorer=scorer.id,
                prompts=[p.prompt for p in self.prompt_set.prompts], seeds=[p.seed for p in self.prompt_set.prompts],
                duration_s=duration, status="running", created_by=user, runner=self.queue.runner).id
        accepted: list[int] = []
        try:
            for req in requests:
                accepted += self.generation.submit(req, acting_for(user), evaluation_id=evaluation_id).job_ids
        except StudioError as exc:  # the queue filled up midway: none of the run stays
            for job_id in accepted:
                self.generation.cancel_job(job_id)
            self._finish(evaluation_id, "failed", error=f"Could not queue the clips: {exc.message}")
            raise
        self._follow(evaluation_id)
        return self.get_evaluation(evaluation_id)

    def cancel(self, evaluation_id: int) -> EvaluationInfo:
        """Stop a running evaluation: its clips still waiting or running are cancelled; the run ends cancelled
        (the clips already scored keep their scores)."""
        info = self.get_evaluation(evaluation_id)
        if info.status != "running":
            return info
        with self._lock:
            self._cancelled.add(evaluation_id)
        for clip in info.clips:
            if clip.job_id is not None and clip.status in ("queued", "running"):
                self.generation.cancel_job(clip.job_id)
        with self._lock:
            thread = self._runs.get(evaluation_id)
        if thread is None:
            self._finish(evaluation_id, "cancelled", error="Cancelled.")
        else:
            thread.join(10)
        return self.get_evaluation(evaluation_id)

    def _follow(self, evaluation_id: int) -> None:
        thread = threading.Thread(target=self._run, args=(evaluation_id,), name=f"evaluation-{evaluation_id}",
                                  daemon=True)
        with self._lock:
            self._runs[evaluation_id] = thread
        thread.start()

    def _latest_jobs(self, evaluation: Evaluation, jobs: list[Job]) -> list[Job | None]:
        """The latest job of each clip of the run, in the prompt set's order (None: no job yet)."""
        latest: list[Job | None] = [None] * len(evaluation.prompts)
        for job in jobs:
            for i, (prompt, seed) in enumerate(zip(evaluation.prompts, evaluation.seeds)):
                if job.prompt == prompt and job.seed == seed:
                    latest[i] = job
                    break
        return latest

    def _run(self, evaluation_id: int) -> None:
        """Wait for the run's clips, score them, record the result. Whatever happens, the run ends recorded
        (unless the studio stops first: then the next start takes it up again)."""
        try:
            with session_scope(self.engine) as session:
                ev = get_evaluation(session, evaluation_id)
                job_ids = [j.id for j in self._latest_jobs(ev, jobs_of_evaluation(session, evaluation_id)) if j]
                scorer_id = ev.scorer
            if not self._wait_over(job_ids):
                return  # the studio stops: the run stays 'running' and is taken up at the next start
            with self._lock:
                cancelled = evaluation_id in self._cancelled
            spec = self.registry.evaluation_model(scorer_id)
            if cancelled:  # no new scores: a cancel answers at once
                with session_scope(self.engine) as session:
                    values = {s.job_id: s.value for s in scores_of(session, job_ids, spec.id)}
            else:
                if not self.store.available(spec):
                    raise _no_evaluation_model(self.registry, spec)
                values = self._score_jobs(spec, self.store.fetch(spec, lambda d, t: None), job_ids)
            scored = [values[j] for j in job_ids if j in values]
            with session_scope(self.engine) as session:
                ev = get_evaluation(session, evaluation_id)
                total = len(ev.prompts)
            missing = total - len(scored)
            if cancelled:
                status, error = "cancelled", "Cancelled."
            elif not scored:
                status, error = "failed", "No clip could be generated and scored (see the clips' jobs)."
            else:
                status = "succeeded"
                error = f"{missing} of {total} clips have no score (see their jobs)." if missing else None
            self._finish(evaluation_id, status, scored, error)
        except StudioError as exc:
            self._finish(evaluation_id, "failed", error=exc.message)
        except Exception as exc:  # noqa: BLE001 - the run must end recorded, never stay 'running' while we run
            if self._stop.is_set():  # the worker stopped under it: the next start takes the run up again
                return
            log.exception("evaluation %d failed", evaluation_id)
            self._finish(evaluation_id, "failed", error=f"The evaluation failed: {exc or exc.__class__.__name__}")
        finally:
            with self._lock:
                self._runs.pop(evaluation_id, None)
                self._cancelled.discard(evaluation_id)

    def _finish(self, evaluation_id: int, status: str, scored: list[float] = (), error: str | None = None) -> None:
        mean = sum(scored) / len(scored) if scored else None
        with session_scope(self.engine) as session:
            ev = get_evaluation(session, evaluation_id)
            if ev is not None and ev.status == "running":
                finish_evaluation(session, ev, status, mean_score=mean, n=len(scored), error=error)

    def resume(self) -> list[int]:
        """After a (re)start, once the queue took up its waiting jobs: follow the runs left 'running'. Clips whose
        job was interrupted (or never queued) are generated again with the same prompt and seed when the run's
        model is the one loaded; otherwise the run is recorded as failed, saying why. Their ids."""
        with session_scope(self.engine) as session:
            runs = [ev.id for ev in list_evaluations(session, status="running", limit=10_000,
                                                     runner=self.queue.runner)]  # this studio's own
        resumed = []
        for evaluation_id in runs:
            with self._lock:
                if evaluation_id in self._runs:
                    continue
            try:
                self._requeue_interrupted(evaluation_id)
            except StudioError as exc:
                self._finish(evaluation_id, "failed", error=f"Interrupted: the studio stopped during the run and it "
                                                            f"could not go on: {exc.message}")
                continue
            self._follow(evaluation_id)
            resumed.append(evaluation_id)
        return resumed

    def _requeue_interrupted(self, evaluation_id: int) -> None:
        with session_scope(self.engine) as session:
            ev = get_evaluation(session, evaluation_id)
            latest = self._latest_jobs(ev, jobs_of_evaluation(session, evaluation_id))
            redo = [(i, job.settings if job else None) for i, job in enumerate(latest)
                    if job is None or job.status == "interrupted"]
            model_id, adapter_id, user = ev.model_id, ev.adapter_id, ev.created_by
            prompts, seeds, duration = list(ev.prompts), list(ev.seeds), ev.duration_s
        if not redo:
            return
        if self.queue.target_model() != model_id:
            raise Conflict(f"{len(redo)} clip(s) must be generated again and {model_id} is not loaded; start the "
                           "evaluation again.", code="model_not_loaded")
        for i, settings in redo:
            self.generation.submit(JobRequest(prompt=prompts[i], duration_s=duration, seed=seeds[i],
                                              settings=settings, adapter_id=adapter_id), acting_for(user),
                                   evaluation_id=evaluation_id)

    # ---- reading -------------------------------------------------------------------------------------------------
    def _info(self, session, ev: Evaluation) -> EvaluationInfo:
        latest = self._latest_jobs(ev, jobs_of_evaluation(session, ev.id))
        ids = [j.id for j in latest if j is not None]
        values = {s.job_id: s.value for s in scores_of(session, ids, ev.scorer)} if ids else {}
        clips = [EvaluationClip(position=i, prompt=p, seed=s, job_id=job.id if job else None,
                                status=job.status if job else "pending",
                                score=values.get(job.id) if job else None)
                 for i, (p, s, job) in enumerate(zip(ev.prompts, ev.seeds, latest))]
        done = sum(c.status in OVER and (c.status != "succeeded" or c.score is not None or ev.status != "running")
                   for c in clips)
        return EvaluationInfo(
            id=ev.id, model_id=ev.model_id, adapter_id=ev.adapter_id, adapter_label=self.adapters.label(ev.adapter_id),
            scorer=ev.scorer, status=ev.status, error=ev.error, mean_score=ev.mean_score, n=ev.n,
            total=len(ev.prompts), done=done, duration_s=ev.duration_s, created_by=ev.created_by,
            created_at=ev.created_at, finished_at=ev.finished_at, clips=clips)

    def get_evaluation(self, evaluation_id: int) -> EvaluationInfo:
        with session_scope(self.engine) as session:
            ev = get_evaluation(session, evaluation_id)
            if ev is None:
                raise NotFound(f"There is no evaluation {evaluation_id}.", code="evaluation_not_found",
                               evaluation_id=evaluation_id)
            return self._info(session, ev)

    def list_evaluations(self, model_id: str | None = None, adapter_id: int | None = None, base_only: bool = False,
                         limit: int = 50, offset: int = 0) -> list[EvaluationInfo]:
        """Evaluation runs, newest first; of a model, of an adapter version, or of base models only."""
        with session_scope(self.engine) as session:
            runs = list_evaluations(session, model_id=model_id, adapter_id=adapter_id, base_only=base_only,
                                    limit=max(1, min(limit, 500)), offset=max(0, offset))
            return [self._info(session, ev) for ev in runs]

    def latest(self, model_id: str, adapter_id: int | None = None, scorer: str | None = None
               ) -> EvaluationInfo | None:
        """The latest succeeded run of a base model (adapter_id None) or of an adapter version, scored by `scorer`
        (default: the evaluation model in use, else any); None when there is none."""
        if scorer is None:
            current = self.current_model()
            scorer = current.id if current is not None and self.store.available(current) else None
        with session_scope(self.engine) as session:
            runs = list_evaluations(session, model_id=model_id, adapter_id=adapter_id, base_only=adapter_id is None,
                                    status="succeeded", limit=10_000)
            run = next((ev for ev in runs if scorer is None or ev.scorer == scorer), None)
            return self._info(session, run) if run is not None else None

    def paired_scores(self, a_id: int, b_id: int) -> list[tuple[float, float]]:
        """The scores of two runs on the clips they share (same prompt and seed) and both scored, in order."""
        a, b = self.get_evaluation(a_id), self.get_evaluation(b_id)
        if a.scorer != b.scorer:
            raise Conflict(f"Evaluations {a_id} and {b_id} were scored by different evaluation models ({a.scorer}, "
                           f"{b.scorer}): their scores cannot be compared.", code="different_scorers")
        theirs = {(c.prompt, c.seed): c.score for c in b.clips if c.score is not None}
        return [(c.score, theirs[(c.prompt, c.seed)]) for c in a.clips
                if c.score is not None and (c.prompt, c.seed) in theirs]

    def compare(self, a_id: int, b_id: int) -> TwoSampleTest:
        """Two runs compared clip by clip: a two-sided Wilcoxon signed-rank test on their paired scores."""
        return self.comparison(a_id, b_id).test

    def comparison(self, a_id: int, b_id: int) -> EvaluationComparison:
        """The paired scores of two runs and the test on them (NotFound; Conflict different_scorers)."""
        pairs = self.paired_scores(a_id, b_id)
        test = wilcoxon_paired([a for a, _ in pairs], [b for _, b in pairs], what="score")
        return EvaluationComparison(a=a_id, b=b_id, pairs=pairs, test=test)

    def close(self) -> None:
        """Stop following runs (they stay 'running' in the database and are taken up at the next start)."""
        self._stop.set()


def _drain(events: "stdqueue.SimpleQueue[ProgressEvent]") -> Iterator[ProgressEvent]:
    while True:
        event = events.get()
        yield event
        if event.terminal:
            return
