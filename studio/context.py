"""AppContext: the one place that wires settings, registry, database, runtime and services together."""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from studio.config import PROJECT_ROOT, Settings
from studio.datadir import Storage, open_storage
from studio.errors import CannotStart
from studio.registry import Registry
from studio.runtime.hf_logging import quiet_musicgen_token_layout
from studio.runtime.manager import ModelManager
from studio.runtime.store import ModelStore
from studio.runtime.transformers_backend import TransformersBackend
from studio.services.abtests import ABTestService
from studio.services.accounts import AccountService
from studio.services.adapters import AdapterService
from studio.services.custom_models import CustomModelService
from studio.services.model_import import ModelImportService
from studio.services.datasets import DatasetService
from studio.services.evaluation import EvaluationService
from studio.services.gen_config import GenerationConfigService
from studio.services.generation import GenerationService
from studio.services.job_events import JobEvents
from studio.services.jobs import JobService
from studio.services.metrics import MetricsService
from studio.services.models import ModelService
from studio.services.queue import JobQueue
from studio.services.training import TrainingService
from studio.services.uploads import UploadService

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
    metrics: MetricsService  # adapter performance and version comparison (reads ratings, A/B votes, scores)
    gen_config: GenerationConfigService
    queue: JobQueue
    evaluation: EvaluationService
    abtests: ABTestService
    datasets: DatasetService
    uploads: UploadService
    training: TrainingService  # runs LoRA training in subprocesses beside the worker
    accounts: AccountService  # who may log in, with which role; login sessions and API tokens
    custom_models: CustomModelService | None = None  # models added in the studio beside registry.yaml
    model_import: ModelImportService | None = None  # audiocraft checkpoints converted into custom models
    storage: Storage | None = None  # holds the claim on the data directory while the studio runs

    def start_background_load(self) -> threading.Thread | None:
        """After the server answers (never before: start-up stays fast): queue the start-up model's load, then the
        jobs a stopped studio had accepted and not run."""
        thread = threading.Thread(target=self._start_work, name="initial-load", daemon=True)
        thread.start()
        return thread

    def _start_work(self) -> None:
        try:
            if self.settings.load_at_start:
                self.models.load_initial()
        except Exception:  # noqa: BLE001 - a bad --model: the page shows the state
            log.exception("start-up model load failed")
        try:
            self.generation.resume()
        except Exception:  # noqa: BLE001 - the jobs stay queued in the database; said in the log
            log.exception("could not queue the jobs waiting when the studio stopped")
        try:  # after the queue's own: the A/B tests follow the jobs it resumed
            self.abtests.resume()
        except Exception:  # noqa: BLE001 - the tests stay 'generating'; said in the log
            log.exception("could not take up the A/B tests generating when the studio stopped")
        try:
            self.evaluation.resume()
        except Exception:  # noqa: BLE001 - the runs stay 'running' in the database; said in the log
            log.exception("could not take up the evaluation runs open when the studio stopped")
        try:
            self.training.resume_interrupted()
        except Exception:  # noqa: BLE001 - the runs stay 'interrupted' and can be resumed from the page
            log.exception("could not resume the training runs open when the studio stopped")

    def close(self) -> None:
        """Stop the worker (waiting jobs stay queued in the database) and release the database."""
        self.training.close()  # first: a run saves its checkpoint while the rest closes
        self.abtests.close()
        self.evaluation.close()
        self.queue.close()
        self.engine.dispose()


def check_device(device: str) -> None:
    """--device names a device this machine has, or the studio refuses to start (not at the first model load)."""
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if count == 0:
            raise CannotStart(f"--device {device}: no CUDA GPU is usable here (torch {torch.__version__}): use "
                              "--device auto or cpu.")
        if index >= count:
            raise CannotStart(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to "
                              f"cuda:{count - 1}.")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise CannotStart("--device mps: Apple's Metal (MPS) is not available here: use --device auto or cpu.")


def remote_workers(settings: Settings, registry: Registry, studio_id: str | None):
    """--workers ray...: connect to (or start) the Ray cluster and deploy the GPU workers; what JobQueue needs to
    build the Ray worker. None for the in-process worker. CannotStart, in one line, when Ray is missing or
    unreachable."""
    if settings.ray_address is None:
        return None
    try:
        import ray  # noqa: F401 - an optional extra

        from studio.runtime.ray_serve import ReplicaConfig
        from studio.runtime.ray_worker import RayWorker, app_name, connect, disconnect
    except ImportError:
        raise CannotStart(f"--workers {settings.workers} needs Ray: pip install -r requirements-ray.txt") from None
    config = ReplicaConfig(models_dir=str(settings.models_dir.resolve()),
                           hf_cache_dir=str(settings.hf_cache_dir.resolve()) if settings.hf_cache_dir else None,
                           hf_endpoint=settings.hf_endpoint, dtype=settings.dtype, fast_path=settings.fast_path,
                           stream_every_s=settings.stream_every_s)
    try:
        handle = connect(settings.ray_address, replicas=settings.ray_replicas, gpus=settings.ray_gpus, config=config,
                         project_root=str(PROJECT_ROOT), name=app_name(studio_id))
    except Exception as exc:  # noqa: BLE001 - whatever Ray says, in one line
        reason = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:300]
        raise CannotStart(f"--workers {settings.workers}: the Ray cluster could not be reached or the workers "
                          f"deployed: {reason}") from None

    def build(listener, local):
        return RayWorker(handle, listener, local, registry.get, replicas=settings.ray_replicas,
                         max_batch=lambda m: registry.get(m).max_batch,
                         on_close=lambda: disconnect(app_name(studio_id)))

    log.info("generations run on %d Ray Serve worker(s) (--workers %s)", settings.ray_replicas, settings.workers)
    return build


def build_context(settings: Settings, registry: Registry | None = None,
                  storage: Storage | None = None) -> AppContext:
    """Everything the studio needs, or a StudioError (CannotStart, RegistryError, ...) saying in one line why not.
    storage: what open_storage() already opened (app.py opens it first, before the heavy imports)."""
    quiet_musicgen_token_layout()
    check_device(settings.device)
    storage = storage or open_storage(settings, registry)
    registry, engine = storage.registry, storage.engine
    accounts = AccountService(engine, settings.session_hours, settings.login_required)
    accounts.bootstrap(settings.auth)  # --auth USER:PASS: that admin exists with that password
    store = ModelStore(settings.models_dir, settings.hf_cache_dir, settings.hf_endpoint)
    backend = TransformersBackend(fast_path=None if settings.fast_path else False)
    manager = ModelManager(registry, store, backend, settings.device, settings.dtype)
    adapters = AdapterService(engine, registry, manager, store, settings.data_dir, settings.allowed_import_roots,
                              settings.hf_endpoint)
    gen_config = GenerationConfigService(engine, registry)
    queue = JobQueue(engine, manager, registry, JobEvents(), settings.data_dir, max_queue=settings.max_queue,
                     stream_every_s=settings.stream_every_s, runner=storage.studio_id,
                     on_space=settings.on_space, remote=remote_workers(settings, registry, storage.studio_id))
    custom_models = CustomModelService(engine, registry, store, manager, queue, gen_config,
                                       settings.allowed_import_roots, settings.tmp_dir, settings.hf_endpoint,
                                       allowed=settings.custom_models)
    custom_models.restore()  # before anything reads the registry's models: they are models like registry.yaml's
    model_import = ModelImportService(custom_models, store, settings.allowed_import_roots, settings.tmp_dir)
    model_import.remove_orphans()
    gen_config.seed()  # first start (or a model new in registry.yaml): store registry.yaml's defaults
    uploads = UploadService(engine, settings.data_dir)
    uploads.remove_leftovers()  # what a killed upload left staged
    generation = GenerationService(queue, manager, engine, adapters, gen_config, settings.data_dir,
                                   settings.max_prompt_chars, uploads=uploads)
    evaluation = EvaluationService(engine, registry, store, queue, generation, adapters, settings.data_dir,
                                   settings.eval_model)
    abtests = ABTestService(engine, generation, queue, adapters, gen_config, settings.data_dir,
                            auth=accounts.required)
    # every clip of an A/B test is scored once ready (when an evaluation model is available): the results show
    # each side's mean score beside the votes, never on the listening page
    abtests.on_pair_ready(lambda _test_id, job_ids: evaluation.request_scores(job_ids))
    datasets = DatasetService(engine, registry, queue, settings.data_dir, settings.allowed_import_roots)
    training = TrainingService(engine, registry, store, manager, queue, generation, adapters, datasets, evaluation,
                               settings.data_dir, settings.device)
    return AppContext(
        settings=settings,
        registry=registry,
        engine=engine,
        manager=manager,
        models=ModelService(registry, manager, store, queue, settings.model, on_space=settings.on_space,
                            zero_gpu=settings.zero_gpu),
        generation=generation,
        jobs=JobService(engine, settings.data_dir),
        adapters=adapters,
        metrics=MetricsService(engine, registry),
        gen_config=gen_config,
        queue=queue,
        evaluation=evaluation,
        abtests=abtests,
        datasets=datasets,
        uploads=uploads,
        training=training,
        accounts=accounts,
        custom_models=custom_models,
        model_import=model_import,
        storage=storage,
    )
