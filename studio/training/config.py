"""The training configuration: one typed class, grouped (Model, LoRA, Training, Hardware, Checkpointing, DPO).

Like the generation settings (studio/gen_settings.py): strict pydantic, every field with its type, default, bounds
and a description; "x-group" puts it in a group of the form and of the adapter's configuration view, "x-step" is a
slider's step. Its JSON Schema is published by the API and the run form is built from it. A run stores the whole
configuration (every field) and so does the adapter registered from it, so the configuration view shows exactly what
was used. Defaults are sensible for a MusicGen LoRA on a small dataset.
"""
from __future__ import annotations

import math
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GROUPS = ("Model", "LoRA", "Training", "Hardware", "Checkpointing", "DPO")
MAX_SEED = 2**32 - 1

# LoRA targets inside MusicGen's decoder (never the T5 text encoder, whose layers are also named q/k/v/o): a regex
# PEFT matches against full module names. See ../shared/NOTES.md "PEFT 0.21 on MusicGen".
_LAYER = r"decoder\.model\.decoder\.layers\.\d+\."
TARGET_PRESETS: dict[str, str] = {
    "self-attention": _LAYER + r"self_attn\.(q|k|v|out)_proj",
    "attention": _LAYER + r"(self_attn|encoder_attn)\.(q|k|v|out)_proj",
    "attention+ffn": _LAYER + r"((self_attn|encoder_attn)\.(q|k|v|out)_proj|fc1|fc2)",
}


def _group(name: str, **extra) -> dict:
    return {"x-group": name, **extra}


class TrainingConfig(BaseModel):
    """How a LoRA adapter is trained on a MusicGen model: supervised (sft) on a dataset of clips with captions, or
    by preference (dpo) on the votes of a finished blind A/B test."""

    # strict like every request body: "8" is not a rank and 1 is not a boolean; a misspelt key is an error
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False,
                              title="LoRA training configuration")

    # ---- Model ----------------------------------------------------------------------------------------------
    clip_duration_s: float = Field(10.0, ge=1.0, le=30.0, title="Training clip length (s)",
                                   json_schema_extra=_group("Model", **{"x-step": 0.5}), description=(
        "Clips longer than this are cut at a random place each time they are used (never longer than the model's "
        "window). MusicGen was trained on 30 s; 5 to 15 s keeps steps fast."))

    # ---- LoRA -----------------------------------------------------------------------------------------------
    r: int = Field(16, ge=1, le=256, title="Rank (r)", json_schema_extra=_group("LoRA"), description=(
        "Size of the low-rank update matrices: more capacity and a bigger file as it grows. Typical: 8 to 32."))
    lora_alpha: int = Field(32, ge=1, le=1024, title="Alpha", json_schema_extra=_group("LoRA"), description=(
        "Scales the update by alpha / r. Typical: r or 2 × r."))
    lora_dropout: float = Field(0.05, ge=0.0, le=0.5, title="Dropout", json_schema_extra=_group(
        "LoRA", **{"x-step": 0.01}), description="Dropout on the LoRA input while training, against over-fitting.")
    target_modules: Literal[tuple(TARGET_PRESETS)] = Field(
        "attention", title="Target modules", json_schema_extra=_group("LoRA"), description=(
            "Which decoder layers get LoRA matrices: self-attention only; self- and cross-attention (the text "
            "reaches the music through cross-attention); or those plus the feed-forward layers (most capacity)."))

    # ---- Training -------------------------------------------------------------------------------------------
    learning_rate: float = Field(1e-4, gt=0.0, le=1e-2, title="Learning rate", json_schema_extra=_group(
        "Training", **{"x-step": 1e-5}), description="Step size of AdamW. Typical for LoRA: 5e-5 to 5e-4.")
    max_steps: int = Field(500, ge=1, le=1_000_000, title="Steps", json_schema_extra=_group("Training"),
                           description="Optimiser steps in total (used when Epochs is 0).")
    epochs: int = Field(0, ge=0, le=10_000, title="Epochs", json_schema_extra=_group("Training"), description=(
        "Passes over the dataset; 0: train for Steps instead. One epoch is (clips / (batch × accumulation)) "
        "steps, rounded up."))
    batch_size: int = Field(2, ge=1, le=64, title="Batch size", json_schema_extra=_group("Training"),
                            description="Clips per forward pass. Typical: 1 to 8.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=256, title="Gradient accumulation",
                                             json_schema_extra=_group("Training"), description=(
        "Batches summed before each optimiser step: the effective batch is batch size × this."))
    warmup_steps: int = Field(20, ge=0, le=100_000, title="Warm-up steps", json_schema_extra=_group("Training"),
                              description="Steps over which the learning rate ramps up from 0.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "cosine", title="LR schedule", json_schema_extra=_group("Training"),
        description="After warm-up: constant, linear decay to 0, or cosine decay to 0.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, title="Weight decay", json_schema_extra=_group(
        "Training", **{"x-step": 0.001}), description="AdamW's decoupled weight decay on the LoRA matrices.")
    max_grad_norm: float = Field(1.0, ge=0.0, le=100.0, title="Gradient clipping", json_schema_extra=_group(
        "Training", **{"x-step": 0.1}), description="Gradients are scaled down to this norm when larger (0: off).")
    cfg_dropout: float = Field(0.3, ge=0.0, le=1.0, title="Text dropout (guidance)", json_schema_extra=_group(
        "Training", **{"x-step": 0.05}), description=(
        "Share of clips trained without their text, so classifier-free guidance keeps working (audiocraft: 0.3)."))
    seed: int = Field(0, ge=0, le=MAX_SEED, title="Seed", json_schema_extra=_group("Training"), description=(
        "Same seed, data and configuration: the same run (clip order, crops, dropout), also across stop/resume."))

    # ---- Hardware -------------------------------------------------------------------------------------------
    device: Literal["auto", "cpu", "cuda"] = Field("auto", title="Device", json_schema_extra=_group("Hardware"),
                                                   description="auto: the device the studio generates on.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", title="Precision", json_schema_extra=_group("Hardware"), description=(
            "auto: fp32 on a CPU (bf16 is slower there), bf16 on a GPU that supports it, else fp16 with loss "
            "scaling. The LoRA matrices are always kept in fp32."))
    threads: int = Field(0, ge=0, le=256, title="CPU threads", json_schema_extra=_group("Hardware"), description=(
        "Threads the run may use on a CPU; 0: half of the cores (at least 1), so generation keeps the rest."))

    # ---- Checkpointing --------------------------------------------------------------------------------------
    checkpoint_every: int = Field(100, ge=1, le=1_000_000, title="Checkpoint every (steps)",
                                  json_schema_extra=_group("Checkpointing"), description=(
        "A checkpoint (the adapter, auditioned) every this many steps, and one at the end or when stopped."))
    keep_last: int = Field(2, ge=1, le=1000, title="Resume states kept", json_schema_extra=_group("Checkpointing"),
                           description=(
        "How many of the newest checkpoints keep their optimiser state (needed to resume from them). Every "
        "checkpoint keeps its adapter (a few MB) for audition and registration."))
    audition_prompts: int = Field(2, ge=0, le=8, title="Audition prompts", json_schema_extra=_group(
        "Checkpointing"), description=(
        "Prompts generated at every checkpoint, with the same seeds, for the base and the checkpoint (0: no "
        "audition). Taken from the dataset's captions (DPO: the A/B test's prompts)."))
    audition_duration_s: float = Field(4.0, ge=1.0, le=30.0, title="Audition length (s)", json_schema_extra=_group(
        "Checkpointing", **{"x-step": 0.5}), description="Length of each audition clip (at most the model's window).")

    # ---- DPO ------------------------------------------------------------------------------------------------
    dpo_beta: float = Field(0.1, gt=0.0, le=10.0, title="Beta", json_schema_extra=_group("DPO", **{"x-step": 0.01}),
                            description=(
        "How far the adapter may move from the reference to follow the votes: lower moves further. Typical: 0.1."))
    dpo_reference: Literal["start", "base"] = Field(
        "start", title="Reference", json_schema_extra=_group("DPO"), description=(
            "start: the adapter the run starts from (the A/B test's winner); base: the model without adapter."))


def total_steps(config: TrainingConfig, examples: int) -> int:
    """Optimiser steps of a run: epochs x steps per epoch (rounded up), or max_steps. One definition for the
    studio (which shows the total before the run starts) and the trainer."""
    if config.epochs > 0:
        per_epoch = math.ceil(max(1, examples) / (config.batch_size * config.gradient_accumulation_steps))
        return per_epoch * config.epochs
    return config.max_steps


def cpu_threads(requested: int) -> int:
    """The CPU threads a run takes: as configured, or (0) half of the cores, at least 1."""
    return requested if requested > 0 else max(1, (os.cpu_count() or 2) // 2)


def group_of(field: str) -> str:
    """The group a configuration field is shown in."""
    extra = TrainingConfig.model_fields[field].json_schema_extra or {}
    return extra["x-group"]


def config_schema() -> dict:
    return TrainingConfig.model_json_schema()
