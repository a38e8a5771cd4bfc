"""ModelManager: the sole owner of the loaded model, used by the worker (studio.runtime.worker) alone.

The worker runs switches and generations one at a time, in queue order; the manager's own exclusion (Busy) only
guards against a caller that bypasses the queue (tests, benchmarks). A switch runs in its own thread and streams
ProgressEvents, so a follower that goes away never leaves the manager half-switched.
"""
from __future__ import annotations

import logging
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch

from studio.errors import Busy, NoModelLoaded
from studio.registry import ModelSpec, Registry
from studio.runtime.backend import Backend, LoadedModel
from studio.runtime.memory import GB, free_bytes, release_memory, resolve_device, resolve_dtype
from studio.runtime.progress import ProgressEvent
from studio.runtime.store import ModelStore

log = logging.getLogger(__name__)
State = Literal["idle", "switching", "generating"]


@dataclass(frozen=True)
class ManagerStatus:
    state: State
    model_id: str | None
    note: str  # why the loaded model is loaded (or why none is)
    activity: str | None  # what the studio is busy with, for a person
    progress: ProgressEvent | None  # last event of the running (or last) switch


def _gb(nbytes: float) -> str:
    return f"{nbytes / GB:.1f} GB" if nbytes >= GB else f"{nbytes / 2**20:.0f} MB"


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
    return text.strip().splitlines()[0][:300].rstrip(".")


class ModelManager:
    def __init__(self, registry: Registry, store: ModelStore, backend: Backend, device: str = "auto",
                 dtype: str = "auto"):
        self.registry, self.store, self.backend = registry, store, backend
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._guard = threading.Lock()  # protects every field below
        self._state: State = "idle"
        self._activity: str | None = None
        self._model: LoadedModel | None = None
        self._note = "No model is loaded yet."
        self._progress: ProgressEvent | None = None
        self._cancel = threading.Event()
        self._loaded_listeners: list[Callable[[], None]] = []
        self._discarded: set[str] = set()  # adapters to unload from the model when it is next used
        self._loads = 0  # models loaded by switches so far (a no-op switch loads none)

    def on_model_loaded(self, listener: Callable[[], None]) -> None:
        """Call `listener` (in the switch's thread, the studio free again, before the switch's final event) after
        each switch that loaded a model; never after a no-op switch to the model already loaded. Keep it short."""
        self._loaded_listeners.append(listener)

    # ---- state -------------------------------------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec | None:
        with self._guard:
            return self._model.spec if self._model is not None else None

    def status(self) -> ManagerStatus:
        with self._guard:
            return ManagerStatus(self._state, self._model.spec.id if self._model else None, self._note,
                                 self._activity, self._progress)

    def _acquire(self, state: State, activity: str, need_model: bool) -> LoadedModel | None:
        with self._guard:
            if self._state != "idle":
                detail = f" ({self._progress.message})" if self._state == "switching" and self._progress else ""
                raise Busy(f"The studio is busy {self._activity}{detail}. Try again when it has finished.",
                           state=self._state, activity=self._activity)
            if need_model and self._model is None:
                raise NoModelLoaded("No model is loaded. Choose a model in Settings (or POST /api/models/current).")
            self._state, self._activity = state, activity
            self._cancel.clear()
            return self._model

    def _release(self) -> None:
        with self._guard:
            self._state, self._activity = "idle", None

    def set_note(self, note: str) -> None:
        with self._guard:
            self._note = note

    def set_activity(self, activity: str) -> None:
        with self._guard:
            if self._state != "idle":
                self._activity = activity

    # ---- generation --------------------------------------------------------------------------------------
    @contextmanager
    def use(self, activity: str = "generating") -> Iterator[LoadedModel]:
        """Exclusive use of the loaded model (raises Busy or NoModelLoaded at once)."""
        model = self._acquire("generating", activity, need_model=True)
        try:
            self._unload_discarded(model)
            yield model
        finally:
            self._release()

    def discard_adapter(self, key: str) -> None:
        """Unload adapter `key` (deactivated or deleted) when the model is next used: never takes the studio,
        so a client that was just told it is free never gets Busy because of adapter housekeeping."""
        with self._guard:
            self._discarded.add(key)

    def keep_adapter(self, key: str) -> None:
        """Take back a discard_adapter not carried out yet (the adapter is wanted again)."""
        with self._guard:
            self._discarded.discard(key)

    def _unload_discarded(self, model: LoadedModel) -> None:
        with self._guard:
            keys, self._discarded = self._discarded, set()
        for key in keys:
            model.unload_adapter(key)

    def identity(self) -> tuple[ModelSpec | None, str | None]:
        """The loaded model's registry entry and weights fingerprint (None, None when nothing is loaded)."""
        with self._guard:
            model = self._model
        return (model.spec, model.weights_hash) if model is not None else (None, None)

    def cancel(self) -> bool:
        """Ask the running generation to stop at its next decoding step."""
        with self._guard:
            if self._state != "generating":
                return False
            self._cancel.set()
            return True

    def should_stop(self) -> bool:
        return self._cancel.is_set()

    # ---- switching ---------------------------------------------------------------------------------------
    def memory_shortfall_bytes(self, nbytes: int) -> bool:
        """True when `nbytes` more would not fit in the device's free memory."""
        return nbytes > free_bytes(self.device)

    def rows_that_fit(self, frames: list[int]) -> int:
        """How many of these rows (in order) the loaded model can decode together in the device's free memory;
        at least one (a single row that does not fit fails as it would alone)."""
        with self._guard:
            model = self._model
        if model is None:
            return 1
        free = free_bytes(self.device)
        need, fit = 0, 0
        for n in frames:
            need += model.row_bytes(n)
            if fit and need > free:
                break
            fit += 1
        return max(fit, 1)

    def memory_shortfall(self, spec: ModelSpec) -> str | None:
        """Why spec would not fit in the device's free memory (counting the loaded model as freed), or None."""
        need = spec.memory_gb * GB * torch.finfo(self.dtype).bits / 32
        with self._guard:
            current = self._model
        free = free_bytes(self.device) + (current.nbytes() if current is not None else 0)
        if need <= free:
            return None
        return (f"{spec.display_name} needs about {_gb(need)} of {self.device.type.upper()} memory but only "
                f"{_gb(free)} is free.")

    def switch(self, model_id: str, note: str | None = None) -> Iterator[ProgressEvent]:
        """Start switching to model_id and return its progress events, ending with 'ready' or 'error'.

        Raises NotFound / Busy before anything starts."""
        spec = self.registry.get(model_id)
        self._acquire("switching", f"switching to {spec.display_name}", need_model=False)
        events: queue.SimpleQueue[ProgressEvent] = queue.SimpleQueue()

        def emit(event: ProgressEvent) -> None:
            with self._guard:
                self._progress = event
            events.put(event)

        def run() -> None:
            loads_before = self._loads
            try:
                final = self._switch(spec, note, emit)
            except BaseException as exc:  # noqa: BLE001 - the stream must end, whatever happened
                log.exception("model switch crashed")
                final = ProgressEvent("error", f"Switch failed: {_reason(exc)}", spec.id, code="switch_failed")
            loaded_now = final.stage == "ready" and self._loads != loads_before  # not a no-op switch
            with self._guard:
                self._progress = final
                # The note says why the loaded model is loaded: a failure is the switch's progress, unless it left
                # no model loaded (then the failure is why).
                if final.stage == "error" and self._model is None:
                    self._note = final.message
            self._release()  # before the final event: a client told 'ready' can generate at once
            if loaded_now:  # before the final event too: a client told 'ready' sees what the listeners did
                for listener in self._loaded_listeners:
                    try:
                        listener()
                    except Exception:  # noqa: BLE001 - a listener's failure must not break switching
                        log.exception("model-loaded listener failed")
            events.put(final)

        threading.Thread(target=run, name=f"switch-{spec.id}", daemon=True).start()
        return _drain(events)

    def switch_and_wait(self, model_id: str, note: str | None = None,
                        on_event: Callable[[ProgressEvent], None] | None = None) -> ProgressEvent:
        final = None
        for final in self.switch(model_id, note):
            if on_event:
                on_event(final)
        return final

    def _switch(self, spec: ModelSpec, note: str | None, emit: Callable[[ProgressEvent], None]) -> ProgressEvent:
        name = spec.display_name
        emit(ProgressEvent("checking", f"Checking {name}", spec.id, fraction=0.0))
        current = self._model
        if current is not None and current.spec.id == spec.id:
            return ProgressEvent("ready", f"{name} is already loaded.", spec.id, fraction=1.0)

        shortfall = self.memory_shortfall(spec)
        if shortfall:
            keep = f" {current.spec.display_name} stays loaded." if current else ""
            return ProgressEvent("error", shortfall + keep, spec.id, code="insufficient_memory")

        def on_bytes(done: int, total: int) -> None:
            frac = done / total if total else None
            pct = f" ({done / total:.0%})" if total else ""
            emit(ProgressEvent("downloading", f"Downloading {name}: {_gb(done)} of {_gb(total)}{pct}", spec.id,
                               fraction=frac, bytes_done=done, bytes_total=total))

        if spec.is_builtin and self.store.local_path(spec) is None:
            emit(ProgressEvent("loading", f"Building {name} on this machine (first use)", spec.id, fraction=0.0))
        elif not self.store.available(spec):
            emit(ProgressEvent("downloading", f"Downloading {name} (about {_gb(spec.download_gb * GB)})", spec.id,
                               fraction=0.0))
        try:
            folder = self.store.fetch(spec, on_bytes)
        except Exception as exc:  # noqa: BLE001 - network, disk, hub errors: report, keep the current model
            keep = f" {current.spec.display_name} stays loaded." if current else " No model is loaded."
            return ProgressEvent("error", f"Could not download {name}: {_reason(exc)}.{keep}", spec.id,
                                 code="download_failed")

        previous = current.spec if current is not None else None
        del current
        if previous is not None:
            emit(ProgressEvent("unloading", f"Unloading {previous.display_name}", spec.id, fraction=0.0))
            self._unload()
        emit(ProgressEvent("loading", f"Loading {name}", spec.id, fraction=0.0))
        try:
            model = self.backend.load(folder, spec, self.device, self.dtype)
        except Exception as exc:  # noqa: BLE001 - a broken folder, a bad registry entry, out of memory
            reason = _reason(exc)
            del exc  # its traceback holds the half-loaded model's frames
            release_memory(self.device)
            restored = previous is not None and self._restore(previous, emit)
            tail = (f" {previous.display_name} was loaded again." if restored
                    else " No model is loaded now: choose one in Settings.")
            return ProgressEvent("error", f"Could not load {name}: {reason}.{tail}", spec.id, code="load_failed")
        with self._guard:
            self._model = model
            self._loads += 1
            self._note = note or f"{name} loaded."
        return ProgressEvent("ready", f"{name} is ready.", spec.id, fraction=1.0)

    def _unload(self) -> None:
        with self._guard:
            model, self._model = self._model, None
            self._discarded.clear()  # they leave with the model
        if model is not None:
            self.backend.unload(model)
            del model
        release_memory(self.device)

    def _restore(self, spec: ModelSpec, emit: Callable[[ProgressEvent], None]) -> bool:
        emit(ProgressEvent("restoring", f"Loading {spec.display_name} again", spec.id))
        try:
            model = self.backend.load(self.store.fetch(spec, lambda d, t: None), spec, self.device, self.dtype)
        except Exception:  # noqa: BLE001
            log.exception("could not restore %s", spec.id)
            release_memory(self.device)
            return False
        with self._guard:
            self._model = model
        return True

    def unload(self) -> None:
        """Unload the model (for shutdown and tests); Busy while something runs."""
        self._acquire("switching", "unloading the model", need_model=False)
        try:
            self._unload()
            with self._guard:
                self._note = "No model is loaded."
        finally:
            self._release()


def _drain(events: "queue.SimpleQueue[ProgressEvent]") -> Iterator[ProgressEvent]:
    while True:
        event = events.get()
        yield event
        if event.terminal:
            return
