"""Generation use case: validate against the loaded model's limits, generate, store audio + job together."""
from __future__ import annotations

import math
import secrets
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from studio.db.engine import session_scope
from studio.db.adapters import record_use
from studio.db.jobs import create_job, finish_job
from studio.errors import Cancelled, InvalidRequest, OperationFailed, StudioError
from studio.gen_settings import MAX_SEED, MusicgenSettings
from studio.registry import ModelSpec
from studio.runtime.backend import SamplingParams
from studio.runtime.manager import ModelManager
from studio.services.adapters import AdapterRef, AdapterService
from studio.services.audio_out import finish_audio, write_audio
from studio.services.gen_config import GenerationConfigService

StepCallback = Callable[[int, int], None]


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored

    prompt: str = Field(description="what the music should sound like")
    duration_s: float | None = Field(None, description=(
        "seconds of audio, at most the loaded model's max_duration_s; none: the model's default_duration_s setting"))
    seed: int | None = Field(None, description=(
        "same prompt, settings and seed give the same audio; none: the model's seed policy (random by default)"))
    settings: dict[str, Any] | None = Field(None, description=(
        "overrides of the model's stored generation settings for this request only "
        "(schema: GET /api/models/{id}/config/schema)"))
    adapter_id: int | None = Field(None, ge=1, le=2 ** 63 - 1,  # a database id: 64 bits
                                   description="a LoRA adapter compatible with the loaded model; none: base")


class GenerationResult(BaseModel):
    job_id: int
    model_id: str
    prompt: str
    seed: int
    duration_s: float
    sample_rate: int
    settings: dict[str, Any]  # every setting the generation used (stored settings + the request's overrides)
    adapter_id: int | None
    adapter_label: str | None
    output_file: Path  # absolute path of the audio file (wav, flac or mp3, as the settings say)
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


class GenerationService:
    def __init__(self, manager: ModelManager, engine, adapters: AdapterService, configs: GenerationConfigService,
                 data_dir: Path, max_prompt_chars: int = 1000):
        self.manager, self.engine, self.adapters, self.configs = manager, engine, adapters, configs
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
            settings = self.configs.resolve(spec, req.settings)
            duration_s = req.duration_s if req.duration_s is not None else settings.default_duration_s
            _check_duration(duration_s, spec)
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
            if req.seed is not None:
                seed = req.seed
            elif settings.seed_policy == "fixed":
                seed = settings.seed
            else:
                seed = secrets.randbelow(MAX_SEED + 1)
            return self._run(model, spec, prompt, duration_s, settings, seed, adapter, on_step)

    def _run(self, model, spec: ModelSpec, prompt: str, duration_s: float, settings: MusicgenSettings, seed: int,
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
                params = SamplingParams(do_sample=settings.do_sample, top_k=settings.top_k, top_p=settings.top_p,
                                        temperature=settings.temperature, guidance_scale=settings.guidance_scale)
                audio = model.generate(prompt, duration_s, params, seed, on_step=step,
                                       should_stop=self.manager.should_stop)
            except Cancelled:
                finish_job(session, job, "cancelled", error="Cancelled by the user.")
                raise Cancelled(f"Job {job.id} was cancelled.", job_id=job.id) from None
            except Exception as exc:  # noqa: BLE001 - recorded, then reported as a domain error
                finish_job(session, job, "failed", error=str(exc)[:500] or exc.__class__.__name__)
                raise OperationFailed(f"Generation failed: {exc}", code="generation_failed", job_id=job.id) from None
            try:
                audio = finish_audio(audio, spec.sample_rate, settings)
                path = write_audio(self.outputs_dir / f"job-{job.id:06d}", audio, spec.sample_rate,
                                   settings.output_format)
            except Exception as exc:  # noqa: BLE001 - the job is closed as failed, never left "running"
                finish_job(session, job, "failed", error=str(exc)[:500] or exc.__class__.__name__)
                if isinstance(exc, StudioError):
                    raise
                raise OperationFailed(f"Could not finish the audio: {exc}", code="generation_failed",
                                      job_id=job.id) from None
            relative = path.relative_to(self.data_dir)
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
                                    duration_s=duration_s, sample_rate=spec.sample_rate, settings=settings.model_dump(),
                                    adapter_id=adapter.id if adapter else None,
                                    adapter_label=adapter.label if adapter else None, output_file=path.resolve(),
                                    elapsed_s=round(time.perf_counter() - started, 3))

    def cancel(self) -> bool:
        return self.manager.cancel()
