"""LoRA adapters as versioned artifacts: registration with validation and provenance, compatibility with the
loaded model, lifecycle, listings and version history."""
from __future__ import annotations

import logging
import os
import re
import shutil
import tarfile
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError

from studio.db.adapters import (add_adapter, get_adapter, job_count, list_adapters, next_version, save_adapter,
                                versions_of)
from studio.db.engine import session_scope
from studio.db.models import Adapter, utcnow
from studio.errors import Conflict, Incompatible, InvalidRequest, NotFound
from studio.registry import ModelSpec, Registry
from studio.runtime import hub
from studio.runtime.adapters import (CONFIG_FILE, PICKLE_SUFFIXES, WEIGHTS_FILE, check_structure, inspect_adapter,
                                    read_json_object)
from studio.runtime.manager import ModelManager
from studio.runtime.store import ModelStore
from studio.runtime.transformers_backend import build_skeleton
from studio.services.jobs import DELETED_ADAPTER

log = logging.getLogger(__name__)
PROVENANCE_FILE = "training_provenance.json"  # written by the studio's training; optional for imports
KEPT_FILES = (CONFIG_FILE, WEIGHTS_FILE, "README.md", PROVENANCE_FILE)
MAX_NAME = 100
MAX_ARCHIVE_BYTES = 4 * 2**30
MAX_ARCHIVE_MEMBERS = 200
PRELOAD_WAIT_S = 5.0  # after a switch, a generation that started at once may hold the studio briefly
ProgressFn = Callable[[float | None, str], None]
# The hub's rule: org/name of letters, digits, '-', '_', '.', not starting or ending with '-' or '.', no '--' or '..'
_REPO_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(f"{_REPO_PART}/{_REPO_PART}")


# ---- requests and results ------------------------------------------------------------------------------------
class RegisterAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["folder", "hub", "upload"] = Field(description="a server folder, a hub repo, or an archive")
    path: str | None = Field(None, description="folder: a path inside an import root")
    repo_id: str | None = Field(None, description="hub: org/name of the adapter repo")
    revision: str | None = Field(None, description="hub: branch, tag or commit")
    name: str | None = Field(None, description="default: the folder, repo or archive name")
    version: int | None = Field(None, ge=1, le=2 ** 63 - 1,  # stored as a 64-bit integer
                                description="default: the next free version of this name")
    description: str = Field("", max_length=2000)
    base_model: str | None = Field(None, description="registry model id; default: from adapter_config.json")
    training_dataset: str | None = None
    training_config: dict[str, Any] | None = None
    training_metrics: dict[str, Any] | None = None


class AdapterUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = Field(None, max_length=2000)
    active: bool | None = None


class AdapterInfo(BaseModel):
    id: int
    name: str
    version: int
    description: str
    base_model: str
    base_model_name: str
    base_model_max_duration_s: float | None
    base_model_revision: str | None
    active: bool
    deleted: bool
    compatible: bool  # usable with the loaded model
    compatibility_note: str | None  # why not, for a person
    rank: int | None
    alpha: float | None
    target_modules: str | list[str] | None
    lora_config: dict[str, Any]
    source: str
    size_bytes: int
    usage_count: int
    training_dataset: str | None
    training_config: dict[str, Any] | None
    training_metrics: dict[str, Any] | None
    training_run_id: str | None
    trained_at: datetime | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class AdapterGroup(BaseModel):
    name: str
    versions: list[AdapterInfo]  # oldest first


class TimelineEntry(BaseModel):
    id: int
    version: int
    trained_at: datetime | None
    created_at: datetime
    final_loss: float | None
    loss: list[float] | None
    status: Literal["active", "inactive", "deleted"]
    training_run_id: str | None
    training_run_url: str | None


@dataclass(frozen=True)
class AdapterRef:
    """What generation needs to apply an adapter."""

    id: int
    key: str  # PEFT adapter name inside the loaded model
    folder: Path
    label: str


def adapter_key(adapter_id: int) -> str:
    return f"adapter_{adapter_id}"


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def _clean_name(name: str | None) -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidRequest("The adapter name is empty.", code="invalid_name")
    if len(name) > MAX_NAME:
        raise InvalidRequest(f"The adapter name is {len(name)} characters long; the limit is {MAX_NAME}.",
                             code="invalid_name", max_chars=MAX_NAME)
    if any(ord(c) < 32 for c in name):
        raise InvalidRequest("The adapter name contains control characters.", code="invalid_name")
    return name


class AdapterService:
    def __init__(self, engine, registry: Registry, manager: ModelManager, store: ModelStore, data_dir: Path,
                 import_roots: list[Path], hf_endpoint: str | None = None):
        self.engine, self.registry, self.manager, self.store = engine, registry, manager, store
        self.data_dir = Path(data_dir)
        self.adapters_dir = self.data_dir / "adapters"
        self.import_roots = import_roots
        self.hf_endpoint = hf_endpoint

    # ---- reading -------------------------------------------------------------------------------------------
    def _spec_or_none(self, model_id: str) -> ModelSpec | None:
        return self.registry.get(model_id) if model_id in self.registry.ids() else None

    def _model_name(self, model_id: str) -> str:
        spec = self._spec_or_none(model_id)
        return spec.display_name if spec else model_id

    def _compatibility(self, a: Adapter, spec: ModelSpec | None, weights_hash: str | None) -> str | None:
        """Why `a` cannot be used with the loaded model, or None when it can."""
        if spec is None:
            return "No model is loaded."
        if a.base_model != spec.id:
            return f"Requires {self._model_name(a.base_model)}"
        if a.base_model_revision and spec.source.revision and a.base_model_revision != spec.source.revision:
            return (f"Trained on revision {a.base_model_revision} of {spec.display_name}; revision "
                    f"{spec.source.revision} is loaded")
        if a.base_weights_hash and weights_hash and a.base_weights_hash != weights_hash:
            return f"Trained on other weights than the {spec.display_name} loaded here"
        return None

    def _info(self, a: Adapter, spec: ModelSpec | None, weights_hash: str | None) -> AdapterInfo:
        base = self._spec_or_none(a.base_model)
        note = self._compatibility(a, spec, weights_hash)
        cfg = a.lora_config or {}
        return AdapterInfo(
            id=a.id, name=a.name, version=a.version, description=a.description, base_model=a.base_model,
            base_model_name=self._model_name(a.base_model),
            base_model_max_duration_s=base.max_duration_s if base else None,
            base_model_revision=a.base_model_revision, active=a.active, deleted=a.deleted_at is not None,
            compatible=note is None, compatibility_note=note, rank=cfg.get("r"), alpha=cfg.get("lora_alpha"),
            target_modules=cfg.get("target_modules"), lora_config=cfg, source=a.source, size_bytes=a.size_bytes,
            usage_count=a.usage_count, training_dataset=a.training_dataset, training_config=a.training_config,
            training_metrics=a.training_metrics, training_run_id=a.training_run_id, trained_at=_utc(a.trained_at),
            created_at=_utc(a.created_at), updated_at=_utc(a.updated_at), deleted_at=_utc(a.deleted_at))

    def list(self, *, active: bool | None = None, base_model: str | None = None,
             compatible: bool | None = None) -> list[AdapterInfo]:
        spec, weights_hash = self.manager.identity()
        with session_scope(self.engine) as session:
            rows = list_adapters(session, active=active, base_model=base_model)
        infos = [self._info(a, spec, weights_hash) for a in rows]
        return [i for i in infos if compatible is None or i.compatible == compatible]

    def grouped(self, **filters) -> list[AdapterGroup]:
        groups: dict[str, list[AdapterInfo]] = {}
        for info in self.list(**filters):  # ordered by name, then creation
            groups.setdefault(info.name, []).append(info)
        return [AdapterGroup(name=name, versions=versions) for name, versions in groups.items()]

    def _live(self, session, adapter_id: int) -> Adapter:
        a = get_adapter(session, adapter_id)
        if a is None:
            raise NotFound(f"There is no adapter {adapter_id}.", code="adapter_not_found", adapter_id=adapter_id)
        if a.deleted_at is not None:
            raise NotFound(f"Adapter {adapter_id} ({a.name} v{a.version}) was deleted.", code="adapter_deleted",
                           adapter_id=adapter_id)
        return a

    def get(self, adapter_id: int) -> AdapterInfo:
        spec, weights_hash = self.manager.identity()
        with session_scope(self.engine) as session:
            return self._info(self._live(session, adapter_id), spec, weights_hash)

    def label(self, adapter_id: int | None) -> str | None:
        """How a job shows the adapter it used: 'name vN', or 'Deleted Adapter'."""
        if adapter_id is None:
            return None
        with session_scope(self.engine) as session:
            a = get_adapter(session, adapter_id)
        if a is None or a.deleted_at is not None:
            return DELETED_ADAPTER
        return f"{a.name} v{a.version}"

    def timeline(self, name: str) -> list[TimelineEntry]:
        with session_scope(self.engine) as session:
            rows = list_adapters(session, include_deleted=True, name=name)
        if not rows:
            raise NotFound(f"There is no adapter named {name!r}.", code="adapter_not_found", name=name)
        entries = []
        for a in sorted(rows, key=lambda r: (r.created_at, r.version)):
            metrics = a.training_metrics or {}
            loss = metrics.get("loss")
            loss_list = [float(x) for x in loss] if isinstance(loss, list) else None
            final = metrics.get("final_loss", loss_list[-1] if loss_list else loss if isinstance(loss, (int, float))
                                else None)
            status = "deleted" if a.deleted_at else ("active" if a.active else "inactive")
            entries.append(TimelineEntry(
                id=a.id, version=a.version, trained_at=_utc(a.trained_at), created_at=_utc(a.created_at),
                final_loss=float(final) if final is not None else None, loss=loss_list, status=status,
                training_run_id=a.training_run_id,
                training_run_url=f"/api/training/runs/{a.training_run_id}" if a.training_run_id else None))
        return entries

    # ---- generation ----------------------------------------------------------------------------------------
    def for_generation(self, adapter_id: int, spec: ModelSpec, weights_hash: str | None) -> AdapterRef:
        """The adapter to apply, or the reason it is refused (the server re-checks whatever a page sends)."""
        with session_scope(self.engine) as session:
            a = get_adapter(session, adapter_id)
            if a is None:
                raise NotFound(f"There is no adapter {adapter_id}.", code="adapter_not_found", adapter_id=adapter_id)
            if a.deleted_at is not None:
                raise InvalidRequest(f"Adapter {a.name} v{a.version} was deleted; it cannot be used any more.",
                                     code="adapter_deleted", adapter_id=adapter_id)
            if not a.active:
                raise InvalidRequest(f"Adapter {a.name} v{a.version} is inactive: activate it in the Adapters tab.",
                                     code="adapter_inactive", adapter_id=adapter_id)
            reason = self._compatibility(a, spec, weights_hash)
            if reason:
                others = [{"id": o.id, "name": o.name, "version": o.version}
                          for o in list_adapters(session, active=True, base_model=spec.id)
                          if self._compatibility(o, spec, weights_hash) is None][:5]
                hint = (f" Compatible with {spec.display_name}: "
                        + ", ".join(f"{o['name']} v{o['version']}" for o in others) + "." if others else
                        f" No adapter for {spec.display_name} is registered.")
                raise Incompatible(f"Adapter {a.name} v{a.version} cannot be used with {spec.display_name}: "
                                   f"{reason}. Change the model in Settings to use it.{hint}",
                                   code="adapter_incompatible", adapter_id=adapter_id, required_model=a.base_model,
                                   required_model_name=self._model_name(a.base_model), compatible=others)
            return AdapterRef(a.id, adapter_key(a.id), self.data_dir / a.path, f"{a.name} v{a.version}")

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def update(self, adapter_id: int, change: AdapterUpdate) -> AdapterInfo:
        with session_scope(self.engine) as session:
            a = self._live(session, adapter_id)
            wanted_name = a.name if change.name is None else _clean_name(change.name)
            a.name = wanted_name
            if change.description is not None:
                a.description = change.description
            activated = change.active is True and not a.active
            deactivated = change.active is False and a.active
            if change.active is not None:
                a.active = change.active
            version = a.version
            try:
                save_adapter(session, a)
            except IntegrityError:
                session.rollback()  # expires `a`: it reads the stored (old) name again
                nxt = next_version(session, wanted_name)
                raise Conflict(f"An adapter {wanted_name} v{version} already exists: choose another name.",
                               code="version_exists", next_version=nxt) from None
            ref = AdapterRef(a.id, adapter_key(a.id), self.data_dir / a.path, f"{a.name} v{a.version}")
        if activated:
            self._preload(ref)
        if deactivated:  # running jobs finish: unloading waits for a free studio, or happens at the next switch
            self.manager.try_adapter_op(lambda m: m.unload_adapter(ref.key), "unloading an adapter")
        return self.get(adapter_id)

    def _preload(self, ref: AdapterRef, wait_s: float = 0.0) -> bool:
        """Activation pre-loads the adapter into a compatible loaded model when memory allows."""
        spec, weights_hash = self.manager.identity()
        with session_scope(self.engine) as session:
            a = get_adapter(session, ref.id)
            if spec is None or self._compatibility(a, spec, weights_hash) is not None:
                return False
        if self.manager.memory_shortfall_bytes(a.size_bytes * 2):
            return False
        try:
            return self.manager.try_adapter_op(lambda m: m.load_adapter(ref.key, ref.folder), "loading an adapter",
                                               wait_s=wait_s)
        except Exception as exc:  # noqa: BLE001 - pre-loading is an optimisation: the adapter stays unloaded,
            # and the generation that asks for it gets the reason as a domain error
            log.warning("adapter %s not pre-loaded: %s", ref.label, getattr(exc, "message", None) or exc)
            return False

    def preload_active(self) -> int:
        """After a model switch: pre-load every active adapter made for the new model (while memory allows)."""
        spec, _ = self.manager.identity()
        if spec is None:
            return 0
        with session_scope(self.engine) as session:
            refs = [AdapterRef(a.id, adapter_key(a.id), self.data_dir / a.path, f"{a.name} v{a.version}")
                    for a in list_adapters(session, active=True, base_model=spec.id)]
        return sum(self._preload(ref, wait_s=PRELOAD_WAIT_S) for ref in refs)

    def delete(self, adapter_id: int) -> AdapterInfo:
        """Soft delete: hidden from listings, refused for new generations; old jobs keep their reference."""
        with session_scope(self.engine) as session:
            a = self._live(session, adapter_id)
            a.deleted_at = utcnow()
            a.active = False
            save_adapter(session, a)
            spec, weights_hash = self.manager.identity()
            info = self._info(a, spec, weights_hash)
        self.manager.try_adapter_op(lambda m: m.unload_adapter(adapter_key(adapter_id)), "unloading an adapter")
        return info

    def jobs_using(self, adapter_id: int) -> int:
        with session_scope(self.engine) as session:
            return job_count(session, adapter_id)

    # ---- registration --------------------------------------------------------------------------------------
    def register(self, req: RegisterAdapterRequest, *, upload: Path | None = None,
                 upload_name: str | None = None, on_progress: ProgressFn | None = None) -> AdapterInfo:
        """Validate, copy into the adapter store and record, all or nothing."""
        progress = on_progress or (lambda fraction, message: None)
        self.adapters_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".incoming-", dir=self.adapters_dir) as tmp:
            folder, default_name, source = self._fetch(req, Path(tmp), upload, upload_name, progress)
            progress(None, "Checking the adapter")
            files = inspect_adapter(folder)
            spec = self._base_model(files.base_name, req.base_model)
            self._check_structure(files, spec)
            provenance = self._provenance(folder)
            name = _clean_name(req.name or default_name)
            stage = Path(tmp) / "store"
            stage.mkdir()
            for kept in KEPT_FILES:
                if (folder / kept).is_file():
                    shutil.copyfile(folder / kept, stage / kept)
            dest_rel = Path("adapters") / uuid.uuid4().hex
            record = Adapter(
                name=name, version=req.version or 0, description=req.description, base_model=spec.id,
                base_model_revision=provenance.get("base_model_revision") or files.revision,
                base_weights_hash=provenance.get("base_weights_hash"), path=dest_rel.as_posix(), source=source,
                lora_config=files.config, size_bytes=sum(p.stat().st_size for p in stage.iterdir()),
                training_dataset=req.training_dataset or provenance.get("training_dataset"),
                training_config=req.training_config or provenance.get("training_config"),
                training_metrics=req.training_metrics or provenance.get("training_metrics"),
                training_run_id=provenance.get("training_run_id"), trained_at=provenance.get("trained_at"))
            progress(0.9, "Saving")
            return self._store(record, stage, self.data_dir / dest_rel, explicit_version=req.version)

    def _store(self, record: Adapter, stage: Path, dest: Path, explicit_version: int | None) -> AdapterInfo:
        with session_scope(self.engine) as session:
            taken = versions_of(session, record.name)
            if explicit_version is not None and explicit_version in taken:
                raise Conflict(f"{record.name} v{explicit_version} already exists; the next free version is "
                               f"{max(taken) + 1}.", code="version_exists", next_version=max(taken) + 1)
            if explicit_version is None:
                record.version = next_version(session, record.name)
            os.replace(stage, dest)  # files first, then the record; undone if the record fails
            try:
                add_adapter(session, record)
            except IntegrityError:
                session.rollback()
                shutil.rmtree(dest, ignore_errors=True)
                nxt = next_version(session, record.name)
                raise Conflict(f"{record.name} v{record.version} was registered meanwhile; the next free version "
                               f"is {nxt}.", code="version_exists", next_version=nxt) from None
            except Exception:
                shutil.rmtree(dest, ignore_errors=True)
                raise
            spec, weights_hash = self.manager.identity()
            info = self._info(record, spec, weights_hash)
        if record.active:
            self._preload(AdapterRef(record.id, adapter_key(record.id), dest, f"{record.name} v{record.version}"))
        return info

    def _fetch(self, req: RegisterAdapterRequest, tmp: Path, upload: Path | None, upload_name: str | None,
               progress: ProgressFn) -> tuple[Path, str, str]:
        """(folder holding the adapter, default name, source for the record)."""
        if req.source == "folder":
            if not req.path:
                raise InvalidRequest("Give the folder's path.", code="missing_path")
            folder = self._allowed_folder(req.path)
            return folder, folder.name, f"folder:{folder}"
        if req.source == "upload":
            if upload is None:
                raise InvalidRequest("Upload a .zip or .tar.gz archive of the adapter folder.", code="missing_archive")
            progress(None, "Unpacking the archive")
            folder = _extract(upload, tmp / "archive", upload_name or upload.name)
            stem = re.sub(r"(\.tar\.gz|\.tgz|\.tar|\.zip)$", "", upload_name or upload.name, flags=re.I)
            return folder, folder.name if folder.name != "archive" else stem, f"upload:{upload_name or upload.name}"
        if not req.repo_id or not _REPO_ID.fullmatch(req.repo_id) or ".." in req.repo_id or "--" in req.repo_id:
            raise InvalidRequest("Give the hub repo as org/name.", code="invalid_repo_id")

        def refuse_pickles(names: list[str]) -> None:
            if WEIGHTS_FILE not in names and any(n.lower().endswith(PICKLE_SUFFIXES) for n in names):
                raise InvalidRequest(f"{req.repo_id} only has pickled weights, which are refused: they can run code "
                                     f"when loaded. Ask for {WEIGHTS_FILE} (safetensors).", code="pickled_weights")
            if CONFIG_FILE not in names:
                raise InvalidRequest(f"{req.repo_id} is not a PEFT adapter: {CONFIG_FILE} is missing.",
                                     code="not_peft_adapter")

        def on_bytes(done: int, total: int) -> None:
            progress(done / total if total else None, f"Downloading {req.repo_id}: {done / 2**20:.1f} of "
                                                      f"{total / 2**20:.1f} MB")

        folder = hub.download_snapshot(req.repo_id, req.revision, None, self.hf_endpoint, on_bytes,
                                       allow_patterns=list(KEPT_FILES), local_dir=tmp / "hub",
                                       listing_patterns=[f"*{s}" for s in PICKLE_SUFFIXES],
                                       check_listing=refuse_pickles)
        rev = f"@{req.revision}" if req.revision else ""
        return folder, req.repo_id.split("/")[1], f"hub:{req.repo_id}{rev}"

    def _allowed_folder(self, path: str) -> Path:
        """A folder inside an import root (symlinks resolved), or InvalidRequest naming the allowed places."""
        raw = Path(path).expanduser()
        candidates = [raw] if raw.is_absolute() else [root / raw for root in self.import_roots]
        for candidate in candidates:
            resolved = candidate.resolve()
            if any(resolved.is_relative_to(root) for root in self.import_roots):
                try:
                    is_dir = resolved.is_dir()
                except OSError:  # e.g. a name longer than the file system allows
                    is_dir = False
                if not is_dir:
                    raise InvalidRequest(f"There is no folder {path[:200]}.", code="folder_not_found")
                # the folder is inside a root; the files copied from it must be too (no symlinks out of it)
                if all(not (resolved / kept).exists()
                       or any((resolved / kept).resolve().is_relative_to(root) for root in self.import_roots)
                       for kept in KEPT_FILES):
                    return resolved
        roots = ", ".join(str(r) for r in self.import_roots)
        raise InvalidRequest(f"{path} is outside the folders adapters may be registered from ({roots}). Copy it "
                             "into one of them, or upload it as an archive.", code="path_not_allowed",
                             allowed_roots=[str(r) for r in self.import_roots])

    def _base_model(self, base_name: str | None, explicit: str | None) -> ModelSpec:
        found = self._match_registry(base_name) if base_name else None
        if explicit:
            if explicit not in self.registry.ids():
                raise InvalidRequest(f"Unknown base model {explicit!r}. Known: {', '.join(self.registry.ids())}.",
                                     code="unknown_base_model")
            spec = self.registry.get(explicit)
            if found is not None and found.id != spec.id:
                raise Incompatible(f"adapter_config.json says this adapter was trained on {found.display_name}, "
                                   f"not {spec.display_name}.", code="base_model_conflict",
                                   required_model=found.id)
            return spec
        if found is None:
            raise InvalidRequest(f"Cannot tell which model this adapter was trained on (base_model_name_or_path: "
                                 f"{base_name!r}). Choose its base model.", code="unknown_base_model",
                                 known=self.registry.ids())
        return found

    def _match_registry(self, base_name: str) -> ModelSpec | None:
        """A registry entry for adapter_config.json's base_model_name_or_path: an id, a hub repo, or a local
        folder named after an id or laid out like the hub cache (models--org--name/snapshots/...)."""
        name = base_name.strip().rstrip("/")
        cache = re.search(r"models--([^/]+?)--([^/]+)", name)
        tail = Path(name).name
        for spec in self.registry.models:
            repo = (spec.source.hub or "").lower()
            if name == spec.id or name.lower() == repo or tail == spec.id or \
                    (cache and f"{cache[1]}/{cache[2]}".lower() == repo):
                return spec
        return None

    def _check_structure(self, files, spec: ModelSpec) -> None:
        """Against the base model's modules (on the meta device), when its files are on this machine."""
        base_folder = self.store.local_path(spec)
        if base_folder is None:
            return  # checked again when the adapter is first applied to the loaded model
        check_structure(build_skeleton(base_folder), files, spec.display_name)

    def _provenance(self, folder: Path) -> dict[str, Any]:
        path = folder / PROVENANCE_FILE
        if not path.is_file():
            return {}
        data = read_json_object(path, code="invalid_provenance")
        if data.get("trained_at"):
            try:
                data["trained_at"] = datetime.fromisoformat(str(data["trained_at"]).replace("Z", "+00:00"))
            except ValueError:
                data["trained_at"] = None
        return data


def _extract(archive: Path, dest: Path, display_name: str) -> Path:
    """Unpack a .zip / .tar(.gz) safely (no absolute paths, no '..', no links, bounded size) and return the
    folder that holds adapter_config.json."""
    dest.mkdir(parents=True)
    lower = display_name.lower()
    try:
        if lower.endswith(".zip") or zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                _check_members([(m.filename, m.file_size, (m.external_attr >> 16) & 0o170000 == 0o120000)
                                for m in members])
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                _check_members([(m.name, m.size, m.issym() or m.islnk()) for m in members])
                tf.extractall(dest, filter="data")
        else:
            raise InvalidRequest(f"{display_name} is not a .zip or .tar.gz archive.", code="invalid_archive")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise InvalidRequest(f"{display_name} could not be unpacked: {exc}", code="invalid_archive") from None
    found = [p.parent for p in dest.rglob(CONFIG_FILE) if len(p.relative_to(dest).parts) <= 3]
    if len(found) != 1:
        what = "no" if not found else "several"
        raise InvalidRequest(f"{display_name} holds {what} {CONFIG_FILE}: archive exactly one adapter folder.",
                             code="not_peft_adapter")
    return found[0]


def _check_members(members: list[tuple[str, int, bool]]) -> None:
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise InvalidRequest(f"The archive has {len(members)} entries; an adapter needs a handful.",
                             code="invalid_archive")
    if sum(size for _, size, _ in members) > MAX_ARCHIVE_BYTES:
        raise InvalidRequest("The archive unpacks to more than 4 GB.", code="invalid_archive")
    for name, _, is_link in members:
        parts = Path(name).parts
        if name.startswith(("/", "\\")) or ".." in parts or is_link:
            raise InvalidRequest(f"The archive entry {name!r} points outside the archive.", code="invalid_archive")
