"""The backend protocol: how the manager loads a model folder and how a loaded model generates."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from studio.registry import ModelSpec

StepCallback = Callable[[int, int], None]  # (steps_done, steps_total)


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool
    top_k: int
    top_p: float
    temperature: float
    guidance_scale: float


@dataclass(frozen=True)
class Row:
    """One row of a decoding batch: its own prompt, length, seed, sampling settings and adapter."""
    prompt: str
    frames: int  # audio frames wanted (round(duration_s * frame_rate)); rows of a batch may differ
    seed: int  # each row samples with its own generator seeded with this
    params: SamplingParams
    adapter: str | None = None  # name of a PEFT adapter already loaded in the model; None: the base weights


class DecodeHooks:
    """What a caller hears from a decoding batch; every method is optional (the defaults do nothing)."""

    def on_step(self, done: int, total: int) -> None:
        """After each decoder step of the batch."""

    def stopped(self, row: int) -> bool:
        """True once row `row` was cancelled: it stops being decoded and its result is None."""
        return False

    def on_audio(self, row: int, start_sample: int, chunk: np.ndarray) -> None:
        """New streamed audio of row `row`: float32 (samples, channels) starting at start_sample."""


@dataclass
class RowResult:
    codes: np.ndarray  # int64 (codebooks, frames): the generated codes, delay pattern undone
    audio: np.ndarray  # float32 (samples, channels), exactly frames / frame_rate seconds


class LoadedModel(Protocol):
    spec: ModelSpec
    weights_hash: str | None  # fingerprint of the loaded weights, when known
    adapters: dict[str, Path]  # LoRA adapters loaded next to the base weights

    def load_adapter(self, name: str, folder: Path) -> None:
        """Check the adapter's structure against this model and load it (not active yet)."""

    def activate_adapter(self, name: str | None, folder: Path | None = None) -> None:
        """Use adapter `name` (loading it if needed), or the bare base model (None)."""

    def unload_adapter(self, name: str) -> None: ...

    def generate(self, prompt: str, duration_s: float, params: SamplingParams, seed: int,
                 on_step: StepCallback | None = None, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """Audio as float32 (samples, channels) at spec.sample_rate, exactly duration_s long.

        Raises studio.errors.Cancelled when should_stop() turned true during decoding."""

    def generate_batch(self, rows: list[Row], hooks: DecodeHooks | None = None, stream_every_s: float | None = 1.0,
                       fast_path: bool | None = None) -> list[RowResult | None]:
        """Decode rows together (None for a row its hooks stopped)."""

    def nbytes(self) -> int:
        """Bytes held by the weights (for memory checks before the next load)."""


class Backend(Protocol):
    def load(self, folder: Path, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> LoadedModel: ...

    def unload(self, model: LoadedModel) -> None: ...
