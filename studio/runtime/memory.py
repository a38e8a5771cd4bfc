"""Device choice, free-memory probes and releasing memory for real after an unload."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from dataclasses import dataclass
from typing import Literal

import psutil
import torch

GB = 1024**3


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cuda_available() -> bool:
    return torch.cuda.is_available()


@dataclass(frozen=True)
class Hardware:
    """What the studio generates on, for choosing a default model (services/models.py default_model)."""
    kind: Literal["cpu", "cuda", "mps", "zerogpu"]
    total_gb: float = 0.0  # the device's memory (RAM on a CPU)
    free_gb: float = 0.0  # what a model could use now
    half: bool = False  # weights in half precision (CUDA's default): a model needs about half its memory_gb


def probe_hardware(device: torch.device, dtype: torch.dtype, zero_gpu: bool = False) -> Hardware:
    """The hardware behind `device`. On ZeroGPU no GPU is attached outside a spaces.GPU call (and the `spaces`
    package makes CUDA look present): say so rather than probe it."""
    if zero_gpu:
        return Hardware("zerogpu", half=dtype in (torch.float16, torch.bfloat16))
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return Hardware("cuda", total / GB, free / GB, half=dtype in (torch.float16, torch.bfloat16))
    ram = psutil.virtual_memory()
    return Hardware("mps" if device.type == "mps" else "cpu", ram.total / GB, ram.available / GB)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def free_bytes(device: torch.device) -> int:
    """Memory a new model could use on `device` right now."""
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
        except RuntimeError:  # ZeroGPU outside a GPU call: no GPU attached, the package describes the one lent
            return int(torch.cuda.get_device_properties(device).total_memory)
        return int(free)
    return int(psutil.virtual_memory().available)


def process_rss() -> int:
    return psutil.Process().memory_info().rss


def cuda_allocated(device: torch.device) -> int:
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else 0


def release_memory(device: torch.device) -> None:
    """Give freed memory back: collect cycles, empty the CUDA cache, and trim glibc's heap.

    Without malloc_trim the CPU process keeps freed weights in its heap and RSS never drops, which is
    the "memory not freed on switch" that users of other web UIs complain about.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
            pass
