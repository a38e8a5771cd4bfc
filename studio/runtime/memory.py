"""Device choice, free-memory probes and releasing memory for real after an unload."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc

import psutil
import torch

GB = 1024**3


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def free_bytes(device: torch.device) -> int:
    """Memory a new model could use on `device` right now."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
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
