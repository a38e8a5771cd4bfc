"""The studio's worker as a Ray Serve deployment: each replica owns one device, one base model and an LRU of adapters.

A replica runs the same device work as the in-process worker (worker.device_work: the codec, the adapters, the
decode loop with its batching and streaming) and sends back the same plain events, as a stream through a Serve
handle. It never touches the database: the studio (studio.runtime.ray_worker) records everything.

Routing. A batch's multiplexed model id is its base model and adapters with their strengths
(ray_worker.multiplexed_id; a batch holds jobs of one id), so Serve sends it to a replica that already holds them
(`@serve.multiplexed`, least recently used evicted per replica). Why an id per adapter set and not only per base
model: the base model is the same on every replica (the studio runs one model at a time), so routing by base model
alone would spread one adapter's jobs over every replica, and each would load it. Serve's cap counts ids (8), the
model's own adapter cache adapters and bytes (LoadedModel.max_adapters, max_adapter_bytes): with stacks or several
strengths of one adapter the two differ, and the model's cache is the one that decides what stays loaded.

Imported by Ray's worker processes (and only where `ray` is installed: requirements-ray.txt).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import threading
import time
from collections import Counter
from pathlib import Path

from ray import serve

from studio.registry import ModelSpec, Registry
from studio.runtime.manager import ModelManager
from studio.runtime.store import ModelStore
from studio.runtime.adapters import MAX_LOADED_ADAPTERS
from studio.runtime.transformers_backend import TransformersBackend
from studio.runtime.ray_worker import adapters_of
from studio.runtime.worker import GenerateTask, device_work

log = logging.getLogger(__name__)

DEPLOYMENT = "StudioWorker"
STEP_EVERY_S = 0.1  # step events at most this often through Ray (a tiny model's step takes ~2 ms)


@dataclasses.dataclass(frozen=True)
class ReplicaConfig:
    """What every replica needs to load models: the studio's folders, on storage every replica reaches."""
    models_dir: str
    hf_cache_dir: str | None = None
    hf_endpoint: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    fast_path: bool = True
    stream_every_s: float | None = 1.0


class _AdapterLease:
    """What Serve's multiplexing caches for one id: evicting it lets go of its adapters (Serve calls __del__ on
    eviction, and the garbage collector may call it again: once counts)."""

    def __init__(self, replica: "StudioWorker", names: tuple[str, ...]):
        self.replica, self.names, self.released = replica, names, False
        replica.hold(names)

    def __del__(self) -> None:
        if not self.released:
            self.released = True
            self.replica.release(self.names)


# graceful shutdown: 2 s, not Serve's 20: a studio that stops has stopped reading, and its jobs are interrupted
@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=1, health_check_period_s=2, health_check_timeout_s=30,
                  graceful_shutdown_timeout_s=2)
class StudioWorker:
    """One replica: a ModelManager on this replica's device (Serve gives it its own GPU through num_gpus)."""

    def __init__(self, config: ReplicaConfig, threads: int | None = None):
        self.config = config
        if threads:  # CPU replicas sharing a machine: each its share of the cores (they would all take every one)
            import torch

            torch.set_num_threads(threads)
        store = ModelStore(Path(config.models_dir), Path(config.hf_cache_dir) if config.hf_cache_dir else None,
                           config.hf_endpoint)
        self.backend = TransformersBackend(fast_path=None if config.fast_path else False)
        self.store = store
        self.manager: ModelManager | None = None  # built with the first model asked for
        self.name = serve.get_replica_context().replica_id.unique_id
        self._lock = threading.Lock()  # the model: one batch at a time (max_ongoing_requests=1 says so too)
        self._held_lock = threading.Lock()
        self._held: Counter = Counter()  # adapter -> ids in Serve's cache that use it
        self._broken: str | None = None  # why the device cannot be used any more (the health check says so)

    @serve.multiplexed(max_num_models_per_replica=MAX_LOADED_ADAPTERS)  # the model's own adapter cache size
    async def lease(self, key: str) -> _AdapterLease:
        return _AdapterLease(self, tuple(adapters_of(key)))

    def hold(self, names: tuple[str, ...]) -> None:
        with self._held_lock:
            self._held.update(names)
        if self.manager is not None:  # Serve evicts before it leases: an adapter of both stays
            for name in names:
                self.manager.keep_adapter(name)

    def release(self, names: tuple[str, ...]) -> None:
        """An id left Serve's cache: its adapters that no cached id still uses are unloaded when the model is next
        used (never mid-decode). A stack and a single adapter, or two strengths, share adapters."""
        with self._held_lock:
            self._held.subtract(names)
            free = [n for n in set(names) if self._held[n] <= 0]
            for name in free:
                del self._held[name]
        if self.manager is not None:
            for name in free:
                self.manager.discard_adapter(name)

    def _ensure_model(self, spec: ModelSpec) -> None:
        """Load `spec` unless it is the model this replica holds (a switch releases the other one first)."""
        if self.manager is None:
            registry = Registry(default_model=spec.id, models=[spec])
            self.manager = ModelManager(registry, self.store, self.backend, self.config.device, self.config.dtype)
        elif spec.id not in {m.id for m in self.manager.registry.models}:
            self.manager.registry.add_custom(spec)
        if self.manager.status().model_id == spec.id:
            return
        final = self.manager.switch_and_wait(spec.id, "Loaded by a Ray Serve replica.")
        if final.stage != "ready":
            raise RuntimeError(final.message)

    async def generate(self, spec: ModelSpec, batch: list[GenerateTask]):
        """The batch's events (worker.device_work's tuples), first ('placed', replica, hit): hit when the replica
        already held the model and every adapter of the batch."""
        await self.lease(serve.get_multiplexed_model_id())
        events: queue.SimpleQueue = queue.SimpleQueue()
        stopping = _Closed({t.job_id for t in batch})

        def work() -> None:
            try:
                with self._lock:
                    held = self.manager is not None and self.manager.status().model_id == spec.id
                    self._ensure_model(spec)
                    with self.manager.use(f"generating {len(batch)} job(s)") as model:
                        hit = held and all(name in model.adapters for t in batch for name, _ in t.adapter_files())
                        events.put(("placed", self.name, hit))
                        device_work(model, batch, stopping, _Coalesced(events.put),
                                    self.config.stream_every_s)
            except Exception as exc:  # noqa: BLE001 - said to the studio as the batch's failure
                log.exception("batch failed on replica %s", self.name)
                message = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
                if "CUDA error" in message or "device-side assert" in message:  # the device is gone for good
                    self._broken = message
                events.put(("decode_failed", message.strip().splitlines()[0][:300]))
            finally:
                events.put(None)

        thread = threading.Thread(target=work, name="studio-replica-batch", daemon=True)
        thread.start()
        loop = asyncio.get_running_loop()
        try:
            while (event := await loop.run_in_executor(None, events.get)) is not None:
                yield event
        finally:  # the studio closed the stream (every row cancelled) or the request was cancelled
            stopping.closed = True
            await loop.run_in_executor(None, thread.join)

    def check_health(self) -> None:
        """Serve's health check: a replica whose device failed (a CUDA error poisons the process) is replaced."""
        if self._broken is not None:
            raise RuntimeError(f"the device failed: {self._broken}")


class _Closed:
    """The rows to stop: none, until the studio closes the stream (then all: it cancelled every one)."""

    def __init__(self, job_ids: set[int]):
        self.job_ids, self.closed = job_ids, False

    def __contains__(self, job_id: int) -> bool:
        return self.closed and job_id in self.job_ids


class _Coalesced:
    """Passes every event on, except step events: at most one each STEP_EVERY_S, and always the last of a batch."""

    def __init__(self, emit):
        self.emit, self.last, self.pending = emit, 0.0, None

    def __call__(self, event: tuple) -> None:
        if event[0] == "step":
            _, done, total = event
            now = time.monotonic()
            if done < total and now - self.last < STEP_EVERY_S:
                self.pending = event
                return
            self.last, self.pending = now, None
        elif self.pending is not None:
            self.emit(self.pending)
            self.pending = None
        self.emit(event)
