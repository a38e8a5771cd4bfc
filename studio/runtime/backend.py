"""The backend protocol: how the manager loads a model folder and how a loaded model generates."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

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
    """One clip of a batch decode: its own prompt, length, seed, sampling settings and adapter."""
    prompt: str
    frames: int  # audio frames wanted (round(duration_s * frame_rate)); rows of a batch may differ
    seed: int  # each row gets its own torch.Generator seeded with this
    params: SamplingParams
    adapter: str | None = None  # name of an adapter already loaded in the model (load_adapter); None = base
    # The codes this row continues (codebooks, frames), delay pattern undone: an uploaded clip encoded, or a
    # finished job's codes ("Extend this"). `frames` are the NEW frames; the result starts with these codes' audio
    # when keep_prompt.
    prompt_codes: np.ndarray | None = field(default=None, compare=False, repr=False)
    keep_prompt: bool = True
    # Melody models: the melody clip's chromagram (chroma frames, 12), what the model follows
    melody: np.ndarray | None = field(default=None, compare=False, repr=False)
    # An adapter stack: (loaded adapter name, strength) in order; empty: `adapter` alone at strength 1 (or base)
    adapters: tuple[tuple[str, float], ...] = ()


class DecodeHooks(Protocol):
    """What a batch decode reports and asks while it runs. The bodies are the defaults: subclass this to override
    only what you need (an object that does not subclass it may also leave methods out)."""

    def on_plan(self, ends: list[int], total: int) -> None:
        """Before the first step: the batch's step at which each row is done (its last window's end), of `total`
        steps over every window."""

    def on_step(self, done: int, total: int) -> None:
        """After each decoder step of the batch (done counts every window's steps; it may skip the steps of a
        window shortened by a cancelled row)."""

    def stopped(self, row: int) -> bool:
        """True once row `row` is cancelled: it is no longer emitted and its result is None."""
        return False

    def on_audio(self, row: int, start_sample: int, chunk: np.ndarray) -> None:
        """New streamed audio of row `row`: float32 (samples, channels) starting at start_sample."""

    def on_logits(self, step: int, logits: torch.Tensor) -> None:
        """Debug: the decoder's raw logits at step `step`, BEFORE guidance, shaped (rows or 2 x rows, codebooks,
        vocab); with guidance the conditional rows come first, then the unconditional ones."""


@dataclass
class RowResult:
    codes: np.ndarray  # int64 (codebooks, frames): the result's codes (the prompt's first when kept), undelayed
    audio: np.ndarray  # float32 (samples, channels), exactly round(frames / frame_rate * sample_rate) samples
    windows: int = 1  # decoding windows it took (a long piece: more than one)


class LoadedModel(Protocol):
    spec: ModelSpec
    weights_hash: str | None  # fingerprint of the loaded weights, when known
    adapters: dict[str, Path]  # LoRA adapters loaded next to the base weights

    def load_adapter(self, name: str, folder: Path, keep: Sequence[str] = ()) -> None:
        """Check the adapter's structure against this model and load it (not active yet); making room never
        unloads the adapters named in `keep` (the rest of a stack)."""

    def activate_adapter(self, name: str | None, folder: Path | None = None) -> None:
        """Use adapter `name` (loading it if needed), or the bare base model (None)."""

    def unload_adapter(self, name: str) -> None: ...

    def generate(self, prompt: str, duration_s: float, params: SamplingParams, seed: int,
                 on_step: StepCallback | None = None, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """Audio as float32 (samples, channels) at spec.sample_rate, exactly duration_s long.

        Raises studio.errors.Cancelled when should_stop() turned true during decoding."""

    def generate_batch(self, rows: Sequence[Row], hooks: DecodeHooks | None = None,
                       stream_every_s: float | None = 1.0, window: int | None = None,
                       stride: int | None = None) -> list[RowResult | None]:
        """Decode several rows in one batch (None for a row that hooks.stopped() cancelled); streams each row's
        audio to hooks.on_audio every stream_every_s seconds of new audio (None: no streaming). Rows longer than
        `window` frames (None: the model's window) are decoded window by window, each further one adding `stride`
        new frames."""

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """float32 (samples, channels) at spec.sample_rate -> int64 codes (codebooks, frames) of the model's
        codec: a clip to continue (Row.prompt_codes)."""

    def row_bytes(self, frames: int) -> int:
        """Memory one row of `frames` audio frames holds while a batch decodes."""

    def nbytes(self) -> int:
        """Bytes held by the weights (for memory checks before the next load)."""


class Backend(Protocol):
    def load(self, folder: Path, spec: ModelSpec, device: torch.device, dtype: torch.dtype) -> LoadedModel: ...

    def unload(self, model: LoadedModel) -> None: ...
