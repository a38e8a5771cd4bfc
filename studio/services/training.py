"""Training runs: LoRA fine-tuning (sft on a dataset, dpo on an A/B test's votes) in a spawned subprocess the
studio supervises, its live events, stop and resume, auditions of every checkpoint through the job queue, and the
registration of any checkpoint as an adapter version with its provenance.

Device policy ("beside"): a run trains beside generation, never instead of it. On a CPU it takes `threads` cores
(default half) at a lower OS priority, so generation keeps the others; on a GPU it shares the device's memory with
the loaded model and fails with out_of_memory, saying so, when there is not enough. One run trains at a time; others
wait (queued). The queue view says which run is training and how.

(Contract written first; the lane `runs` implements it.)
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from studio.users import LOCAL_USER

MAX_ID = 2**63 - 1
RunStatus = Literal["queued", "running", "stopping", "succeeded", "stopped", "failed", "interrupted"]
DEVICE_POLICY = ("beside: a run trains beside generation (on a CPU with its own share of the cores at a lower "
                 "priority; on a GPU sharing its memory); generation jobs never wait for it")


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
    status: str = Field(description="a job status, or 'waiting' (for the run's base model to be loaded)")
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


class TrainingService:
    def __init__(self, engine, registry, store, manager, queue, generation, adapters, datasets, evaluation,
                 data_dir, device: str):
        self.engine, self.registry, self.store, self.manager = engine, registry, store, manager
        self.queue, self.generation, self.adapters, self.datasets = queue, generation, adapters, datasets
        self.evaluation, self.data_dir, self.device = evaluation, data_dir, device

    def config_schema(self) -> dict:
        raise NotImplementedError

    def create(self, req: CreateRunRequest, user: str = LOCAL_USER) -> RunInfo:
        raise NotImplementedError

    def list(self, *, status: str | None = None, model_id: str | None = None) -> list[RunSummary]:
        raise NotImplementedError

    def get(self, run_id: int) -> RunInfo:
        raise NotImplementedError

    def follow(self, run_id: int, keepalive_s: float | None = None) -> Iterator[RunEvent | None]:
        """The run's events from now to its end (None: a keep-alive tick); a run over: its final event."""
        raise NotImplementedError

    def stop(self, run_id: int, user: str = LOCAL_USER) -> RunInfo:
        """Ask the run to stop; returns once it saved its checkpoint and ended (a few seconds at most), or at once
        for a queued run (which then never starts)."""
        raise NotImplementedError

    def resume(self, run_id: int, user: str = LOCAL_USER) -> RunInfo:
        """A stopped, interrupted or failed run goes on from its last resumable checkpoint (queued again)."""
        raise NotImplementedError

    def register(self, run_id: int, req: RegisterCheckpointRequest, user: str = LOCAL_USER):
        """A checkpoint becomes an adapter version with its provenance (an AdapterInfo)."""
        raise NotImplementedError

    def training_line(self) -> str | None:
        """What the queue view says about training (None: no run trains)."""
        return None

    def resume_interrupted(self) -> list[int]:
        """At start: the runs that were running when the studio stopped go on from their last checkpoint."""
        return []

    def close(self) -> None:
        """The studio stops: running runs are stopped (checkpoint saved) and stay resumable."""
