"""LoRA adapters as versioned artifacts: registration with validation and provenance, compatibility with the
loaded model, lifecycle (rename, activate, delete, restore), listings and version history, and each version's change
log (who registered, renamed, described, activated, deactivated, deleted or restored it, recorded with the change)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.exc import IntegrityError

from studio.archives import ArchiveRules, copy_stream, extract, import_folder, inside_roots
from studio.db.adapters import (add_change, changes_of, find_identical, get_adapter, job_count, list_adapters,
                                name_in_use, next_version, register_adapter, rename_all, save_adapter, versions_of)
from studio.db.engine import session_scope
from studio.db.training import existing_runs
from studio.db.models import Adapter, UTCTimestamp, utcnow, version_label
from studio.errors import Conflict, Incompatible, InvalidRequest, NotFound, TooLarge
from studio.registry import ModelSpec, Registry
from studio.runtime import hub
from studio.runtime.adapters import (CONFIG_FILE, MAX_CONFIG_BYTES, PICKLE_SUFFIXES, WEIGHTS_FILE, check_structure,
                                    inspect_adapter, read_json_object)
from studio.runtime.manager import ModelManager
from studio.runtime.store import ModelStore
from studio.runtime.transformers_backend import build_skeleton
from studio.services.jobs import DELETED_ADAPTER
from studio.storage import storage_writes
from studio.users import LOCAL_USER

log = logging.getLogger(__name__)
PROVENANCE_FILE = "training_provenance.json"  # written by the studio's training; optional for imports
README_FILE = "README.md"
KEPT_FILES = (CONFIG_FILE, WEIGHTS_FILE, README_FILE, PROVENANCE_FILE)
MAX_NAME = 100
# Size limits. Metadata is stored in the database and sent to pages, so it stays small; weights may be large.
MAX_WEIGHTS_BYTES = 4 * 2**30
MAX_README_BYTES = 256 * 1024
MAX_PROVENANCE_BYTES = 512 * 1024
MAX_TRAINING_CONFIG_BYTES = 64 * 1024  # as JSON
MAX_TRAINING_METRICS_BYTES = 256 * 1024  # as JSON: a loss curve of ~10,000 points
MAX_DATASET_CHARS = 500
MAX_UPLOAD_BYTES = 5 * 2**30  # an uploaded archive, as received
MAX_ARCHIVE_MEMBERS = 200
ProgressFn = Callable[[float | None, str], None]
# The hub's rule: org/name of letters, digits, '-', '_', '.', not starting or ending with '-' or '.', no '--' or '..'
_REPO_PART = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(f"{_REPO_PART}/{_REPO_PART}")
# registrations of one name at once (threads, or studios sharing the database) each get the next free version:
# the (name, version) constraint refuses all but one, the others try the next number this often
VERSION_ATTEMPTS = 20


def file_cap(name: str) -> int:
    """The most bytes the studio keeps of each adapter file."""
    return {CONFIG_FILE: MAX_CONFIG_BYTES, WEIGHTS_FILE: MAX_WEIGHTS_BYTES, README_FILE: MAX_README_BYTES,
            PROVENANCE_FILE: MAX_PROVENANCE_BYTES}[name]


def _kb(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MB" if nbytes >= 2**20 \
        else f"{nbytes // 1024} KB"


# ---- requests and results ------------------------------------------------------------------------------------
class TrainingFields(BaseModel):
    """Training provenance, from the request or from training_provenance.json; bounded (stored and shown)."""

    training_dataset: str | None = Field(None, max_length=MAX_DATASET_CHARS)
    training_config: dict[str, Any] | None = Field(
        None, description=f"at most {MAX_TRAINING_CONFIG_BYTES // 1024} KB as JSON")
    training_metrics: dict[str, Any] | None = Field(
        None, description=f"at most {MAX_TRAINING_METRICS_BYTES // 1024} KB as JSON (e.g. 'loss': [...])")

    @field_validator("training_config", "training_metrics")
    @classmethod
    def _bounded(cls, value: dict | None, info) -> dict | None:
        limit = MAX_TRAINING_CONFIG_BYTES if info.field_name == "training_config" else MAX_TRAINING_METRICS_BYTES
        if value is not None and len(json.dumps(value, default=str)) > limit:
            raise ValueError(f"at most {limit // 1024} KB of JSON")
        return value


class RegisterAdapterRequest(TrainingFields):
    # strict like every request body: "2" is not a version, "true" or 1 is not a boolean (an upload's form fields,
    # which are text by nature, are converted by the route, naming the field it cannot read)
    model_config = ConfigDict(extra="forbid", strict=True)

    source: Literal["folder", "hub", "upload"] = Field(description="a server folder, a hub repo, or an archive")
    path: str | None = Field(None, description="folder: a path inside an import root")
    repo_id: str | None = Field(None, description="hub: org/name of the adapter repo")
    revision: str | None = Field(None, description="hub: branch, tag or commit")
    name: str | None = Field(None, description="default: the folder, repo or archive name")
    version: int | None = Field(None, ge=1, le=2 ** 63 - 1,  # stored as a 64-bit integer
                                description="default: the next free version of this name")
    description: str = Field("", max_length=2000)
    base_model: str | None = Field(None, description="registry model id; default: from adapter_config.json")
    allow_duplicate: bool = Field(False, description="register even when an adapter with identical weights and "
                                                     "configuration exists (refused with 409 identical_adapter "
                                                     "otherwise)")


class Provenance(TrainingFields):
    model_config = ConfigDict(extra="ignore")

    base_model_revision: str | None = Field(None, max_length=200)
    base_weights_hash: str | None = Field(None, max_length=200)
    training_run_id: str | None = Field(None, max_length=200)
    trained_at: datetime | None = None

    @field_validator("trained_at", mode="before")
    @classmethod
    def _lenient_date(cls, value):
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
        except ValueError:
            return None


class AdapterUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "true" or 1 is not `active: true`

    name: str | None = Field(None, description="renames the whole name: every version (deleted ones too) moves to "
                                               "the new name and keeps its number; refused (409 name_taken) when "
                                               "the new name already has versions")
    description: str | None = Field(None, max_length=2000)
    active: bool | None = None


class AdapterSummary(BaseModel):
    """An adapter in a listing: small fields only. Its LoRA and training configuration and metrics are in the
    detail (GET /api/adapters/{id})."""

    id: int
    name: str
    version: int
    label: str = Field(description="'name vN', as the studio names it everywhere")
    description: str
    base_model: str
    base_model_name: str
    base_model_max_duration_s: float | None
    base_model_revision: str | None
    active: bool
    deleted: bool
    compatible: bool = Field(description="usable with the loaded model")
    compatibility_note: str | None = Field(description="why not, for a person")
    rank: int | None
    alpha: float | None
    source: str
    size_bytes: int
    usage_count: int
    training_dataset: str | None
    training_run_id: str | None
    trained_at: UTCTimestamp | None
    created_at: UTCTimestamp
    updated_at: UTCTimestamp
    deleted_at: UTCTimestamp | None


class AdapterInfo(AdapterSummary):
    """One adapter in full (detail view only): its LoRA configuration (PEFT LoraConfig fields only) and its
    training configuration and metrics."""

    target_modules: str | list[str] | None
    lora_config: dict[str, Any]
    training_config: dict[str, Any] | None
    training_metrics: dict[str, Any] | None


class AdapterGroup(BaseModel):
    name: str
    versions: list[AdapterSummary]  # oldest first


# registered: from a folder, an upload, the hub or a training run (details: source, label; run_id and step);
# renamed: {"name": [old, new]}; described: {"description": [old, new]}; activated / deactivated: {"active": [old,
# new]}; deleted, restored: {}
AdapterAction = Literal["registered", "renamed", "described", "activated", "deactivated", "deleted", "restored"]


class AdapterChangeInfo(BaseModel):
    """One change of an adapter version: who made it, when, and what changed (old -> new)."""

    id: int
    adapter_id: int
    action: AdapterAction
    details: dict[str, Any] = Field(description=(
        "registered: source ('folder:...', 'upload:...', 'hub:...', 'training:run N'), label (and run_id, step "
        "for a training run's checkpoint); renamed: name [old, new]; described: description [old, new]; "
        "activated / deactivated: active [old, new]; deleted, restored: nothing"))
    changed_by: str = Field(description="the signed-in user ('local' without auth)")
    changed_at: UTCTimestamp


class TimelineEntry(BaseModel):
    id: int
    version: int
    trained_at: UTCTimestamp | None
    created_at: UTCTimestamp
    final_loss: float | None
    loss: list[float] | None
    status: Literal["active", "inactive", "deleted"]
    training_run_id: str | None
    training_run_url: str | None = Field(description="the training run's page (null: not trained by this studio)")


@dataclass(frozen=True)
class AdapterRef:
    """What generation needs to apply an adapter: a registered version (id), or a training run's checkpoint folder
    auditioned before any registration (id None)."""

    id: int | None
    key: str  # PEFT adapter name inside the loaded model
    folder: Path
    label: str


def adapter_key(adapter_id: int) -> str:
    return f"adapter_{adapter_id}"


def checkpoint_key(run_id: int, step: int) -> str:
    """The PEFT adapter name of a training run's checkpoint auditioned before registration."""
    return f"run_{run_id}_step_{step}"


def training_run_url(run_id: int) -> str:
    """A training run's page: the studio's page opens the Training tab on it (the page is always there: no 404)."""
    return f"/?run={run_id}"


def _run_id(a: Adapter) -> int | None:
    """The studio's own run id of an adapter trained here (provenance from elsewhere may say anything)."""
    text = a.training_run_id or ""
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text) else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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

    def _summary_fields(self, a: Adapter, spec: ModelSpec | None, weights_hash: str | None) -> dict[str, Any]:
        base = self._spec_or_none(a.base_model)
        note = self._compatibility(a, spec, weights_hash)
        cfg = a.lora_config or {}
        return dict(
            id=a.id, name=a.name, version=a.version, label=a.label, description=a.description,
            base_model=a.base_model, base_model_name=self._model_name(a.base_model),
            base_model_max_duration_s=base.max_duration_s if base else None,
            base_model_revision=a.base_model_revision, active=a.active, deleted=a.deleted_at is not None,
            compatible=note is None, compatibility_note=note, rank=cfg.get("r"), alpha=cfg.get("lora_alpha"),
            source=a.source, size_bytes=a.size_bytes, usage_count=a.usage_count,
            training_dataset=a.training_dataset, training_run_id=a.training_run_id, trained_at=a.trained_at,
            created_at=a.created_at, updated_at=a.updated_at, deleted_at=a.deleted_at)

    def _info(self, a: Adapter, spec: ModelSpec | None, weights_hash: str | None) -> AdapterInfo:
        cfg = a.lora_config or {}
        return AdapterInfo(**self._summary_fields(a, spec, weights_hash), target_modules=cfg.get("target_modules"),
                           lora_config=cfg, training_config=a.training_config,
                           training_metrics=a.training_metrics)

    def list(self, *, active: bool | None = None, base_model: str | None = None,
             compatible: bool | None = None, deleted: bool = False) -> list[AdapterSummary]:
        """Live adapters (or, with deleted=True, the deleted ones only), without their large fields."""
        spec, weights_hash = self.manager.identity()
        with session_scope(self.engine) as session:
            rows = list_adapters(session, active=active, base_model=base_model, deleted_only=deleted)
        infos = [AdapterSummary(**self._summary_fields(a, spec, weights_hash)) for a in rows]
        return [i for i in infos if compatible is None or i.compatible == compatible]

    def grouped(self, **filters) -> list[AdapterGroup]:
        groups: dict[str, list[AdapterSummary]] = {}
        for info in self.list(**filters):  # ordered by name, then creation
            groups.setdefault(info.name, []).append(info)
        return [AdapterGroup(name=name, versions=versions) for name, versions in groups.items()]

    def _row(self, session, adapter_id: int) -> Adapter:
        a = get_adapter(session, adapter_id)
        if a is None:
            raise NotFound(f"There is no adapter {adapter_id}.", code="adapter_not_found", adapter_id=adapter_id)
        return a

    def _live(self, session, adapter_id: int) -> Adapter:
        a = self._row(session, adapter_id)
        if a.deleted_at is not None:
            raise NotFound(f"Adapter {adapter_id} ({a.label}) was deleted; restore it to use it again.",
                           code="adapter_deleted", adapter_id=adapter_id)
        return a

    def get(self, adapter_id: int, *, deleted: bool = False) -> AdapterInfo:
        """A live adapter in full (a deleted one too with deleted=True)."""
        spec, weights_hash = self.manager.identity()
        with session_scope(self.engine) as session:
            a = self._row(session, adapter_id) if deleted else self._live(session, adapter_id)
            return self._info(a, spec, weights_hash)

    def label(self, adapter_id: int | None) -> str | None:
        """How a job shows the adapter it used: 'name vN', or 'Deleted Adapter'."""
        if adapter_id is None:
            return None
        with session_scope(self.engine) as session:
            a = get_adapter(session, adapter_id)
        if a is None or a.deleted_at is not None:
            return DELETED_ADAPTER
        return a.label

    def changes(self, adapter_id: int) -> list[AdapterChangeInfo]:
        """Who changed this version and how, newest first (a deleted version's too)."""
        with session_scope(self.engine) as session:
            self._row(session, adapter_id)
            return [AdapterChangeInfo.model_validate(c, from_attributes=True)
                    for c in changes_of(session, adapter_id)]

    def timeline(self, name: str) -> list[TimelineEntry]:
        with session_scope(self.engine) as session:
            rows = list_adapters(session, include_deleted=True, name=name)
            runs = existing_runs(session, [r for r in map(_run_id, rows) if r is not None])
        if not rows:
            raise NotFound(f"There is no adapter named {name!r}.", code="adapter_not_found", name=name)
        entries = []
        for a in sorted(rows, key=lambda r: (r.created_at, r.version)):
            metrics = a.training_metrics or {}
            loss = metrics.get("loss")
            loss_list = [float(x) for x in loss if _is_number(x)] if isinstance(loss, list) else None
            final = metrics.get("final_loss", loss_list[-1] if loss_list else loss)
            status = "deleted" if a.deleted_at else ("active" if a.active else "inactive")
            run_id = _run_id(a)
            entries.append(TimelineEntry(
                id=a.id, version=a.version, trained_at=a.trained_at, created_at=a.created_at,
                final_loss=float(final) if _is_number(final) else None, loss=loss_list, status=status,
                training_run_id=a.training_run_id,
                # a link only to a run of this studio (an imported adapter's run id names someone else's run)
                training_run_url=training_run_url(run_id) if run_id is not None and run_id in runs else None))
        return entries

    # ---- generation ----------------------------------------------------------------------------------------
    def for_generation(self, adapter_id: int, spec: ModelSpec, weights_hash: str | None) -> AdapterRef:
        """The adapter to apply, or the reason it is refused (the server re-checks whatever a page sends)."""
        with session_scope(self.engine) as session:
            a = get_adapter(session, adapter_id)
            if a is None:
                raise NotFound(f"There is no adapter {adapter_id}.", code="adapter_not_found", adapter_id=adapter_id)
            if a.deleted_at is not None:
                raise InvalidRequest(f"Adapter {a.label} was deleted; restore it in the Adapters tab to use it.",
                                     code="adapter_deleted", adapter_id=adapter_id)
            if not a.active:
                raise InvalidRequest(f"Adapter {a.label} is inactive: activate it in the Adapters tab.",
                                     code="adapter_inactive", adapter_id=adapter_id)
            reason = self._compatibility(a, spec, weights_hash)
            if reason:
                others = [{"id": o.id, "name": o.name, "version": o.version}
                          for o in list_adapters(session, active=True, base_model=spec.id)
                          if self._compatibility(o, spec, weights_hash) is None][:5]
                hint = (f" Compatible with {spec.display_name}: "
                        + ", ".join(version_label(o["name"], o["version"]) for o in others) + "." if others else
                        f" No adapter for {spec.display_name} is registered.")
                raise Incompatible(f"Adapter {a.label} cannot be used with {spec.display_name}: "
                                   f"{reason}. Change the model in Settings to use it.{hint}",
                                   code="adapter_incompatible", adapter_id=adapter_id, required_model=a.base_model,
                                   required_model_name=self._model_name(a.base_model), compatible=others)
            folder = self.data_dir / a.path
            if not folder.is_dir():  # registered by another studio sharing the database: its files are there
                raise Conflict(f"The files of adapter {a.label} are not in this studio's data directory (another "
                               "studio sharing the database registered it, or its folder was removed): generate "
                               "with it there, or register its files here.", code="adapter_files_missing",
                               adapter_id=adapter_id)
            # Loaded into the model by the generation itself, on first use (and kept, least recently used first
            # out): nothing is loaded ahead, so a switch or a registration never keeps the studio busy.
            return AdapterRef(a.id, adapter_key(a.id), folder, a.label)

    # ---- lifecycle -----------------------------------------------------------------------------------------
    def update(self, adapter_id: int, change: AdapterUpdate, user: str = LOCAL_USER) -> AdapterInfo:
        """Describe, activate or deactivate one version; renaming renames the whole name (every version, deleted
        ones included, keeps its number: a version number only means something within its name). Each change is
        recorded (by `user`) with it: a rename on every version it moved."""
        with session_scope(self.engine) as session:
            a = self._live(session, adapter_id)
            old_name = a.name
            new_name = old_name if change.name is None else _clean_name(change.name)
            if new_name != old_name and name_in_use(session, new_name):
                raise Conflict(f"The name {new_name!r} is already used by other adapters. Renaming moves every "
                               f"version of {old_name} to the new name, so choose a name that is not in use.",
                               code="name_taken", name=new_name)
            if change.description is not None and change.description != a.description:
                add_change(session, a.id, "described", user, {"description": [a.description, change.description]})
                a.description = change.description
            deactivated = change.active is False and a.active
            if change.active is not None and change.active != a.active:
                add_change(session, a.id, "activated" if change.active else "deactivated", user,
                           {"active": [a.active, change.active]})
                a.active = change.active
            try:
                if new_name != old_name:
                    # every version, in the same transaction as `a`
                    for moved in rename_all(session, old_name, new_name):
                        add_change(session, moved, "renamed", user, {"name": [old_name, new_name]})
                save_adapter(session, a)
            except IntegrityError:  # the name was taken meanwhile
                session.rollback()
                raise Conflict(f"The name {new_name!r} was taken meanwhile; choose another.", code="name_taken",
                               name=new_name) from None
        if deactivated:  # unloaded when the model is next used; running jobs finish with it
            self.manager.discard_adapter(adapter_key(adapter_id))
        return self.get(adapter_id)

    def delete(self, adapter_id: int, user: str = LOCAL_USER) -> AdapterInfo:
        """Soft delete: hidden from listings, refused for new generations; old jobs keep their reference; restore
        brings it back."""
        with session_scope(self.engine) as session:
            a = self._live(session, adapter_id)
            a.deleted_at = utcnow()
            a.active = False
            add_change(session, a.id, "deleted", user)
            save_adapter(session, a)
            spec, weights_hash = self.manager.identity()
            info = self._info(a, spec, weights_hash)
        self.manager.discard_adapter(adapter_key(adapter_id))
        return info

    def restore(self, adapter_id: int, user: str = LOCAL_USER) -> AdapterInfo:
        """Undo a soft delete: the adapter comes back active under its name and version."""
        with session_scope(self.engine) as session:
            a = self._row(session, adapter_id)
            if a.deleted_at is None:
                raise Conflict(f"Adapter {a.label} is not deleted.", code="adapter_not_deleted",
                               adapter_id=adapter_id)
            clash = [o for o in list_adapters(session, name=a.name) if o.version == a.version]
            if clash:  # the unique (name, version) constraint covers deleted rows; said plainly all the same
                raise Conflict(f"{a.label} is taken by another adapter now: rename that one first.",
                               code="version_exists", adapter_id=clash[0].id)
            a.deleted_at = None
            a.active = True
            add_change(session, a.id, "restored", user)
            try:
                save_adapter(session, a)
            except IntegrityError:
                session.rollback()
                raise Conflict(f"{a.label} is taken by another adapter now.", code="version_exists") from None
        return self.get(adapter_id)

    def jobs_using(self, adapter_id: int) -> int:
        with session_scope(self.engine) as session:
            return job_count(session, adapter_id)

    # ---- registration --------------------------------------------------------------------------------------
    @contextmanager
    def incoming(self) -> Iterator[Path]:
        """A temporary folder inside the adapter store (same disk as the result, never the shared /tmp), removed
        afterwards; start-up removes those a killed studio left behind (`.incoming-*`). A full or read-only disk
        while spooling, unpacking, copying or moving in it leaves as 507 disk_full / 503 storage_unavailable
        naming the folder, after everything written so far is removed."""
        with storage_writes(self.adapters_dir):
            self.adapters_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".incoming-", dir=self.adapters_dir) as tmp:
                yield Path(tmp)

    def register(self, req: RegisterAdapterRequest, *, upload: Path | None = None,
                 upload_name: str | None = None, on_progress: ProgressFn | None = None,
                 user: str = LOCAL_USER) -> AdapterInfo:
        """Validate, copy into the adapter store and record (with its 'registered' change by `user`), all or
        nothing."""
        progress = on_progress or (lambda fraction, message: None)
        if upload is not None and upload.is_file() and upload.stat().st_size > MAX_UPLOAD_BYTES:
            raise TooLarge(f"The archive is over {_kb(MAX_UPLOAD_BYTES)}, the most the studio takes.",
                           code="upload_too_large", max_bytes=MAX_UPLOAD_BYTES)
        with self.incoming() as tmp:
            folder, default_name, source = self._fetch(req, tmp, upload, upload_name, progress)
            progress(None, "Checking the adapter")
            files = inspect_adapter(folder)
            spec = self._base_model(files.base_name, req.base_model)
            self._check_structure(files, spec)
            provenance = self._provenance(folder)
            name = _clean_name(req.name or default_name)
            stage = tmp / "store"
            stage.mkdir()
            for kept in KEPT_FILES:
                if (folder / kept).is_file():
                    _copy_capped(folder / kept, stage / kept)
            if files.dropped:  # keys PEFT's LoraConfig does not know (padding, foreign tools): not kept
                (stage / CONFIG_FILE).write_text(json.dumps(files.config, indent=2), encoding="utf-8")
            dest_rel = Path("adapters") / uuid.uuid4().hex
            record = Adapter(
                name=name, version=req.version or 0, description=req.description, base_model=spec.id,
                base_model_revision=provenance.base_model_revision or files.revision,
                base_weights_hash=provenance.base_weights_hash, path=dest_rel.as_posix(), source=source,
                lora_config=files.config, size_bytes=sum(p.stat().st_size for p in stage.iterdir()),
                content_hash=content_hash(stage / WEIGHTS_FILE, files.config, spec.id),
                training_dataset=req.training_dataset or provenance.training_dataset,
                training_config=req.training_config or provenance.training_config,
                training_metrics=req.training_metrics or provenance.training_metrics,
                training_run_id=provenance.training_run_id, trained_at=provenance.trained_at)
            progress(0.9, "Saving")
            return self._store(record, stage, self.data_dir / dest_rel, explicit_version=req.version,
                               allow_duplicate=req.allow_duplicate, user=user)

    def _store(self, record: Adapter, stage: Path, dest: Path, explicit_version: int | None,
               allow_duplicate: bool, user: str, details: dict | None = None) -> AdapterInfo:
        with session_scope(self.engine) as session:
            same = None if allow_duplicate else find_identical(session, record.content_hash)
            if same is not None:
                raise Conflict(f"This adapter is identical to {same.label} (id {same.id}): same weights and "
                               f"configuration. Use {same.label}, or register it anyway (allow_duplicate: true).",
                               code="identical_adapter", existing_id=same.id, existing_name=same.name,
                               existing_version=same.version, existing_label=same.label)
            taken = versions_of(session, record.name)
            if explicit_version is not None and explicit_version in taken:
                raise Conflict(f"{version_label(record.name, explicit_version)} already exists; the next free "
                               f"version is {max(taken) + 1}.", code="version_exists", next_version=max(taken) + 1)
            if explicit_version is None:
                record.version = next_version(session, record.name)
            os.replace(stage, dest)  # files first, then the record; undone if the record fails
            for attempt in range(VERSION_ATTEMPTS):
                try:
                    register_adapter(session, record, user, {"source": record.source, "label": record.label,
                                                             **(details or {})})
                    break
                except IntegrityError:  # (name, version) is unique: another writer took this number first
                    session.rollback()
                    nxt = next_version(session, record.name)
                    if explicit_version is None and attempt + 1 < VERSION_ATTEMPTS:
                        record.version = nxt  # an automatic number: take the next one
                        continue
                    shutil.rmtree(dest, ignore_errors=True)
                    raise Conflict(f"{record.label} was registered meanwhile; the next free version is {nxt}.",
                                   code="version_exists", next_version=nxt) from None
                except Exception:
                    shutil.rmtree(dest, ignore_errors=True)
                    raise
            spec, weights_hash = self.manager.identity()
            return self._info(record, spec, weights_hash)

    def register_checkpoint(self, folder: Path, *, name: str, description: str, base_model: str,
                            provenance: Provenance, user: str = LOCAL_USER, step: int | None = None) -> AdapterInfo:
        """A training run's checkpoint folder (inside the data directory, written by the studio's own training: not
        an import root) becomes the next version of `name`, with its provenance, all or nothing (registered by
        `user`, at the run's `step`). Internal: the training service calls it, never a request's path."""
        spec = self.registry.get(base_model)
        with self.incoming() as tmp:
            files = inspect_adapter(folder)
            self._check_structure(files, spec)
            stage = tmp / "store"
            stage.mkdir()
            for kept in (CONFIG_FILE, WEIGHTS_FILE):
                _copy_capped(folder / kept, stage / kept)
            # the record travels with the files: an export of this folder re-imports with its provenance
            (stage / PROVENANCE_FILE).write_text(provenance.model_dump_json(indent=2), encoding="utf-8")
            dest_rel = Path("adapters") / uuid.uuid4().hex
            record = Adapter(
                name=_clean_name(name), version=0, description=description, base_model=spec.id,
                base_model_revision=provenance.base_model_revision, base_weights_hash=provenance.base_weights_hash,
                path=dest_rel.as_posix(), source=f"training:run {provenance.training_run_id}",
                lora_config=files.config, size_bytes=sum(p.stat().st_size for p in stage.iterdir()),
                content_hash=content_hash(stage / WEIGHTS_FILE, files.config, spec.id),
                training_dataset=provenance.training_dataset, training_config=provenance.training_config,
                training_metrics=provenance.training_metrics, training_run_id=provenance.training_run_id,
                trained_at=provenance.trained_at)
            # two checkpoints of a run may hold the same weights (a stop right after a checkpoint): both register
            run = {"run_id": int(provenance.training_run_id)} if (provenance.training_run_id or "").isdigit() else {}
            return self._store(record, stage, self.data_dir / dest_rel, explicit_version=None, allow_duplicate=True,
                               user=user, details={**run, "step": step})

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

        def check_listing(sizes: dict[str, int]) -> None:
            """Refused before anything is downloaded: pickles only, no config, files over their limits."""
            names = list(sizes)
            if WEIGHTS_FILE not in names and any(n.lower().endswith(PICKLE_SUFFIXES) for n in names):
                raise InvalidRequest(f"{req.repo_id} only has pickled weights, which are refused: they can run code "
                                     f"when loaded. Ask for {WEIGHTS_FILE} (safetensors).", code="pickled_weights")
            if CONFIG_FILE not in names:
                raise InvalidRequest(f"{req.repo_id} is not a PEFT adapter: {CONFIG_FILE} is missing.",
                                     code="not_peft_adapter")
            for name in KEPT_FILES:
                if sizes.get(name, 0) > file_cap(name):
                    code = "metadata_too_large" if name != WEIGHTS_FILE else "weights_too_large"
                    raise TooLarge(f"{name} in {req.repo_id} is {_kb(sizes[name])}; the studio keeps at most "
                                   f"{_kb(file_cap(name))}.", code=code, file=name, max_bytes=file_cap(name))

        def on_bytes(done: int, total: int) -> None:
            progress(done / total if total else None, f"Downloading {req.repo_id}: {done / 2**20:.1f} of "
                                                      f"{total / 2**20:.1f} MB")

        folder = hub.download_snapshot(req.repo_id, req.revision, None, self.hf_endpoint, on_bytes,
                                       allow_patterns=list(KEPT_FILES), local_dir=tmp / "hub",
                                       storage_folder=self.adapters_dir,
                                       listing_patterns=[f"*{s}" for s in PICKLE_SUFFIXES],
                                       check_listing=check_listing)
        rev = f"@{req.revision}" if req.revision else ""
        return folder, req.repo_id.split("/")[1], f"hub:{req.repo_id}{rev}"

    def _allowed_folder(self, path: str) -> Path:
        """A folder inside an import root (symlinks resolved), or InvalidRequest naming the allowed places."""
        # the folder is inside a root; the files copied from it must be too (no symlinks out of it)
        folder = import_folder(path, self.import_roots, lambda found: all(
            not (found / kept).exists() or inside_roots(found / kept, self.import_roots) for kept in KEPT_FILES))
        if folder is not None:
            return folder
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

    def _provenance(self, folder: Path) -> Provenance:
        path = folder / PROVENANCE_FILE
        if not path.is_file():
            return Provenance()
        data = read_json_object(path, code="invalid_provenance", max_bytes=MAX_PROVENANCE_BYTES)
        try:
            return Provenance.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InvalidRequest(f"{PROVENANCE_FILE} is not usable: {problems}.", code="invalid_provenance") from None


def content_hash(weights: Path, config: dict, base_model: str) -> str:
    """sha256 of what makes two adapters the same: the weights' bytes, the LoRA configuration (less where the base
    was found, which differs from machine to machine) and the base model."""
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    same = {k: v for k, v in config.items() if k not in ("base_model_name_or_path", "revision")}
    digest.update(json.dumps([same, base_model], sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _copy_capped(source: Path, dest: Path) -> None:
    """Copy one kept file, refusing it over its size limit (counted while copying, whatever stat said)."""
    with source.open("rb") as src, dest.open("wb") as out:
        copy_stream(src, out, source.name, file_cap(source.name), _too_large)


def _too_large(name: str, limit: int) -> TooLarge:
    code = "metadata_too_large" if name != WEIGHTS_FILE else "weights_too_large"
    return TooLarge(f"{name} is over {_kb(limit)}, the most the studio keeps.", code=code, file=name, max_bytes=limit)


def _mark_pickle(dest: Path, name: str) -> None:
    """Pickled weights are never unpacked, but an empty file of that name lets the adapter check say why the
    archive is refused (pickled weights, rather than missing ones)."""
    parts = Path(name).parts
    if parts and 1 <= len(parts) <= 3 and parts[-1].lower().endswith(PICKLE_SUFFIXES):
        target = dest.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()


def _adapter_archive() -> ArchiveRules:
    """The kept files of an adapter folder (at most two folders deep) are the only entries unpacked; the caps are
    read at each call (tests lower them)."""
    return ArchiveRules(
        keep=lambda parts: parts[-1] in KEPT_FILES and len(parts) <= 3, file_cap=lambda name: file_cap(name),
        budget=sum(file_cap(name) for name in KEPT_FILES), max_members=MAX_ARCHIVE_MEMBERS,
        members_hint="; an adapter needs a handful", budget_hint="; archive only the adapter folder",
        too_large=_too_large, skipped=_mark_pickle)


def _extract(archive: Path, dest: Path, display_name: str) -> Path:
    """Unpack the kept files (KEPT_FILES) of a .zip / .tar(.gz) (studio/archives.py: links, '..', counts and
    sizes refused) and return the folder that holds adapter_config.json."""
    extract(archive, dest, display_name, _adapter_archive())
    found = [p.parent for p in dest.rglob(CONFIG_FILE)]
    if len(found) != 1:
        what = "no" if not found else "several"
        raise InvalidRequest(f"{display_name} holds {what} {CONFIG_FILE}: archive exactly one adapter folder.",
                             code="not_peft_adapter")
    return found[0]
