"""Generation use case: validate a request against the model it will run on, queue it as jobs, follow them."""
from __future__ import annotations

import dataclasses
import math
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.db.engine import session_scope
from studio.db.jobs import find_job, get_job
from studio.db.models import Job
from studio.errors import (Cancelled, Conflict, DiskFull, Incompatible, InvalidRequest, InvalidValues, NoModelLoaded,
                           NotFound, OperationFailed, StorageUnavailable, StudioError, Unavailable)
from studio.gen_settings import MAX_SEED, RANDOM_SEED, MusicgenSettings, settings_class
from studio.registry import ModelSpec
from studio.runtime.chroma import ChromaSettings, chromagram
from studio.runtime.manager import ModelManager
from studio.runtime.stacks import MAX_STACK, MAX_STRENGTH, MIN_STRENGTH
from studio.services.adapters import AdapterRef, AdapterService, checkpoint_key
from studio.services.audio_out import TARGET_TOLERANCE_LU
from studio.services.gen_config import GenerationConfigService
from studio.services.job_events import AudioChunk, JobEvent, JobEvents
from studio.services.jobs import DELETED_ADAPTER, JobService, MelodyUsed, StackItem
from studio.services.queue import JobPlan, JobQueue, audio_url
from studio.services.uploads import UploadService
from studio.training import layout
from studio.users import LOCAL_ACTOR, Actor

StepCallback = Callable[[int, int], None]


MAX_ID = 2**63 - 1  # the database's integer range


class StackedAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    adapter_id: int = Field(ge=1, le=MAX_ID, description="a LoRA adapter compatible with the loaded model")
    strength: float = Field(1.0, json_schema_extra={"minimum": MIN_STRENGTH, "maximum": MAX_STRENGTH},
                            description=f"{MIN_STRENGTH:g} (no effect) to {MAX_STRENGTH:g}; 1: as trained")


class GenerateRequest(BaseModel):
    # strict: "7" is not a seed and true is not a duration (like the settings); a misspelt field is an error
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    prompt: str = Field(description="what the music should sound like")
    duration_s: float | None = Field(None, description=(
        "seconds of audio, at most the loaded model's max_duration_s; none: the model's default_duration_s setting"))
    seed: int | None = Field(None, ge=RANDOM_SEED, le=MAX_SEED, description=(
        "same prompt, settings and seed give the same audio; -1: a random seed (even when the model's seed policy "
        "is fixed); none: the model's seed policy (random by default). The seed used is in the result"))
    settings: dict[str, Any] | None = Field(None, description=(
        "overrides of the model's stored generation settings for this request only "
        "(schema: GET /api/models/{id}/config/schema)"))
    adapter_id: int | None = Field(None, ge=1, le=MAX_ID,
                                   description="a LoRA adapter compatible with the loaded model; none: base")
    continue_upload_id: str | None = Field(None, max_length=64, description=(
        "continue an uploaded clip (POST /api/uploads): the end of it that the model's window holds is encoded and "
        "the new music follows it"))
    continue_job_id: int | None = Field(None, ge=1, le=MAX_ID, description=(
        "'Extend this': continue a finished job of the same model from its stored codes (no re-encoding)"))
    include_continued: bool = Field(True, description=(
        "the continued audio at the start of the result (an upload: the part the model saw; a job: all of it); "
        "duration_s counts the new music only"))
    melody_upload_id: str | None = Field(None, max_length=64, description=(
        "an audio upload (POST /api/uploads) whose melody the music follows: its chromagram, from its start, at most "
        "one window (max_duration_s) long. Only for models whose conditioning includes melody (MusicGen Melody); "
        "others refuse it with melody_not_supported"))
    adapter_strength: float = Field(1.0, json_schema_extra={"minimum": MIN_STRENGTH, "maximum": MAX_STRENGTH},
                                    description=(
        f"how strongly adapter_id applies: {MIN_STRENGTH:g} (the base model's output) to {MAX_STRENGTH:g} (twice "
        "its trained effect); 1: as trained. PEFT scales the LoRA layers, the weights are never merged"))
    adapters: list[StackedAdapter] | None = Field(None, json_schema_extra={"maxItems": MAX_STACK}, description=(
        f"a stack of up to {MAX_STACK} LoRA adapters of the loaded model, each at its own strength, active together "
        "(their effects add up; instead of adapter_id)"))


MAX_VARIATIONS = 4


class JobRequest(GenerateRequest):
    variations: int = Field(1, ge=1, le=MAX_VARIATIONS, description=(
        "takes of the same request with different seeds (the seed, then seed+1, ...; random seeds for a random "
        "seed), decoded together: one job each"))


class JobAccepted(BaseModel):
    job_id: int = Field(description="the first job (the only one without variations)")
    job_ids: list[int] = Field(description="every job of the request, one per variation")
    seeds: list[int] = Field(description="each job's seed")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    position: int = Field(description="the first job's place: 0 running, 1 next to start, ...")
    eta_s: float | None = Field(description="seconds until the first job should be done (None: not known yet)")
    model_id: str = Field(description="the model the jobs will run on")
    events_url: str = Field(description="Server-Sent Events of the first job")


class GenerationResult(BaseModel):
    job_id: int
    model_id: str
    prompt: str
    seed: int
    duration_s: float
    sample_rate: int
    settings: dict[str, Any]  # every setting the generation used (stored settings + the request's overrides)
    adapter_id: int | None = Field(description="the adapter (the first of a stack); None: the base model")
    adapter_label: str | None
    adapter_stack: list[StackItem] | None = Field(None, description=(
        "the adapters and strengths it ran with, in order (None: the base model, or adapter_id at strength 1)"))
    output_file: Path  # absolute path of the audio file (wav, flac or mp3, as the settings say)
    elapsed_s: float = Field(description="seconds from the start of decoding to the written file")
    wait_s: float = Field(description="seconds the job waited in the queue")
    batch_size: int = Field(description="jobs decoded together with this one (itself included)")
    submitted_by: str
    loudness_lufs: float | None = Field(description="integrated loudness of the written file (None: undefined)")
    true_peak_dbtp: float | None = Field(description="true peak of the written file, decoded (None: silence)")
    loudness_note: str | None = Field(description="set when loudness normalisation did not reach its target")
    continuation: dict[str, Any] | None = Field(None, description=(
        "what it continues: {source: upload|job, upload_id|job_id, seconds (of audio the model continued), "
        "trimmed_from_s (the source's length when only its end was used), included (at the start of the audio)}"))
    melody: MelodyUsed | None = Field(None, description="the melody it followed (None: text only)")


def acting_for(name: str) -> Actor:
    """The studio queueing jobs for the person a record names (the creator of an A/B test, evaluation or training
    run, all of which it generates again): their name goes on the jobs, and no more rights than a member's."""
    return Actor(name, "member")


def _refuse(field: str, message: str, code: str, **extra) -> InvalidValues:
    """A value of the request refused: 422 naming the field, like a value that breaks the schema."""
    return InvalidValues(message, code=code, errors=[{"field": field, "message": message}], **extra)


def loudness_note(settings: MusicgenSettings, loudness: float | None, peak: float | None) -> str | None:
    if not settings.normalize_loudness or loudness is None:
        return None
    if abs(loudness - settings.target_lufs) <= TARGET_TOLERANCE_LU:
        return None
    why = ("its peaks leave no more room without audible limiting" if loudness < settings.target_lufs
           else "of the format's encoder")
    return (f"Loudness reached {loudness:.1f} LUFS, not the {settings.target_lufs:g} LUFS asked for, because "
            f"{why} (true peak {peak:.1f} dBTP).")


def duration_over_limit(duration_s: float, model_name: str, max_duration_s: float) -> str:
    """The one wording of this refusal, for the page's hint and the service alike."""
    return f"{duration_s:g} s is over {model_name}'s limit of {max_duration_s:g} s."


def checkpoint_ref(data_dir: Path, run_id: int, step: int) -> AdapterRef:
    """A training run's checkpoint as the adapter of an audition clip (not a registered version)."""
    folder = layout.checkpoint_folder(layout.run_folder(data_dir, run_id), step)
    if not (folder / layout.STATE_FILE).is_file():
        raise NotFound(f"Checkpoint {step} of training run {run_id} is gone.", code="checkpoint_not_found",
                       run_id=run_id, step=step)
    return AdapterRef(None, checkpoint_key(run_id, step), folder, f"run {run_id} step {step}")


def _check_duration(duration_s: float, spec: ModelSpec) -> None:
    """The seconds of new music: one window (max_duration_s), or for a model that may be extended, its
    max_extended_duration_s (generated window by window); `limit` names the one that applies."""
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise _refuse("duration_s", "duration_s must be a positive number of seconds.", "invalid_duration",
                      max_duration_s=spec.max_duration_s, max_extended_duration_s=spec.max_extended_duration_s)
    if duration_s > spec.extended_limit_s:
        extended = spec.max_extended_duration_s is not None
        raise _refuse("duration_s", duration_over_limit(duration_s, spec.display_name, spec.extended_limit_s),
                      "duration_exceeds_limit", max_duration_s=spec.max_duration_s,
                      max_extended_duration_s=spec.max_extended_duration_s, model_id=spec.id,
                      limit="max_extended_duration_s" if extended else "max_duration_s")
    if round(duration_s * spec.frame_rate) < 1:
        raise _refuse("duration_s", f"duration_s must be at least {1 / spec.frame_rate:g} s (one audio frame).",
                      "invalid_duration", max_duration_s=spec.max_duration_s)


def _continued(record: dict | None) -> dict:
    """A job's continuation record as request fields (resubmitting it, or planning it again after a restart)."""
    if not record:
        return {}
    key = "continue_upload_id" if record.get("source") == "upload" else "continue_job_id"
    return {key: record.get("upload_id" if key == "continue_upload_id" else "job_id"),
            "include_continued": bool(record.get("included", True))}


# What a failed job's code means for a caller that waited on it (POST /api/generate, Gradio's generate).
# interrupted: the GPU worker (--workers ray) running it stopped; not a bug of the studio (500), and worth sending again
_FAILURES: dict[str, type[StudioError]] = {"adapter_load_failed": InvalidRequest, "model_not_loaded": NoModelLoaded,
                                           "disk_full": DiskFull, "storage_unavailable": StorageUnavailable,
                                           "interrupted": Unavailable}


def stack_fields(job: Job) -> dict[str, Any]:
    """The request fields that run a recorded job's adapters again (adapter_id, adapter_strength or adapters)."""
    stack = job.adapter_stack or []
    if len(stack) > 1:
        return {"adapters": [StackedAdapter(adapter_id=int(i["adapter_id"]), strength=float(i["strength"]))
                             for i in stack]}
    if len(stack) == 1:
        return {"adapter_id": int(stack[0]["adapter_id"]), "adapter_strength": float(stack[0]["strength"])}
    return {"adapter_id": job.adapter_id}


def _job_failure(job: Job, detail: dict | None = None) -> StudioError:
    cls = _FAILURES.get(job.error_code or "", OperationFailed)
    return cls(job.error or "Generation failed.", code=job.error_code or "generation_failed", job_id=job.id,
               **(detail or {}))


class GenerationService:
    def __init__(self, queue: JobQueue, manager: ModelManager, engine, adapters: AdapterService,
                 configs: GenerationConfigService, data_dir: Path, max_prompt_chars: int = 1000,
                 uploads: UploadService | None = None):
        self.queue, self.manager, self.engine = queue, manager, engine
        self.uploads = uploads
        self.adapters, self.configs = adapters, configs
        self.registry = queue.registry
        self.events: JobEvents = queue.events
        self.data_dir = Path(data_dir)
        self.max_prompt_chars = max_prompt_chars

    def _check_request(self, req: GenerateRequest) -> str:
        prompt = (req.prompt or "").strip()
        if not prompt:
            raise _refuse("prompt", "The prompt is empty: describe the music you want.", "empty_prompt")
        if len(prompt) > self.max_prompt_chars:
            raise _refuse("prompt", f"The prompt is {len(prompt)} characters long; the limit is "
                                    f"{self.max_prompt_chars}.", "prompt_too_long", max_chars=self.max_prompt_chars)
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): no database or file name can hold it
            raise _refuse("prompt", "The prompt holds a character that is not valid text (a lone surrogate).",
                          "invalid_prompt") from None
        if "\x00" in prompt:
            raise _refuse("prompt", "The prompt holds a NUL character.", "invalid_prompt")
        return prompt

    # ---- accepting -----------------------------------------------------------------------------------------
    def plan(self, req: GenerateRequest, actor: Actor = LOCAL_ACTOR, variations: int = 1) -> list[JobPlan]:
        """The jobs a request makes, validated against the model they will run on: the loaded one, or the one
        the last switch waiting in the queue loads (jobs after a switch run on the new model). actor: who asks
        (recorded as the jobs' submitter; a member continues only their own jobs)."""
        prompt = self._check_request(req)
        model_id = self.queue.target_model()
        if model_id is None:
            raise NoModelLoaded("No model is loaded. Choose a model in Settings (or POST /api/models/current).")
        spec = self.registry.get(model_id)
        settings = self.configs.resolve(spec, req.settings)
        duration_s = req.duration_s if req.duration_s is not None else settings.default_duration_s
        _check_duration(duration_s, spec)
        stack = self._stack(req, spec)
        adapter = stack[0][0] if stack else None
        if req.seed is not None and req.seed != RANDOM_SEED:
            seeds = [(req.seed + i) % (MAX_SEED + 1) for i in range(variations)]
        elif req.seed is None and settings.seed_policy == "fixed":
            seeds = [(settings.seed + i) % (MAX_SEED + 1) for i in range(variations)]
        else:
            seeds = [secrets.randbelow(MAX_SEED + 1) for _ in range(variations)]
        melody, melody_record = self._melody(req.melody_upload_id, spec)
        frames = round(duration_s * spec.frame_rate)
        continued = self._continuation(req.continue_upload_id, req.continue_job_id, req.include_continued, spec,
                                       frames, actor)
        return [JobPlan(spec.id, prompt, duration_s, frames, spec.sample_rate, settings, seed, adapter, actor.name,
                        melody=melody, melody_record=melody_record, stack=stack, **continued) for seed in seeds]

    def _continuation(self, upload_id: str | None, job_id: int | None, include: bool, spec: ModelSpec,
                      frames: int, actor: Actor | None = None) -> dict:
        """JobPlan's fields for what a job continues (checked, nothing written): an uploaded clip cut to the end
        the model's window holds (the window keeps room for min(stride, new) new frames), or a finished job's
        codes (all of them: the decode loop takes the end it needs as context, and the result starts with the
        whole source when included)."""
        window = spec.max_tokens
        stride = max(1, min(round(spec.stride_s * spec.frame_rate), window - 1))
        fields: dict = {"window": window, "stride": stride}
        if upload_id is None and job_id is None:
            return fields
        if upload_id is not None and job_id is not None:
            raise _refuse("continue_job_id", "Continue either an uploaded clip or a job, not both.",
                          "continuation_conflict")
        context_frames = window - min(frames, stride)  # what the first window can see
        if upload_id is not None:
            if self.uploads is None:
                raise InvalidRequest("This studio takes no audio uploads.", code="uploads_unavailable")
            most_s = context_frames / spec.frame_rate
            audio, seconds, trimmed = self.uploads.read(upload_id, spec.sample_rate, spec.channels,
                                                        max_seconds=most_s, keep="end")
            clip_frames = round(len(audio) / spec.sample_rate * spec.frame_rate)
            if clip_frames < 1:
                raise _refuse("continue_upload_id", f"Upload {upload_id} is too short to continue (under one "
                              f"frame, {1 / spec.frame_rate:g} s).", "continuation_too_short", upload_id=upload_id)
            used_s = round(clip_frames / spec.frame_rate, 3)
            record = {"source": "upload", "upload_id": upload_id, "seconds": used_s,
                      "trimmed_from_s": round(seconds, 3) if trimmed else None, "included": include}
            fields.update(continuation=record, continue_audio=audio, include_continued=include,
                          kept_samples=round(clip_frames / spec.frame_rate * spec.sample_rate) if include else 0)
            return fields
        codes, source_s = self._job_codes(job_id, spec, actor)
        used = min(codes.shape[1], context_frames)
        record = {"source": "job", "job_id": job_id, "seconds": round(used / spec.frame_rate, 3),
                  "trimmed_from_s": round(source_s, 3) if used < codes.shape[1] else None, "included": include}
        fields.update(continuation=record, prompt_codes=codes, include_continued=include,
                      kept_samples=round(codes.shape[1] / spec.frame_rate * spec.sample_rate) if include else 0)
        return fields

    def _job_codes(self, job_id: int, spec: ModelSpec, actor: Actor | None = None):
        """A finished job's codes to continue ("Extend this"), checked: the actor may see it (None: the studio
        itself), it succeeded, on this model, and its codes file is there and fits the model. (codes (codebooks,
        frames) int64, its seconds)."""
        import numpy as np
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        with session_scope(self.engine) as session:
            # a blind test's clip, or another member's job, is not there to extend
            job = find_job(session, job_id, JobService.visible("all", actor))
            if job is None:
                raise NotFound(f"There is no job {job_id}.", code="job_not_found", job_id=job_id)
            status, model_id, codes_file = job.status, job.model_id, job.codes_file
        if status != "succeeded":
            raise Conflict(f"Job {job_id} is {status}: only a finished job can be extended.",
                           code="continue_job_not_finished", job_id=job_id, status=status)
        if model_id != spec.id:
            raise Conflict(f"Job {job_id} was generated by {self._model_name(model_id)}, not {spec.display_name}: "
                           f"its codes mean nothing to another model. Switch to {self._model_name(model_id)} to "
                           "extend it.", code="continue_job_other_model", job_id=job_id, job_model_id=model_id,
                           model_id=spec.id)
        path = (self.data_dir / codes_file).resolve() if codes_file else None
        outputs = (self.data_dir / "outputs").resolve()
        if path is None or path.parent != outputs or not path.is_file():
            raise Conflict(f"Job {job_id}'s codes are not kept (deleted, or made before codes were stored): it "
                           "cannot be extended.", code="continue_job_no_codes", job_id=job_id)
        try:
            codes = load_file(str(path)).get("codes")
        except (OSError, SafetensorError) as exc:
            raise Conflict(f"Job {job_id}'s codes file cannot be read: {exc}", code="continue_job_no_codes",
                           job_id=job_id) from None
        if (codes is None or codes.ndim != 2 or codes.shape[0] != spec.codebooks or codes.shape[1] < 1
                or codes.min() < 0):
            raise Conflict(f"Job {job_id}'s codes do not fit {spec.display_name}.", code="continue_job_no_codes",
                           job_id=job_id)
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        return codes, codes.shape[1] / spec.frame_rate

    def _model_name(self, model_id: str) -> str:
        try:
            return self.registry.get(model_id).display_name
        except NotFound:
            return model_id

    def _melody(self, upload_id: str | None, spec: ModelSpec) -> tuple[Any, dict[str, Any] | None]:
        """The chroma a job follows and its record ({"upload_id", "seconds" used, "trimmed_from_s" when the clip
        was longer than a window}); (None, None) without a melody. Computed here, once per request, from the
        upload read at the model's rate in mono from its start, with MusicGen Melody's feature settings (the
        backend refuses a melody model whose own differ)."""
        if upload_id is None:
            return None, None
        if "melody" not in spec.conditioning:
            raise Incompatible(f"{spec.display_name} follows text only: it takes no melody. Choose a model made for "
                               "melodies (MusicGen Melody), or leave the melody out.", code="melody_not_supported",
                               model_id=spec.id)
        if self.uploads is None:
            raise InvalidRequest("This studio takes no audio uploads.", code="melody_not_supported",
                                 model_id=spec.id)
        try:
            audio, seconds, trimmed = self.uploads.read(upload_id, spec.sample_rate, 1,
                                                        max_seconds=spec.max_duration_s, keep="start")
        except StudioError:
            raise
        except Exception as exc:  # noqa: BLE001 - the file was checked at upload; damaged or changed since
            raise InvalidRequest(f"The melody upload {upload_id} could not be read: {exc}", code="unreadable_audio",
                                 upload_id=upload_id) from None
        chroma = chromagram(audio, ChromaSettings(sample_rate=spec.sample_rate))
        record: dict[str, Any] = {"upload_id": upload_id, "seconds": round(len(audio) / spec.sample_rate, 3)}
        if trimmed:
            record["trimmed_from_s"] = seconds
        return chroma, record

    def _stack(self, req: GenerateRequest, spec: ModelSpec) -> tuple[tuple[AdapterRef, float], ...]:
        """The adapters the request runs with and their strengths, each checked against the model (refused with
        a code naming what is wrong before anything is recorded)."""
        if req.adapters is not None and req.adapter_id is not None:
            raise _refuse("adapters", "Give either adapter_id (one adapter) or adapters (a stack), not both.",
                          "adapters_exclusive")
        if req.adapters is not None and req.adapter_strength != 1.0:
            raise _refuse("adapter_strength", "adapter_strength goes with adapter_id; in a stack, give each "
                                              "adapter its strength in adapters.", "adapters_exclusive")
        if req.adapter_id is None and req.adapters is None and req.adapter_strength != 1.0:
            raise _refuse("adapter_strength", "adapter_strength needs an adapter (adapter_id): the base model has "
                                              "no strength.", "strength_without_adapter")
        if req.adapter_id is not None:
            wanted = [("adapter_strength", req.adapter_id, req.adapter_strength)]
        else:
            wanted = [(f"adapters[{i}].strength", a.adapter_id, a.strength) for i, a in enumerate(req.adapters or [])]
        if len(wanted) > MAX_STACK:
            raise _refuse("adapters", f"{len(wanted)} adapters asked for; a stack holds at most {MAX_STACK}.",
                          "too_many_adapters", max_adapters=MAX_STACK)
        for field, _, strength in wanted:
            if not MIN_STRENGTH <= strength <= MAX_STRENGTH:
                raise _refuse(field, f"Strength {strength:g} is out of range: {MIN_STRENGTH:g} (no effect) to "
                                     f"{MAX_STRENGTH:g}.", "invalid_strength", min_strength=MIN_STRENGTH,
                              max_strength=MAX_STRENGTH)
        ids = [adapter_id for _, adapter_id, _ in wanted]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise _refuse("adapters", f"Adapter {repeated[0]} is in the stack twice: give each adapter once, with "
                                      "the strength you want.", "duplicate_adapter", adapter_id=repeated[0])
        if not wanted:
            return ()
        loaded, weights_hash = self.manager.identity()
        weights_hash = weights_hash if loaded is not None and loaded.id == spec.id else None
        return tuple((self.adapters.for_generation(adapter_id, spec, weights_hash), float(strength))
                     for _, adapter_id, strength in wanted)

    def submit(self, req: JobRequest, actor: Actor = LOCAL_ACTOR, *, abtest_id: int | None = None,
               evaluation_id: int | None = None) -> JobAccepted:
        """Queue the request's jobs and answer at once: ids, seeds, place in the queue and ETA. abtest_id /
        evaluation_id: the jobs are clips of that blind A/B test or evaluation run (kept out of History)."""
        plans = [dataclasses.replace(p, abtest_id=abtest_id, evaluation_id=evaluation_id)
                 for p in self.plan(req, actor, req.variations)]
        ids = self.queue.accept(plans)
        position, eta = self.queue.position(ids[0])
        latest = self.events.latest(ids[0])
        status = latest.status if latest is not None and position < 0 else ("running" if position == 0
                                                                             else "queued")
        return JobAccepted(job_id=ids[0], job_ids=ids, seeds=[p.seed for p in plans], status=status,
                           position=max(position, 0), eta_s=eta, model_id=plans[0].model_id,
                           events_url=f"/api/jobs/{ids[0]}/events")

    def resubmit(self, job_id: int, actor: Actor = LOCAL_ACTOR) -> JobAccepted:
        """Run a recorded job again (an interrupted one, or any other): same prompt, model, adapter, settings,
        duration and seed, as a new job on the model it will run on, submitted by the actor (a member resubmits
        their own jobs only)."""
        with session_scope(self.engine) as session:
            job = find_job(session, job_id, JobService.visible("all", actor))
            if job is None:
                raise NotFound(f"There is no job {job_id}.", code="job_not_found", job_id=job_id)
            if job.status in ("queued", "running"):
                raise Conflict(f"Job {job_id} is {job.status}: it needs no resubmitting.", code="job_not_finished",
                               job_id=job_id)
            req = JobRequest(prompt=job.prompt, duration_s=job.duration_s, seed=job.seed,
                             settings={k: v for k, v in job.settings.items()}, **stack_fields(job),
                             melody_upload_id=(job.melody or {}).get("upload_id"),
                             **_continued(job.continuation))
        return self.submit(req, actor)

    def _recorded_settings(self, job: Job) -> MusicgenSettings:
        """The settings a finished job recorded, read with its model's class; a custom model removed since has none:
        its jobs keep their results, read with the class of the channels they recorded (stereo settings have a
        downmix) and no duration bound beyond the registry's own."""
        if job.model_id in self.registry.ids():
            return self.registry.get(job.model_id).settings_class.model_validate(job.settings)
        channels = 2 if "downmix_to_mono" in (job.settings or {}) else 1
        return settings_class("transformers", channels, 600).model_validate(job.settings)

    def plan_of(self, job: Job) -> JobPlan:
        """A recorded queued job's plan (after a restart), checked again: the model's limits or the adapter may
        have changed while the studio was stopped."""
        spec = self.registry.get(job.model_id)
        settings = self.configs.resolve(spec, job.settings)
        _check_duration(job.duration_s, spec)
        adapter, stack = None, ()
        if job.adapter_stack:
            stack = tuple((self.adapters.for_generation(int(item["adapter_id"]), spec, None),
                           float(item["strength"])) for item in job.adapter_stack)
            adapter = stack[0][0]
        elif job.adapter_id is not None:
            adapter = self.adapters.for_generation(job.adapter_id, spec, None)
        elif job.training_run_id is not None and job.checkpoint_step:
            adapter = checkpoint_ref(self.data_dir, job.training_run_id, job.checkpoint_step)
        frames = round(job.duration_s * spec.frame_rate)
        melody, melody_record = self._melody((job.melody or {}).get("upload_id"), spec)
        c = _continued(job.continuation)
        continued = self._continuation(c.get("continue_upload_id"), c.get("continue_job_id"),
                                       c.get("include_continued", True), spec, frames)
        return JobPlan(spec.id, job.prompt, job.duration_s, frames,
                       spec.sample_rate, settings, job.seed, adapter, job.submitted_by, job.abtest_id,
                       job.evaluation_id, job.training_run_id, job.checkpoint_step, melody=melody,
                       melody_record=melody_record, stack=stack, **continued)

    def resume(self) -> list[int]:
        return self.queue.resume(self.plan_of)

    # ---- following -----------------------------------------------------------------------------------------
    def follow(self, job_id: int, keepalive_s: float | None = None) -> Iterator[JobEvent | AudioChunk | None]:
        """The job's events up to its final one (NotFound for an unknown job). A job over long ago: its final
        event, from its record."""
        if not self.events.known(job_id):
            yield self.final_event(job_id)
            return
        yield from self.events.follow(job_id, keepalive_s)

    def final_event(self, job_id: int) -> JobEvent:
        with session_scope(self.engine) as session:
            job = get_job(session, job_id)
            if job is None:
                raise NotFound(f"There is no job {job_id}.", code="job_not_found", job_id=job_id)
            status, error, code = job.status, job.error, job.error_code
            has_audio = job.output_file is not None
        if status in ("queued", "running"):  # accepted by a studio that stopped, not taken up again (yet)
            return JobEvent(job_id=job_id, event=status, status=status, message=f"The job is {status}.")
        if status == "succeeded":
            return JobEvent(job_id=job_id, event="succeeded", status=status, fraction=1.0, message="Done.",
                            audio_url=audio_url(job_id) if has_audio else None)
        return JobEvent(job_id=job_id, event=status, status=status, message=error or status.capitalize(),
                        code=code)

    def wait(self, job_id: int, on_step: StepCallback | None = None) -> GenerationResult:
        """Wait for a job's end; its result, or the reason it has none raised as a StudioError."""
        final = None
        for item in self.follow(job_id):
            if isinstance(item, JobEvent) and item.event == "running" and on_step and item.total:
                on_step(item.step or 0, item.total)
            final = item
        return self.result(job_id, final.detail if isinstance(final, JobEvent) else None)

    def generate(self, req: GenerateRequest, on_step: StepCallback | None = None,
                 actor: Actor = LOCAL_ACTOR) -> GenerationResult:
        """Queue one job and wait for it (the blocking contract of POST /api/generate)."""
        accepted = self.submit(JobRequest(**req.model_dump()), actor)
        return self.wait(accepted.job_id, on_step)

    def result(self, job_id: int, detail: dict | None = None) -> GenerationResult:
        """A job's result, or the reason it has none raised as a StudioError (detail: the failure's extra fields,
        known to a caller that followed the job to its end)."""
        with session_scope(self.engine) as session:
            job = get_job(session, job_id)
            if job is None:
                raise NotFound(f"There is no job {job_id}.", code="job_not_found", job_id=job_id)
            if job.status == "cancelled":
                raise Cancelled(f"Cancelled: job {job.id} stopped"
                                + (f" after {job.elapsed_s:.1f} s." if job.elapsed_s is not None else " before it "
                                   "started."), job_id=job.id, elapsed_s=job.elapsed_s)
            if job.status != "succeeded":
                if job.status in ("queued", "running"):
                    raise Conflict(f"Job {job_id} is {job.status}.", code="job_not_finished", job_id=job_id)
                raise _job_failure(job, detail)
            settings = self._recorded_settings(job)
            adapter_label = self.adapters.label(job.adapter_id)
            wait = (job.started_at - job.created_at).total_seconds() if job.started_at else 0.0
            return GenerationResult(
                job_id=job.id, model_id=job.model_id, prompt=job.prompt, seed=job.seed, duration_s=job.duration_s,
                sample_rate=job.sample_rate, settings=job.settings, adapter_id=job.adapter_id,
                adapter_label=adapter_label, adapter_stack=self._stack_items(job.adapter_stack),
                output_file=(self.data_dir / job.output_file).resolve(),
                elapsed_s=job.elapsed_s or 0.0, wait_s=round(max(wait, 0.0), 3), batch_size=job.batch_size or 1,
                submitted_by=job.submitted_by, loudness_lufs=job.loudness_lufs, true_peak_dbtp=job.true_peak_dbtp,
                loudness_note=loudness_note(settings, job.loudness_lufs, job.true_peak_dbtp),
                continuation=job.continuation, melody=job.melody)

    def _stack_items(self, stack: list[dict] | None) -> list[StackItem] | None:
        if not stack:
            return None
        return [StackItem(adapter_id=item["adapter_id"], label=item["label"], strength=item["strength"],
                          deleted=self.adapters.label(item["adapter_id"]) == DELETED_ADAPTER) for item in stack]

    # ---- cancelling ----------------------------------------------------------------------------------------
    def cancel_job(self, job_id: int, actor: Actor | None = None) -> Literal["queued", "running"] | None:
        """Cancel a job waiting (at once) or running (at its next step). None: it is over already (or unknown:
        NotFound). actor: who asks (a member cancels their own jobs only; None: the studio itself)."""
        if actor is not None:
            with session_scope(self.engine) as session:
                if find_job(session, job_id, JobService.visible("all", actor)) is None:
                    raise NotFound(f"There is no job {job_id}.", code="job_not_found", job_id=job_id)
        where = self.queue.cancel(job_id)
        if where is None:
            self.final_event(job_id)  # NotFound for an unknown job
        return where

    def cancel(self, actor: Actor = LOCAL_ACTOR) -> bool:
        """Cancel every running job the actor may manage (the page's and scripts' Cancel before jobs had ids)."""
        running = [i.job_id for i in self.queue.view(actor).items if i.kind == "generate" and i.state == "running"]
        return any([self.queue.cancel(j) is not None for j in running])
