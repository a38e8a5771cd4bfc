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

    def nbytes(self) -> int:
        """Bytes held by the weights (for memory checks before the next load)."""


class Backend(Protocol):
    def load(self, folder: Path, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> LoadedModel: ...

    def unload(self, model: LoadedModel) -> None: ...
