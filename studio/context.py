"""AppContext: the one place that wires settings, registry, database, runtime and services together."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from studio.config import Settings
from studio.db.engine import make_engine
from studio.registry import Registry, load_registry
from studio.runtime.manager import ModelManager
from studio.runtime.store import ModelStore
from studio.runtime.transformers_backend import TransformersBackend
from studio.services.adapters import AdapterService
from studio.services.gen_config import GenerationConfigService
from studio.services.generation import GenerationService
from studio.services.jobs import JobService
from studio.services.models import ModelService

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    settings: Settings
    registry: Registry
    engine: object
    manager: ModelManager
    models: ModelService
    generation: GenerationService
    jobs: JobService
    adapters: AdapterService
    gen_config: GenerationConfigService

    def start_background_load(self) -> threading.Thread | None:
        """Load the start-up model after the server answers (never before: start-up stays fast)."""
        if not self.settings.load_at_start:
            return None
        thread = threading.Thread(target=self._load_initial, name="initial-load", daemon=True)
        thread.start()
        return thread

    def _load_initial(self) -> None:
        try:
            self.models.load_initial()
        except Exception:  # noqa: BLE001 - a busy manager or a bad --model: the page shows the state
            log.exception("start-up model load failed")


def build_context(settings: Settings, registry: Registry | None = None) -> AppContext:
    registry = registry or load_registry(settings.registry_path)
    if settings.model:
        registry.get(settings.model)  # an unknown --model fails at start-up, naming the known ones
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    store = ModelStore(settings.models_dir, settings.hf_cache_dir, settings.hf_endpoint)
    manager = ModelManager(registry, store, TransformersBackend(), settings.device, settings.dtype)
    adapters = AdapterService(engine, registry, manager, store, settings.data_dir, settings.allowed_import_roots,
                              settings.hf_endpoint)
    gen_config = GenerationConfigService(engine, registry)
    gen_config.seed()  # first start (or a model new in registry.yaml): store registry.yaml's defaults
    return AppContext(
        settings=settings,
        registry=registry,
        engine=engine,
        manager=manager,
        models=ModelService(registry, manager, store, settings.model),
        generation=GenerationService(manager, engine, adapters, gen_config, settings.data_dir,
                                     settings.max_prompt_chars),
        jobs=JobService(engine, settings.data_dir),
        adapters=adapters,
        gen_config=gen_config,
    )
