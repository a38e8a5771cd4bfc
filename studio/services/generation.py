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
from studio.errors import Cancelled, InvalidRequest, InvalidValues, OperationFailed, StudioError
from studio.gen_settings import MAX_SEED, RANDOM_SEED, MusicgenSettings
from studio.registry import ModelSpec
from studio.runtime.backend import SamplingParams
from studio.runtime.manager import ModelManager
from studio.services.adapters import AdapterRef, AdapterService
from studio.services.audio_out import TARGET_TOLERANCE_LU, download_name, finish_audio, write_measured
from studio.services.gen_config import GenerationConfigService

StepCallback = Callable[[int, int], None]


MAX_ID = 2**63 - 1  # the database's integer range


def music_progress(done: int, total: int, duration_s: float, percent: bool = True) -> str:
    """A generation's progress as a musician reads it: seconds of music made and percent, not decoding steps
    (percent=False where a progress bar shows its own)."""
    fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
    text = f"{fraction * duration_s:.1f} of {duration_s:g} s"
    return f"{text} ({fraction * 100:.0f} %)" if percent else text


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
    loudness_lufs: float | None = Field(description="integrated loudness of the written file (None: undefined)")
    true_peak_dbtp: float | None = Field(description="true peak of the written file, decoded (None: silence)")
    loudness_note: str | None = Field(description="set when loudness normalisation did not reach its target")


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


def _check_duration(duration_s: float, spec: ModelSpec) -> None:
    if not math.isfinite(duration_s) or duration_s <= 0:
        raise _refuse("duration_s", "duration_s must be a positive number of seconds.", "invalid_duration",
                      max_duration_s=spec.max_duration_s)
    if duration_s > spec.max_duration_s:
        raise _refuse("duration_s", duration_over_limit(duration_s, spec.display_name, spec.max_duration_s),
                      "duration_exceeds_limit", max_duration_s=spec.max_duration_s, model_id=spec.id)
    if round(duration_s * spec.frame_rate) < 1:
        raise _refuse("duration_s", f"duration_s must be at least {1 / spec.frame_rate:g} s (one audio frame).",
                      "invalid_duration", max_duration_s=spec.max_duration_s)


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
            if req.seed is not None and req.seed != RANDOM_SEED:
                seed = req.seed
            elif req.seed is None and settings.seed_policy == "fixed":
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
                    self.manager.set_activity(f"generating job {job.id}: {music_progress(done, total, duration_s)}")
                if on_step:
                    on_step(done, total)

            try:
                params = SamplingParams(do_sample=settings.do_sample, top_k=settings.top_k, top_p=settings.top_p,
                                        temperature=settings.temperature, guidance_scale=settings.guidance_scale)
                audio = model.generate(prompt, duration_s, params, seed, on_step=step,
                                       should_stop=self.manager.should_stop)
            except Cancelled:
                job = finish_job(session, job, "cancelled", error="Cancelled by the user.")
                raise Cancelled(f"Cancelled: job {job.id} stopped after {job.elapsed_s:.1f} s.", job_id=job.id,
                                elapsed_s=job.elapsed_s) from None
            except Exception as exc:  # noqa: BLE001 - recorded, then reported as a domain error
                finish_job(session, job, "failed", error=str(exc)[:500] or exc.__class__.__name__)
                raise OperationFailed(f"Generation failed: {exc}", code="generation_failed", job_id=job.id) from None
            try:
                audio = finish_audio(audio, spec.sample_rate, settings)
                name = download_name(prompt, job.id, settings.output_format)
                path, measured = write_measured(self.outputs_dir / name, audio, spec.sample_rate, settings)
            except Exception as exc:  # noqa: BLE001 - the job is closed as failed, never left "running"
                finish_job(session, job, "failed", error=str(exc)[:500] or exc.__class__.__name__)
                if isinstance(exc, StudioError):  # e.g. DiskFull: the job's record carries the same message
                    exc.extra.setdefault("job_id", job.id)
                    raise
                raise OperationFailed(f"Could not finish the audio: {exc}", code="generation_failed",
                                      job_id=job.id) from None
            relative = path.relative_to(self.data_dir)
            try:
                if adapter is not None:
                    record_use(session, adapter.id)  # committed with the job
                finish_job(session, job, "succeeded", output_file=relative.as_posix(),
                           loudness_lufs=measured.loudness_lufs, true_peak_dbtp=measured.true_peak_dbtp)
            except Exception:
                path.unlink(missing_ok=True)  # the record and the file exist together or not at all
                session.rollback()
                finish_job(session, job, "failed", error="could not record the result")
                raise
            return GenerationResult(job_id=job.id, model_id=spec.id, prompt=prompt, seed=seed,
                                    duration_s=duration_s, sample_rate=spec.sample_rate, settings=settings.model_dump(),
                                    adapter_id=adapter.id if adapter else None,
                                    adapter_label=adapter.label if adapter else None, output_file=path.resolve(),
                                    elapsed_s=round(time.perf_counter() - started, 3),
                                    loudness_lufs=measured.loudness_lufs, true_peak_dbtp=measured.true_peak_dbtp,
                                    loudness_note=loudness_note(settings, measured.loudness_lufs,
                                                                measured.true_peak_dbtp))

    def cancel(self) -> bool:
        return self.manager.cancel()
