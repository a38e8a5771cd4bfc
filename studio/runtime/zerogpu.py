"""ZeroGPU (Hugging Face Spaces): the worker's device work runs inside a `spaces.GPU` function.

On ZeroGPU a GPU is attached only while such a function runs, in a process of its own forked from the studio's: its
arguments and what it yields cross by pickling, so they are plain data (see LocalWorker._gpu_events). Elsewhere,
`spaces.GPU` returns the function unchanged. The `spaces` package is imported here only on a Space (app.py imports
it first there, before CUDA starts, as ZeroGPU requires): off a Space nothing imports it.
"""
from __future__ import annotations

import logging
from typing import Callable, TypeVar

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable)

# The duration a call asks for (seconds): ZeroGPU refuses a call that asks for more than its maximum (a few minutes,
# less for anonymous visitors) or than the visitor's quota left, and serves short requests first. So: what the
# batch needs, with a margin, within [MIN_S, MAX_S]; a piece longer than MAX_S of GPU time is cut by ZeroGPU.
MIN_S = 20
MAX_S = 120
START_S = 15.0  # attaching the GPU, moving the weights onto it, capturing the first CUDA graphs
MARGIN = 1.5  # a shared GPU's speed varies; running out aborts the whole batch


def gpu_seconds(steps: int, step_s: float | None, parameters: int) -> int:
    """The duration to ask for a batch of `steps` decoder steps of a model of `parameters`: from the speed the
    studio measured (seconds per step), else a guess for a large GPU (about 20 ms a step for MusicGen Small with
    guidance, growing with the model), within ZeroGPU's limits."""
    per_step = step_s if step_s is not None else 0.01 + 0.02 * parameters / 1e9
    return int(min(MAX_S, max(MIN_S, START_S + MARGIN * steps * per_step)))


def gpu_function(fn: F, duration: Callable[..., int]) -> F:
    """`fn` as a ZeroGPU function whose duration `duration(*args)` computes for each call."""
    import spaces  # noqa: PLC0415 - on a Space only; app.py imported it before torch

    return spaces.GPU(duration=duration)(fn)


def announce_ready() -> None:
    """ZeroGPU moves the CUDA tensors that exist at Gradio's launch() to the GPU process of each call and reports
    the Space ready then. The studio serves its mounted app with uvicorn and never calls launch(): run the same
    start-up once the model is loaded. No-op off ZeroGPU."""
    import spaces

    startup = getattr(getattr(spaces, "zero", None), "startup", None)
    if startup is None:  # not ZeroGPU (the package defines it only there), or another version of it
        log.warning("ZeroGPU start-up hook not found in the spaces package: GPU calls may fail")
        return
    startup()
