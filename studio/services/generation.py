"""Generation use case: validate against the loaded model's limits, generate, store audio + job together."""
from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable

import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from studio.db.engine import session_scope
from studio.db.adapters import record_use
from studio.db.jobs import create_job, finish_job
from studio.errors import Cancelled, InvalidRequest, OperationFailed, StudioError
from studio.registry import GenerationDefaults, ModelSpec
from studio.runtime.backend import SamplingParams
from studio.runtime.manager import ModelManager
from studio.services.adapters import AdapterRef, AdapterService

MAX_SEED = 2**32 - 1
StepCallback = Callable[[int, int], None]


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored

    prompt: str = Field(description="what the music should sound like")
    duration_s: float = Field(description="seconds of audio; at most the loaded model's max_duration_s")
    seed: int | None = Field(None, description="same prompt, settings and seed give the same audio; none: random")
    settings: dict[str, Any] | None = Field(None, description="overrides of the model's generation settings")
    adapter_id: int | None = Field(None, description="a LoRA adapter compatible with the loaded model; none: base")


class GenerationResult(BaseModel):
    job_id: int
    model_id: str
    prompt: str
    seed: int
    duration_s: float
    sample_rate: int
    settings: GenerationDefaults
    adapter_id: int | None
    adapter_label: str | None
    output_file: Path  # absolute path of the WAV
    elapsed_s: float


def _check_duration(duration_s: float, spec: ModelSpec) -> None:
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise InvalidRequest("duration_s must be a positive number of seconds.", code="invalid_duration",
                             max_duration_s=spec.max_duration_s)
    if duration_s > spec.max_duration_s:
        raise InvalidRequest(f"{duration_s:g} s is longer than {spec.display_name} allows ({spec.max_duration_s:g} s).",
                             code="duration_exceeds_limit", max_duration_s=spec.max_duration_s, model_id=spec.id)
    if round(duration_s * spec.frame_rate) < 1:
        raise InvalidRequest(f"duration_s must be at least {1 / spec.frame_rate:g} s (one audio frame).",
                             code="invalid_duration", max_duration_s=spec.max_duration_s)


def resolve_settings(overrides: dict[str, Any] | None, defaults: GenerationDefaults) -> GenerationDefaults:
    """The model's defaults with validated per-request overrides."""
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise InvalidRequest("settings must be an object.", code="invalid_setting")
    allowed = list(GenerationDefaults.model_fields)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise InvalidRequest(f"Unknown setting(s): {', '.join(unknown)}. Known settings: {', '.join(allowed)}.",
                             code="unknown_setting", unknown=unknown, allowed=allowed)
    try:
        return GenerationDefaults.model_validate({**defaults.model_dump(), **overrides}, strict=False)
    except ValidationError as exc:
        problems = {".".join(map(str, e["loc"])): e["msg"] for e in exc.errors()}
        text = "; ".join(f"{k}: {v}" for k, v in problems.items())
        raise InvalidRequest(f"Invalid setting(s): {text}.", code="invalid_setting", fields=problems) from None


class GenerationService:
    def __init__(self, manager: ModelManager, engine, adapters: AdapterService, data_dir: Path,
                 max_prompt_chars: int = 1000):
        self.manager, self.engine, self.adapters = manager, engine, adapters
        self.data_dir = Path(data_dir)
        self.outputs_dir = self.data_dir / "outputs"
        self.max_prompt_chars = max_prompt_chars

    def _check_request(self, req: GenerateRequest) -> str:
        prompt = (req.prompt or "").strip()
        if not prompt:
            raise InvalidRequest("The prompt is empty: describe the music you want.", code="empty_prompt")
        if len(prompt) > self.max_prompt_chars:
            raise InvalidRequest(f"The prompt is {len(prompt)} characters long; the limit is {self.max_prompt_chars}.",
                                 code="prompt_too_long", max_chars=self.max_prompt_chars)
        if req.seed is not None and not 0 <= req.seed <= MAX_SEED:
            raise InvalidRequest(f"seed must be between 0 and {MAX_SEED}.", code="invalid_seed")
        return prompt

    def generate(self, req: GenerateRequest, on_step: StepCallback | None = None) -> GenerationResult:
        prompt = self._check_request(req)
        with self.manager.use("generating") as model:
            spec = model.spec
            _check_duration(req.duration_s, spec)
            settings = resolve_settings(req.settings, spec.generation)
            adapter = (self.adapters.for_generation(req.adapter_id, spec, model.weights_hash)
                       if req.adapter_id is not None else None)
            # Applying is a set_adapter when loaded (milliseconds): the base model is never reloaded. A structure
            # that does not fit is refused here, before any job is recorded.
            try:
                model.activate_adapter(adapter.key if adapter else None, adapter.folder if adapter else None)
            except StudioError:
                raise
            except Exception as exc:  # noqa: BLE001 - PEFT refusing the files: the request's fault, said once
                if adapter is None:
                    raise
                raise InvalidRequest(f"Adapter {adapter.label} could not be applied to "
                                     f"{spec.display_name}: {str(exc).splitlines()[0][:300] if str(exc) else exc!r}",
                                     code="adapter_load_failed", adapter_id=req.adapter_id) from None
            seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED + 1)
            return self._run(model, spec, prompt, req.duration_s, settings, seed, adapter, on_step)

    def _run(self, model, spec: ModelSpec, prompt: str, duration_s: float, settings: GenerationDefaults, seed: int,
             adapter: AdapterRef | None, on_step: StepCallback | None) -> GenerationResult:
        with session_scope(self.engine) as session:
            job = create_job(session, prompt=prompt, model_id=spec.id, settings=settings.model_dump(), seed=seed,
                             duration_s=duration_s, sample_rate=spec.sample_rate,
                             adapter_id=adapter.id if adapter else None)
            started = time.perf_counter()

            def step(done: int, total: int) -> None:
                if done == total or done % 10 == 0:
                    self.manager.set_activity(f"generating job {job.id} (step {done}/{total})")
                if on_step:
                    on_step(done, total)

            try:
                audio = model.generate(prompt, duration_s, SamplingParams(**settings.model_dump()), seed,
                                       on_step=step, should_stop=self.manager.should_stop)
            except Cancelled:
                finish_job(session, job, "cancelled", error="Cancelled by the user.")
                raise Cancelled(f"Job {job.id} was cancelled.", job_id=job.id) from None
            except Exception as exc:  # noqa: BLE001 - recorded, then reported as a domain error
                finish_job(session, job, "failed", error=str(exc)[:500] or exc.__class__.__name__)
                raise OperationFailed(f"Generation failed: {exc}", code="generation_failed", job_id=job.id) from None
            relative = Path("outputs") / f"job-{job.id:06d}.wav"
            path = self._write_wav(relative, audio, spec.sample_rate)
            try:
                if adapter is not None:
                    record_use(session, adapter.id)  # committed with the job
                finish_job(session, job, "succeeded", output_file=relative.as_posix())
            except Exception:
                path.unlink(missing_ok=True)  # the record and the file exist together or not at all
                session.rollback()
                finish_job(session, job, "failed", error="could not record the result")
                raise
            return GenerationResult(job_id=job.id, model_id=spec.id, prompt=prompt, seed=seed,
                                    duration_s=duration_s, sample_rate=spec.sample_rate, settings=settings,
                                    adapter_id=adapter.id if adapter else None,
                                    adapter_label=adapter.label if adapter else None, output_file=path.resolve(),
                                    elapsed_s=round(time.perf_counter() - started, 3))

    def _write_wav(self, relative: Path, audio, sample_rate: int) -> Path:
        path = self.data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".wav.part")
        try:
            sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="WAV")
            os.replace(tmp, path)  # atomic: a reader never sees half a file
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise OperationFailed(f"Could not write the audio file: {exc.strerror or exc}", code="disk_error") from None
        return path

    def cancel(self) -> bool:
        return self.manager.cancel()
