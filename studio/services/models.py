"""Models use cases: list the registry with live capabilities, show the loaded model, switch."""
from __future__ import annotations

import logging
from typing import Any, Iterator

from pydantic import BaseModel, Field

from studio.registry import ModelSpec, Registry
from studio.runtime.manager import ModelManager, State
from studio.runtime.memory import Hardware, probe_hardware
from studio.runtime.progress import ProgressEvent
from studio.runtime.store import ModelStore
from studio.services.queue import JobQueue

log = logging.getLogger(__name__)
FALLBACK_MODEL = "studio-tiny"
# The default model by hardware (default_model): MusicGen Medium needs about 5.5 GB in half precision for one 30 s
# window; on a GPU of 16 GB or more it leaves room for batches and an evaluation model, on a smaller one Small does.
SMALL_MODEL, MEDIUM_MODEL = "musicgen-small", "musicgen-medium"
MEDIUM_FROM_GB = 16


def _fits(spec: ModelSpec, hardware: Hardware) -> bool:
    need = spec.memory_gb * (0.5 if hardware.half else 1.0)  # memory_gb is the float32 estimate
    return need <= hardware.free_gb


def default_model(registry: Registry, hardware: Hardware) -> tuple[str, str]:
    """The model a studio with no --model loads on `hardware`, and why (a clause for the page's header).

    ZeroGPU: a large GPU lent for a limited time per generation, so the fastest model (Small). CUDA: Medium on a GPU
    of MEDIUM_FROM_GB or more, else Small, never one whose memory does not fit what is free. CPU and Apple's MPS:
    the registry's default. The registry's default stands in for a model it does not list; studio-tiny (its
    output is noise) only when nothing else fits."""
    default = registry.default_model
    if hardware.kind == "zerogpu":
        wanted = [SMALL_MODEL, default]
        why = "ZeroGPU lends a GPU for a limited time per generation, and it is the fastest model"
    elif hardware.kind == "cuda":
        big = hardware.total_gb >= MEDIUM_FROM_GB
        wanted = [MEDIUM_MODEL, SMALL_MODEL, default] if big else [SMALL_MODEL, default]
        why = f"the model that suits this GPU ({hardware.total_gb:.0f} GB, {hardware.free_gb:.0f} GB free)"
    elif hardware.kind == "mps":
        wanted, why = [default], "the studio's default model"
    else:
        wanted = [default]
        why = ("the studio's default model; this machine has no GPU and generating on a CPU is slow (expect a minute "
               "or more for 10 s of music)")
    ids = registry.ids()
    for model_id in wanted:
        if model_id in ids and (hardware.kind == "zerogpu" or _fits(registry.get(model_id), hardware)):
            return model_id, why
    return FALLBACK_MODEL, (f"no model of the registry fits the {hardware.free_gb:.1f} GB of memory free here; its "
                            "output is noise")


class ModelInfo(BaseModel):
    id: str
    display_name: str
    description: str
    backend: str
    hub_repo: str | None
    revision: str | None
    builtin: bool
    custom: bool = Field(description="added in the studio (POST /api/models), not one of registry.yaml's; removable")
    folder: str | None = Field(description="custom models added from a folder on the server: the folder")
    architecture: str = Field(description="the transformers class its weights load with")
    parameters: int
    sample_rate: int
    channels: int
    codebooks: int = Field(description="EnCodec codebooks per frame (4 mono; 8 stereo, left and right interleaved)")
    conditioning: list[str] = Field(description=(
        "what a generation can follow: text, and a melody clip for melody models (melody_upload_id)"))
    frame_rate: float
    max_duration_s: float
    max_tokens: int
    max_extended_duration_s: float | None = Field(None, description=(
        "longest piece, generated window by window (None: one window, max_duration_s)"))
    window_stride_s: float = Field(18.0, description="new seconds each further window adds")
    memory_gb: float
    download_gb: float
    generation: dict[str, Any] = Field(description=(
        "registry.yaml's default generation settings; the stored ones are at GET /api/models/{id}/config"))
    available: bool  # usable without a download
    loaded: bool
    fits_memory: bool  # fits in the device's free memory (the loaded model counted as freed)
    memory_note: str | None  # why it does not fit


class CurrentModel(BaseModel):
    model: ModelInfo | None
    state: State = Field(description="idle, switching (a model is being changed) or generating")
    activity: str | None
    note: str
    progress: ProgressEvent | None = Field(description="the switch in progress, if any (the runtime's event)")


class ModelService:
    def __init__(self, registry: Registry, manager: ModelManager, store: ModelStore, queue: JobQueue,
                 requested_model: str | None, *, on_space: bool = False, zero_gpu: bool = False):
        self.registry, self.manager, self.store, self.queue = registry, manager, store, queue
        self.requested_model = requested_model
        # A Space picks its model by hardware and downloads it at start (it exists to be used); a studio on a
        # person's machine loads the default only when it is already downloaded (nothing leaves the machine
        # unasked).
        self.on_space, self.zero_gpu = on_space, zero_gpu
        self._started: ProgressEvent | None = None  # the start-up load's outcome, once done

    def hardware(self) -> Hardware:
        return probe_hardware(self.manager.device, self.manager.dtype, self.zero_gpu)

    def _info(self, spec: ModelSpec, loaded_id: str | None) -> ModelInfo:
        shortfall = self.manager.memory_shortfall(spec)
        return ModelInfo(
            id=spec.id, display_name=spec.display_name, description=spec.description, backend=spec.backend,
            hub_repo=spec.source.hub, revision=spec.source.revision, builtin=spec.is_builtin,
            custom=self.registry.is_custom(spec.id), folder=spec.source.folder, architecture=spec.model_class,
            parameters=spec.parameters, sample_rate=spec.sample_rate, channels=spec.channels,
            codebooks=spec.codebooks, conditioning=list(spec.conditioning),
            frame_rate=spec.frame_rate, max_duration_s=spec.max_duration_s, max_tokens=spec.max_tokens,
            max_extended_duration_s=spec.max_extended_duration_s, window_stride_s=spec.stride_s,
            memory_gb=spec.memory_gb, download_gb=spec.download_gb, generation=spec.generation.model_dump(),
            available=self.store.available(spec), loaded=spec.id == loaded_id, fits_memory=shortfall is None,
            memory_note=shortfall)

    def list_models(self) -> list[ModelInfo]:
        loaded = self.manager.status().model_id
        return [self._info(spec, loaded) for spec in self.registry.models]

    def get(self, model_id: str) -> ModelInfo:
        return self._info(self.registry.get(model_id), self.manager.status().model_id)

    def current(self) -> CurrentModel:
        st = self.manager.status()
        model = self._info(self.registry.get(st.model_id), st.model_id) if st.model_id else None
        return CurrentModel(model=model, state=st.state, activity=st.activity, note=st.note, progress=st.progress)

    def switch(self, model_id: str, note: str | None = None) -> Iterator[ProgressEvent]:
        """Queue a switch behind the jobs accepted before it; its progress events (first 'queued' when it has
        to wait), ending with ready or error. Raises NotFound before anything is queued. `note`: why the model is
        loaded, said in the page's header once it is."""
        return self.queue.switch(model_id, note)

    # ---- start-up ----------------------------------------------------------------------------------------
    def initial_choice(self) -> tuple[str | None, str]:
        """Which model to load at start-up, and why (shown on the page)."""
        if self.requested_model:
            spec = self.registry.get(self.requested_model)
            return spec.id, f"{spec.display_name} was loaded at start-up because it was asked for (--model)."
        if self.on_space:
            model_id, why = default_model(self.registry, self.hardware())
            spec = self.registry.get(model_id)
            fetch = "" if self.store.available(spec) else f" (downloaded at start-up, about {spec.download_gb:.1f} GB)"
            return spec.id, f"{spec.display_name} was loaded{fetch}: {why}."
        default = self.registry.get(self.registry.default_model)
        if self.store.available(default):
            return default.id, f"{default.display_name} is the studio's default model and is on this machine."
        if FALLBACK_MODEL in self.registry.ids():
            tiny = self.registry.get(FALLBACK_MODEL)
            return tiny.id, (f"{tiny.display_name} was loaded because the default model, {default.display_name}, is "
                             f"not downloaded yet (about {default.download_gb:.1f} GB). Its output is noise: choose "
                             f"{default.display_name} in Settings to download it.")
        return None, (f"No model was loaded: the default model, {default.display_name}, is not downloaded yet. "
                      "Choose a model in Settings.")

    def load_initial(self) -> ProgressEvent | None:
        """Load the start-up model, once (on ZeroGPU app.py loads it before serving, and the background start
        then finds it done)."""
        if self._started is not None:
            return self._started
        model_id, note = self.initial_choice()
        if model_id is None:
            self.manager.set_note(note)
            log.info(note)
            return None
        final = self._load(model_id, note)
        if final.stage == "error" and self.on_space and model_id != FALLBACK_MODEL \
                and FALLBACK_MODEL in self.registry.ids():
            # a Space that cannot download its model (offline, the hub down) still opens, saying why
            spec, tiny = self.registry.get(model_id), self.registry.get(FALLBACK_MODEL)
            log.warning("start-up model %s failed: %s", model_id, final.message)
            note = (f"{tiny.display_name} was loaded because {spec.display_name} could not be loaded "
                    f"({final.message.rstrip('.')}). Its output is noise: choose {spec.display_name} in Settings "
                    "to try again.")
            final = self._load(FALLBACK_MODEL, note)
        log.info("start-up model: %s", final.message)
        self._started = final
        return final

    def _load(self, model_id: str, note: str) -> ProgressEvent:
        final = None
        for final in self.switch(model_id, note):
            pass
        return final
