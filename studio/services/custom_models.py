"""Custom models: a MusicGen from the hub (repo id + revision) or from a folder inside an import root, added beside
registry.yaml. Only config.json is read to add one (no weights are downloaded or loaded); its capabilities are
derived from it (studio/runtime/model_config.py); the entry is stored in the database (table custom_model) and made a
model of the registry, which downloads it with progress at its first switch like any hub model."""
from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from studio.archives import import_folder, inside_roots
from studio.db.custom_models import add_custom_model, delete_custom_model, list_custom_models
from studio.db.engine import session_scope
from studio.errors import Conflict, InvalidRequest
from studio.registry import ModelSpec, Registry
from studio.runtime import hub
from studio.runtime.manager import ModelManager
from studio.runtime.model_config import describe
from studio.runtime.store import ModelStore
from studio.services.gen_config import GenerationConfigService
from studio.services.queue import JobQueue
from studio.users import LOCAL_USER

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 256 * 1024  # the official configs are ~8 KB
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DEFAULT_GENERATION = {"top_k": 250, "top_p": 0.0, "temperature": 1.0, "guidance_scale": 3.0}  # MusicGen's hub defaults
# The hub's rule: org/name of letters, digits, '-', '_', '.', not starting or ending with '-' or '.', no '--' or '..'
_REPO_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(f"{_REPO_PART}/{_REPO_PART}")
_REVISION = re.compile(r"[\w./-]{1,200}")
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class AddModelRequest(BaseModel):
    """A model to add: a hub repo (with an optional revision) or a folder on the server inside an import root."""
    model_config = ConfigDict(extra="forbid", strict=True)

    source: Literal["hub", "folder"] = Field(description="hub: a repo on the Hugging Face Hub; folder: a server folder")
    repo_id: str | None = Field(None, max_length=200, description="hub: org/name")
    revision: str | None = Field(None, max_length=200, description="hub: branch, tag or commit (default: main)")
    path: str | None = Field(None, max_length=4096, description="folder: a folder inside an import root")
    id: str | None = Field(None, max_length=64, description=(
        "the model's id in the studio (lowercase letters, digits, '.', '_', '-'); default: from the repo or folder "
        "name"))
    display_name: str | None = Field(None, max_length=80, description="default: the repo or folder name")
    description: str | None = Field(None, max_length=500)


class CustomModelPreview(BaseModel):
    """What the studio derived from a model's config.json: the registry entry it would add (nothing stored yet)."""

    id: str
    display_name: str
    source: str = Field(description="hub:org/name[@revision] or folder:/path")
    architecture: str
    channels: int
    codebooks: int
    conditioning: list[str]
    sample_rate: int
    frame_rate: float
    parameters: int
    max_duration_s: float
    max_extended_duration_s: float | None
    memory_gb: float
    download_gb: float
    provenance: dict[str, Any] | None = Field(None, description=(
        "a model imported from an audiocraft checkpoint: the file it came from, its sha256, audiocraft's version, "
        "the checkpoint's layout and configuration summary"))


class RemovedModel(BaseModel):
    id: str
    display_name: str
    files_deleted: bool = Field(description=(
        "its cached hub files were deleted (when asked), or, for an imported model, its converted folder (always: "
        "nothing else can use it); a folder you added is never deleted"))
    bytes_freed: int


def slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-._")[:64].rstrip("-._")
    return slug or "custom-model"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class CustomModelService:
    def __init__(self, engine, registry: Registry, store: ModelStore, manager: ModelManager, queue: JobQueue,
                 gen_config: GenerationConfigService, import_roots: list[Path], tmp_dir: Path,
                 hf_endpoint: str | None = None, allowed: bool = True):
        self.engine, self.registry, self.store, self.manager, self.queue = engine, registry, store, manager, queue
        self.gen_config = gen_config
        self.import_roots, self.tmp_dir, self.hf_endpoint = import_roots, Path(tmp_dir), hf_endpoint
        self.allowed = allowed  # False: the deployment locked the model list (--no-custom-models)

    # ---- start-up ---------------------------------------------------------------------------------------
    def restore(self) -> list[str]:
        """Make the stored custom models models of the registry again (at start-up); the ids restored. An entry
        that no longer validates (the studio changed) is skipped and said in the log, never a failed start."""
        with session_scope(self.engine) as session:
            rows = list_custom_models(session)
        restored = []
        for row in rows:
            try:
                self.registry.add_custom(ModelSpec.model_validate(row.spec))
            except (ValidationError, Conflict) as exc:
                log.warning("custom model %s is not usable and was skipped: %s", row.id, exc)
                continue
            restored.append(row.id)
        return restored

    # ---- adding -----------------------------------------------------------------------------------------
    def check_allowed(self) -> None:
        if not self.allowed:
            raise Conflict("This studio's model list is locked (--no-custom-models): models cannot be added or "
                           "removed here.", code="custom_models_locked")

    def inspect(self, req: AddModelRequest) -> CustomModelPreview:
        """Read the model's config.json and derive its entry, storing nothing (the page shows it before adding)."""
        self.check_allowed()
        spec = self._derive(req)
        return self._preview(spec)

    def add(self, req: AddModelRequest, user: str = LOCAL_USER) -> CustomModelPreview:
        """Derive the entry, store it and make it a model of the registry. Every refusal comes before anything is
        written. The weights are downloaded at the model's first switch (with progress)."""
        self.check_allowed()
        return self.add_spec(self._derive(req), user)

    def add_spec(self, spec: ModelSpec, user: str = LOCAL_USER, provenance: dict | None = None
                 ) -> CustomModelPreview:
        """Store `spec` and make it a model of the registry (model_exists before anything is written)."""
        self.registry.add_custom(spec)  # Conflict model_exists, before the database
        try:
            with session_scope(self.engine) as session:
                add_custom_model(session, spec.id, spec.model_dump(mode="json", exclude_none=True), user,
                                 provenance)
        except BaseException:
            self.registry.remove_custom(spec.id)
            raise
        self.gen_config.seed()  # its default generation settings, like registry.yaml's models at start-up
        log.info("custom model %s added (%s)", spec.id, self._source_text(spec))
        return self._preview(spec, provenance)

    def check_new_id(self, model_id: str) -> str:
        """`model_id` when it is a usable, free id; InvalidRequest invalid_model_id / Conflict model_exists."""
        if not _ID.fullmatch(model_id):
            raise InvalidRequest(f"{model_id!r} is not a usable model id: lowercase letters, digits, '.', '_' and '-', "
                                 "starting with a letter or digit.", code="invalid_model_id")
        if model_id in self.registry.ids():
            raise Conflict(f"A model with id {model_id!r} already exists: give this one another id.",
                           code="model_exists", model_id=model_id)
        return model_id

    def _derive(self, req: AddModelRequest) -> ModelSpec:
        tmp = Path(tempfile.mkdtemp(prefix="custom-model-", dir=self._tmp()))
        try:
            if req.source == "hub":
                config, weights_bytes, default_name, source = self._from_hub(req, tmp)
            else:
                config, weights_bytes, default_name, source = self._from_folder(req)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        fields = describe(config, weights_bytes)
        model_id = self.check_new_id((req.id or "").strip() or slug(default_name))
        display = (req.display_name or "").strip() or default_name
        description = (req.description or "").strip() or f"Added from {self._source_label(source)}."
        try:
            return ModelSpec.model_validate({
                "id": model_id, "display_name": display[:80], "description": description, "backend": "transformers",
                "source": source, "generation": dict(DEFAULT_GENERATION), **fields})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InvalidRequest(f"The studio cannot describe this model: {problems}.",
                                 code="unsupported_config") from None

    def _tmp(self) -> Path:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir

    def _from_hub(self, req: AddModelRequest, tmp: Path) -> tuple[dict, int, str, dict]:
        repo = (req.repo_id or "").strip()
        if not _REPO_ID.fullmatch(repo) or ".." in repo or "--" in repo:
            raise InvalidRequest("Give the hub repo as org/name.", code="invalid_repo_id")
        revision = (req.revision or "").strip() or None
        if revision is not None and (not _REVISION.fullmatch(revision) or ".." in revision):
            raise InvalidRequest("Give the revision as a branch, tag or commit hash.", code="invalid_revision")
        for spec in self.registry.models:
            if spec.source.hub and spec.source.hub.lower() == repo.lower() and spec.source.revision == revision:
                raise Conflict(f"{repo} is already in the studio as {spec.display_name} ({spec.id}).",
                               code="model_exists", model_id=spec.id)

        def check_listing(sizes: dict[str, int]) -> None:
            _check_files(sizes, repo)

        path, sizes = hub.fetch_config(repo, revision, self.hf_endpoint, tmp, check_listing,
                                       listing_patterns=["*.safetensors", *(f"*{s}" for s in PICKLE_SUFFIXES)])
        weights = sum(v for k, v in sizes.items() if k.endswith(".safetensors") and "/" not in k)
        source = {"hub": repo, **({"revision": revision} if revision else {})}
        return _read_config(path), weights, repo.split("/")[1], source

    def _from_folder(self, req: AddModelRequest) -> tuple[dict, int, str, dict]:
        if not (req.path or "").strip():
            raise InvalidRequest("Give the folder's path.", code="missing_path")
        # the folder is inside a root, and so is every file the model loads from it (no symlinks out of it)
        folder = import_folder(req.path.strip(), self.import_roots, lambda found: all(
            inside_roots(f, self.import_roots) for f in found.iterdir() if f.is_file() or f.is_symlink()))
        if folder is None:
            roots = ", ".join(str(r) for r in self.import_roots)
            raise InvalidRequest(f"{req.path[:200]} is outside the folders models may be added from ({roots}). Copy "
                                 "it into one of them.", code="path_not_allowed",
                                 allowed_roots=[str(r) for r in self.import_roots])
        sizes = {f.name: _size(f) for f in folder.iterdir() if f.is_file()}
        _check_files(sizes, str(folder))
        weights = sum(v for k, v in sizes.items() if k.endswith(".safetensors"))
        return _read_config(folder / CONFIG_FILE), weights, folder.name, {"folder": str(folder)}

    # ---- removing ---------------------------------------------------------------------------------------
    def remove(self, model_id: str, delete_files: bool = False) -> RemovedModel:
        """Take a custom model out of the studio (refused while it is loaded, being switched to, or jobs wait for
        it); delete_files: also delete its cached hub files (a folder on this machine is never deleted)."""
        self.check_allowed()
        spec = self.registry.get(model_id)  # NotFound
        if not self.registry.is_custom(model_id):
            raise Conflict(f"{spec.display_name} is one of registry.yaml's models: only models added in the studio "
                           "can be removed.", code="not_custom", model_id=model_id)
        if delete_files and spec.source.hub:
            sharing = [m.display_name for m in self.registry.models
                       if m.id != spec.id and (m.source.hub or "").lower() == spec.source.hub.lower()]
            if sharing:
                raise Conflict(f"{spec.source.hub}'s files are also used by {', '.join(sharing)}: remove it without "
                               "deleting the files.", code="files_shared", models=sharing)

        def retire() -> ModelSpec:
            with session_scope(self.engine) as session:
                delete_custom_model(session, model_id)
            return self.registry.remove_custom(model_id)

        removed = self.queue.retire_model(model_id, retire)
        # an imported model's converted folder is the studio's own and nothing else can use it: it goes with it
        deletes = self.store.is_imported(removed) or (delete_files and removed.source.hub is not None)
        freed = self.store.delete_files(removed) if deletes else 0
        log.info("custom model %s removed (files %s)", model_id, "deleted" if deletes else "kept")
        return RemovedModel(id=removed.id, display_name=removed.display_name, files_deleted=bool(deletes),
                            bytes_freed=freed)

    # ---- views --------------------------------------------------------------------------------------------
    def list(self) -> list[CustomModelPreview]:
        with session_scope(self.engine) as session:
            provenance = {row.id: row.provenance for row in list_custom_models(session)}
        return [self._preview(s, provenance.get(s.id)) for s in self.registry.models if self.registry.is_custom(s.id)]

    @staticmethod
    def _source_text(spec: ModelSpec) -> str:
        if spec.source.hub:
            return f"hub:{spec.source.hub}" + (f"@{spec.source.revision}" if spec.source.revision else "")
        return f"folder:{spec.source.folder}"

    @staticmethod
    def _source_label(source: dict) -> str:
        if "hub" in source:
            return f"the hub ({source['hub']}" + (f" at {source['revision']})" if source.get("revision") else ")")
        return f"the folder {source['folder']}"

    def _preview(self, spec: ModelSpec, provenance: dict | None = None) -> CustomModelPreview:
        return CustomModelPreview(provenance=provenance,
            id=spec.id, display_name=spec.display_name, source=self._source_text(spec), architecture=spec.model_class,
            channels=spec.channels, codebooks=spec.codebooks, conditioning=list(spec.conditioning),
            sample_rate=spec.sample_rate, frame_rate=spec.frame_rate, parameters=spec.parameters,
            max_duration_s=spec.max_duration_s, max_extended_duration_s=spec.max_extended_duration_s,
            memory_gb=spec.memory_gb, download_gb=spec.download_gb)


def _check_files(sizes: dict[str, int], where: str) -> None:
    """Refusals from the file names alone, before anything is read: no config, pickled-only or no weights. Only the
    top level counts: transformers loads a model from there (files in subfolders are other things: audiocraft's)."""
    sizes = {k: v for k, v in sizes.items() if "/" not in k}
    names = list(sizes)
    if CONFIG_FILE not in names:
        raise InvalidRequest(f"{where} has no {CONFIG_FILE}: it is not a transformers model.", code="missing_config")
    if sizes[CONFIG_FILE] > MAX_CONFIG_BYTES:
        raise InvalidRequest(f"{where}'s {CONFIG_FILE} is {sizes[CONFIG_FILE] // 1024} KB, too big for a model "
                             f"config (at most {MAX_CONFIG_BYTES // 1024} KB).", code="invalid_config")
    if not any(n.endswith(".safetensors") for n in names):
        if any(n.lower().endswith(PICKLE_SUFFIXES) for n in names):
            raise InvalidRequest(f"{where} only has pickled weights (.bin/.pt), which are refused: they can run code "
                                 "when loaded. Save the model with safetensors (save_pretrained does by default).",
                                 code="pickled_weights")
        raise InvalidRequest(f"{where} has no safetensors weights.", code="missing_weights")


def _read_config(path: Path) -> dict:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InvalidRequest(f"{CONFIG_FILE} is too big for a model config (at most "
                                 f"{MAX_CONFIG_BYTES // 1024} KB).", code="invalid_config")
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        raise InvalidRequest(f"{CONFIG_FILE} is not readable JSON.", code="invalid_config") from None
    if not isinstance(config, dict):
        raise InvalidRequest(f"{CONFIG_FILE} is not a JSON object.", code="invalid_config")
    return config
