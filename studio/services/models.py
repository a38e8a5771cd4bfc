"""Models use cases: list the registry with live capabilities, show the loaded model, switch."""
from __future__ import annotations

import logging
from typing import Any, Iterator

from pydantic import BaseModel, Field

from studio.registry import ModelSpec, Registry
from studio.runtime.manager import ModelManager, State
from studio.runtime.progress import ProgressEvent
from studio.runtime.store import ModelStore
from studio.services.queue import JobQueue

log = logging.getLogger(__name__)
FALLBACK_MODEL = "studio-tiny"


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
                 requested_model: str | None):
        self.registry, self.manager, self.store, self.queue = registry, manager, store, queue
        self.requested_model = requested_model

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
        model_id, note = self.initial_choice()
        if model_id is None:
            self.manager.set_note(note)
            log.info(note)
            return None
        final = None
        for final in self.switch(model_id, note):
            pass
        log.info("start-up model: %s", final.message)
        return final
