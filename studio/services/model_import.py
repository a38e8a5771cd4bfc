"""Importing audiocraft MusicGen checkpoints: a folder or file inside an import root, an uploaded archive (or the
checkpoint file itself), or a hub repo. The checkpoint is read safely and converted (studio/runtime/audiocraft.py),
the text encoder and codec it names are downloaded with progress when missing, and the converted folder is
registered as a custom model with its provenance.

An import runs in a thread of its own (minutes for a large model, and the page or client may go away: the import
goes on); its progress is a stream of ImportEvents ending in `ready` (with the report) or `error`. One import at a
time: converting a large model takes its size in memory. Nothing is kept from an import that fails: its temporary
folder is removed (at the next start if the studio is killed meanwhile) and no record is written."""
from __future__ import annotations

import json
import logging
import queue
import shutil
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from studio.archives import ArchiveRules, archive_stem, extract, inside_roots
from studio.errors import Conflict, InvalidRequest, StudioError, TooLarge
from studio.registry import ModelSpec
from studio.runtime import audiocraft as ac
from studio.runtime import hub
from studio.runtime.model_config import describe
from studio.runtime.store import ModelStore
from studio.services.custom_models import CustomModelPreview, CustomModelService, slug
from studio.storage import storage_writes
from studio.users import LOCAL_USER

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 2**30  # musicgen-large's LM in float32 is ~13 GB
CHECKPOINT_NAMES = ("state_dict.bin", "checkpoint.th")  # exported, solver
COMPRESSION = "compression_state_dict.bin"
CHECKPOINT_SUFFIXES = (".bin", ".th", ".pt", ".pth", ".ckpt")
# the text encoder's and codec's repos: config, safetensors weights, tokenizer and feature extractor files only
REFERENCE_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "spiece.model", "tokenizer.json",
                   "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json"]
GENERIC_NAMES = {"state_dict", "checkpoint", "compression_state_dict", "imported"}
KEPT_STATUSES = 20  # the imports GET /api/models/import lists (this run's latest)
ADAPTER_NOTE = ("LoRA adapters trained with PEFT on audiocraft's modules (names like transformer.layers.0.linear1) "
                "do not apply to the converted model: train new ones on it in the Training tab, or merge such an "
                "adapter into the checkpoint with audiocraft (merge_and_unload) and import the merged checkpoint.")


class ImportRequest(BaseModel):
    """An audiocraft checkpoint to import: a folder (or the checkpoint file) inside an import root, or a hub repo.
    An archive is uploaded as multipart instead (source 'upload')."""
    model_config = ConfigDict(extra="forbid", strict=True)

    source: Literal["folder", "hub", "upload"] = Field(description=(
        "folder: a server folder (or file) inside an import root holding state_dict.bin (exported) or "
        "checkpoint.th (solver), with compression_state_dict.bin beside it if any; hub: a hub repo holding "
        "them; upload: multipart, the archive (or the checkpoint file) in the field `archive`"))
    path: str | None = Field(None, max_length=4096, description="folder: the folder or checkpoint file")
    repo_id: str | None = Field(None, max_length=200, description="hub: org/name")
    revision: str | None = Field(None, max_length=200, description="hub: branch, tag or commit (default: main)")
    id: str | None = Field(None, max_length=64, description=(
        "the model's id in the studio (lowercase letters, digits, '.', '_', '-'); default: from the folder, "
        "repo or archive name"))
    display_name: str | None = Field(None, max_length=80)
    description: str | None = Field(None, max_length=500)


class ImportReport(BaseModel):
    """What was converted, and the model it became."""
    model: CustomModelPreview
    checkpoint: str = Field(description="where the checkpoint came from")
    layout: Literal["exported", "solver"] = Field(description=(
        "exported: audiocraft's release format (state_dict.bin); solver: a training checkpoint"))
    audiocraft_version: str | None
    sha256: str = Field(description="of the checkpoint file")
    configuration: dict[str, Any] = Field(description="the checkpoint's shape, as the studio read its xp.cfg")
    text_encoder: str
    codec: str
    tensors: int = Field(description="tensors in the converted model")
    weights_bytes: int
    seconds: float
    notes: list[str]


ImportStage = Literal["checking", "downloading", "converting", "registering", "ready", "error"]


class ImportEvent(BaseModel):
    """One step of an import: the last is `ready` (with the report) or `error` (with a code)."""
    stage: ImportStage
    message: str
    fraction: float | None = Field(None, description="0..1 of this stage, where known")
    bytes_done: int | None = None
    bytes_total: int | None = None
    code: str | None = Field(None, description="error events: what went wrong, as a code")
    details: dict[str, Any] | None = Field(None, description=(
        "error events: what the refusal names, e.g. `option` and `value` (unsupported_option), `key` (a tensor), "
        "`object` (unsafe_checkpoint)"))
    report: ImportReport | None = None

    @property
    def terminal(self) -> bool:
        return self.stage in ("ready", "error")

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)


class ImportStatus(BaseModel):
    """An import of this run of the studio (running or finished), for a client that lost its stream."""
    id: int
    source: str
    started_at: datetime
    state: Literal["running", "ready", "error"]
    last: ImportEvent


@dataclass
class _Import:
    id: int
    req: ImportRequest
    user: str
    source_text: str
    started_at: datetime
    model_id: str = ""
    upload: Path | None = None  # a folder holding the uploaded file (the import owns it)
    upload_name: str | None = None
    events: "queue.Queue[ImportEvent]" = field(default_factory=queue.Queue)
    last: ImportEvent | None = None


class ModelImportService:
    def __init__(self, custom_models: CustomModelService, store: ModelStore, import_roots: list[Path],
                 tmp_dir: Path):
        self.custom_models, self.store = custom_models, store
        self.import_roots, self.tmp_dir = import_roots, Path(tmp_dir)
        self._busy = threading.Lock()  # one import at a time
        self._lock = threading.Lock()
        self._imports: list[_Import] = []

    def remove_orphans(self) -> list[Path]:
        """At start-up: converted folders no model uses (a studio killed between writing one and recording its
        model, or an import whose model was removed while the studio was down) are removed."""
        folder = self.store.imported_dir
        used = {m.source.folder for m in self.custom_models.registry.models if m.source.folder}
        orphans = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and str(p) not in used] \
            if folder.is_dir() else []
        for orphan in orphans:
            shutil.rmtree(orphan, ignore_errors=True)
            log.info("removed %s: no model uses this converted folder", orphan)
        return orphans

    # ---- starting -----------------------------------------------------------------------------------------
    def upload_folder(self) -> Path:
        """A fresh folder (in the data dir's temp space, cleared at start-up) for an upload; start() takes it
        over (and removes it) whatever happens."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="import-upload-", dir=self.tmp_dir))

    def copy_upload(self, path: Path) -> Path:
        """An upload folder (see upload_folder) holding a copy of `path` (a file the page's upload left in
        Gradio's cache, which stays Gradio's)."""
        folder = self.upload_folder()
        try:
            with storage_writes(self.tmp_dir):
                shutil.copyfile(path, folder / Path(path).name)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    def start(self, req: ImportRequest, user: str = LOCAL_USER, upload: Path | None = None,
              upload_name: str | None = None) -> Iterator[ImportEvent]:
        """Check the request (every refusal before anything runs), start the import, and return its events."""
        try:
            self.custom_models.check_allowed()
            source_text = self._check_source(req, upload, upload_name)
            model_id = self.custom_models.check_new_id((req.id or "").strip() or self._free_default(req, upload_name))
            if not self._busy.acquire(blocking=False):
                raise Conflict("Another import is running: wait for it to finish (its progress is in GET "
                               "/api/models/import).", code="import_running")
        except BaseException:
            if upload is not None:
                shutil.rmtree(upload, ignore_errors=True)
            raise
        first = ImportEvent(stage="checking", message=f"Importing {source_text}")
        with self._lock:
            del self._imports[:-(KEPT_STATUSES - 1)]
            job = _Import(id=(self._imports[-1].id if self._imports else 0) + 1, req=req, user=user,
                          source_text=source_text, model_id=model_id, started_at=datetime.now(timezone.utc),
                          upload=upload, upload_name=upload_name, last=first)
            self._imports.append(job)
        job.events.put(first)
        try:
            threading.Thread(target=self._run, args=(job,), name=f"model-import-{job.id}", daemon=True).start()
        except BaseException:  # no thread (the process is out of them): nothing will run, say so and let go
            self._busy.release()
            if upload is not None:
                shutil.rmtree(upload, ignore_errors=True)
            self._emit(job, ImportEvent(stage="error", code="import_failed", message="The import could not start."))
        return self._follow(job)

    def _free_default(self, req: ImportRequest, upload_name: str | None) -> str:
        """The id a model gets when none is given: from its folder, repo or archive. A checkpoint file uploaded
        alone has only audiocraft's generic name (state_dict.bin): it gets "audiocraft-import", numbered when taken."""
        name = slug(_default_name(req, upload_name))
        if name not in GENERIC_NAMES:
            return name
        taken = set(self.custom_models.registry.ids())
        names = ("audiocraft-import" if n == 1 else f"audiocraft-import-{n}" for n in range(1, 10_000))
        return next(n for n in names if n not in taken)

    def statuses(self) -> list[ImportStatus]:
        with self._lock:
            jobs = list(self._imports)
        return [ImportStatus(id=j.id, source=j.source_text, started_at=j.started_at, last=j.last,
                             state="running" if not j.last.terminal else j.last.stage) for j in reversed(jobs)]

    def _check_source(self, req: ImportRequest, upload: Path | None, upload_name: str | None) -> str:
        if req.source == "upload":
            if upload is None:
                raise InvalidRequest("Send an upload as multipart/form-data with the archive in the field "
                                     "'archive'.", code="missing_archive")
            return f"the upload {upload_name or 'archive'}"
        if req.source == "hub":
            repo = (req.repo_id or "").strip()
            if not hub_repo_ok(repo):
                raise InvalidRequest("Give the hub repo as org/name.", code="invalid_repo_id")
            revision = (req.revision or "").strip()
            if revision and not hub_revision_ok(revision):
                raise InvalidRequest("Give the revision as a branch, tag or commit hash.", code="invalid_revision")
            return f"hub:{repo}" + (f"@{revision}" if revision else "")
        self._local_checkpoint(req.path)  # refusals now, before the stream starts
        return f"folder:{req.path.strip()}"

    # ---- locating the checkpoint --------------------------------------------------------------------------
    def _local_checkpoint(self, path: str | None) -> tuple[Path, Path | None]:
        """(checkpoint file, compression file or None) named by a request's path, inside an import root."""
        if not (path or "").strip():
            raise InvalidRequest("Give the checkpoint's folder (or file).", code="missing_path")
        raw = Path(path.strip()).expanduser()
        candidates = [raw] if raw.is_absolute() else [root / raw for root in self.import_roots]
        for candidate in candidates:
            if inside_roots(candidate, self.import_roots):
                resolved = candidate.resolve()
                if resolved.is_file():
                    if not resolved.name.lower().endswith(CHECKPOINT_SUFFIXES):
                        raise InvalidRequest(f"{resolved.name} is not an audiocraft checkpoint file (state_dict.bin "
                                             "or checkpoint.th).", code="missing_checkpoint")
                    beside = resolved.parent / COMPRESSION
                    return resolved, (_inside(beside, self.import_roots) if beside.is_file() and beside != resolved
                                      else None)
                if resolved.is_dir():
                    return self._in_folder(resolved, path, self.import_roots)
                raise InvalidRequest(f"There is no folder or file {path[:200]}.", code="folder_not_found")
        roots = ", ".join(str(r) for r in self.import_roots)
        raise InvalidRequest(f"{path[:200]} is outside the folders checkpoints may be imported from ({roots}). Copy "
                             "it into one of them.", code="path_not_allowed",
                             allowed_roots=[str(r) for r in self.import_roots])

    @staticmethod
    def _in_folder(folder: Path, shown: str, roots: list[Path]) -> tuple[Path, Path | None]:
        """The checkpoint (and compression file) in `folder`; every file read must lie inside `roots`."""
        names = {p.name for p in folder.iterdir() if p.is_file()}
        found = next((n for n in CHECKPOINT_NAMES if n in names), None)
        if found is None:
            solver = sorted(n for n in names if n.endswith(".th"))
            found = solver[-1] if len(solver) == 1 else None
        if found is None:
            if "adapter_config.json" in names:
                raise InvalidRequest(f"{shown[:200]} is a PEFT adapter, not a checkpoint. {ADAPTER_NOTE}",
                                     code="peft_adapter")
            if "config.json" in names and any(n.endswith(".safetensors") for n in names):
                raise InvalidRequest(f"{shown[:200]} is already a transformers model: add it with \"Add a model\" "
                                     "(POST /api/models) instead.", code="transformers_model")
            raise InvalidRequest(f"{shown[:200]} holds no audiocraft checkpoint ({' or '.join(CHECKPOINT_NAMES)}).",
                                 code="missing_checkpoint")
        compression = _inside(folder / COMPRESSION, roots) if COMPRESSION in names else None
        return _inside(folder / found, roots), compression

    def _from_upload(self, job: _Import) -> tuple[Path, Path | None]:
        """The uploaded file: a checkpoint itself (torch.save writes a zip of its own) or an archive of one."""
        (upload,) = [p for p in job.upload.iterdir() if p.is_file()]
        name = job.upload_name or upload.name
        if _is_torch_file(upload) or name.lower().endswith(CHECKPOINT_SUFFIXES):
            return upload, None  # the checkpoint itself (a legacy-format one too: safe_load says what it is)
        unpacked = job.upload / "unpacked"

        def keep(parts: tuple[str, ...]) -> bool:
            return parts[-1] in (*CHECKPOINT_NAMES, COMPRESSION, "adapter_config.json") or \
                parts[-1].endswith(".th")

        # weights barely compress: an archive unpacking to much more than its size is a bomb, not a checkpoint
        budget = min(MAX_UPLOAD_BYTES, 2 * upload.stat().st_size + 2**26)
        extract(upload, unpacked, name, ArchiveRules(
            keep=keep, file_cap=lambda _n: budget, budget=budget, max_members=10_000,
            budget_hint="; archive only the checkpoint folder (weights do not compress: an archive that unpacks "
                        "to more than twice its size is refused)"))
        upload.unlink()
        folders = sorted({p.parent for p in unpacked.rglob("*") if p.is_file()})
        if not folders:
            raise InvalidRequest(f"{name} holds no audiocraft checkpoint ({' or '.join(CHECKPOINT_NAMES)}).",
                                 code="missing_checkpoint")
        if len(folders) > 1:
            raise InvalidRequest(f"{name} holds checkpoints in several folders: archive one checkpoint.",
                                 code="invalid_archive")
        return self._in_folder(folders[0].resolve(), name, [unpacked.resolve()])

    def _from_hub(self, job: _Import, dest: Path) -> tuple[Path, Path | None]:
        repo = job.req.repo_id.strip()
        revision = (job.req.revision or "").strip() or None
        listing: dict[str, int] = {}

        def check(sizes: dict[str, int]) -> None:
            listing.update(sizes)
            top = {k for k in sizes if "/" not in k}
            big = [k for k in top if sizes[k] > MAX_UPLOAD_BYTES]
            if big:
                raise TooLarge(f"{repo}'s {big[0]} is {sizes[big[0]] / 2**30:.0f} GB: the studio imports checkpoints "
                               f"of at most {MAX_UPLOAD_BYTES // 2**30} GB.", code="checkpoint_too_large",
                               max_bytes=MAX_UPLOAD_BYTES)
            if not top & set(CHECKPOINT_NAMES):
                if "adapter_config.json" in top:
                    raise InvalidRequest(f"{repo} is a PEFT adapter, not a checkpoint. {ADAPTER_NOTE}",
                                         code="peft_adapter")
                raise InvalidRequest(f"{repo} holds no audiocraft checkpoint ({' or '.join(CHECKPOINT_NAMES)}) at "
                                     "its top level.", code="missing_checkpoint")

        def on_bytes(done: int, total: int) -> None:
            self._emit(job, ImportEvent(stage="downloading", message=f"Downloading {repo}'s checkpoint",
                                        fraction=done / total if total else None, bytes_done=done, bytes_total=total))

        self._emit(job, ImportEvent(stage="downloading", message=f"Downloading {repo}'s checkpoint"))
        folder = hub.download_snapshot(repo, revision, None, self.store.hf_endpoint, on_bytes,
                                       allow_patterns=[CHECKPOINT_NAMES[0], COMPRESSION],
                                       listing_patterns=[CHECKPOINT_NAMES[1], "adapter_config.json"],
                                       check_listing=check, local_dir=dest, storage_folder=dest)
        if not (folder / CHECKPOINT_NAMES[0]).is_file():  # only a solver checkpoint there
            folder = hub.download_snapshot(repo, revision, None, self.store.hf_endpoint, on_bytes,
                                           allow_patterns=[CHECKPOINT_NAMES[1], COMPRESSION], local_dir=dest,
                                           storage_folder=dest)
        return self._in_folder(folder.resolve(), repo, [dest.resolve()])

    # ---- the import itself ----------------------------------------------------------------------------------
    def _run(self, job: _Import) -> None:
        started = time.monotonic()
        final = ImportEvent(stage="error", code="import_failed", message="The import stopped.")
        work: Path | None = None
        dest: Path | None = None
        registered = False
        try:
            req = job.req
            with storage_writes(self.tmp_dir):
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
                work = Path(tempfile.mkdtemp(prefix="import-", dir=self.tmp_dir))
            with storage_writes(self.tmp_dir):
                if req.source == "hub":
                    ckpt_path, comp_path = self._from_hub(job, work / "hub")
                    where = f"hub:{req.repo_id.strip()}@{(req.revision or '').strip() or 'main'}/{ckpt_path.name}"
                elif req.source == "upload":
                    self._emit(job, ImportEvent(stage="checking", message="Unpacking the upload"))
                    ckpt_path, comp_path = self._from_upload(job)
                    where = f"upload:{job.upload_name or 'archive'}" + (
                        f"/{ckpt_path.name}" if ckpt_path.parent != job.upload else "")
                else:
                    ckpt_path, comp_path = self._local_checkpoint(req.path)
                    where = f"folder:{ckpt_path}"
            # what messages call the checkpoint: a file uploaded alone by its sent name (stored as 'upload')
            label = Path(job.upload_name).name if job.upload is not None and job.upload_name and \
                ckpt_path.parent == job.upload else ckpt_path.name
            model_id = job.model_id
            default_name = _default_name(req, job.upload_name)
            if slug(default_name) in GENERIC_NAMES:  # state_dict.bin uploaded alone: named as its id, not 'state_dict'
                default_name = model_id

            def on_hash(done: int, total: int) -> None:
                self._emit(job, ImportEvent(stage="checking", message=f"Reading {label} (sha256)",
                                            fraction=done / total if total else None, bytes_done=done,
                                            bytes_total=total))

            sha = ac.file_sha256(ckpt_path, on_hash)
            self._emit(job, ImportEvent(stage="checking", message="Checking its configuration and tensors"))
            ckpt = ac.read_checkpoint(ckpt_path, label)
            layout, version = ckpt.layout, ckpt.version
            codec = ac.read_compression(comp_path) if comp_path is not None else None
            plan = ac.plan_of(ckpt.config, ckpt.tensors, codec)
            ac.map_lm(ckpt.tensors, plan)  # unknown or LoRA tensors refused before any download
            ac.check_text_encoder(plan, ckpt.tensors, self._reference_config(job, plan.text_encoder))
            t5_dir = self._reference(job, plan.text_encoder, weights=not plan.text_encoder_finetuned)
            codec_dir = self._reference(job, ac.CODEC)

            def on_convert(message: str, fraction: float | None) -> None:
                self._emit(job, ImportEvent(stage="converting", message=message, fraction=fraction))

            dest = self.store.imported_dir / model_id
            if dest.exists() and not any(m.source.folder == str(dest) for m in self.custom_models.registry.models):
                shutil.rmtree(dest)  # an earlier import's folder, its model removed with the files kept
            with storage_writes(self.store.imported_dir):
                converted = ac.convert(ckpt, plan, t5_dir, codec_dir, dest, on_convert)
            del ckpt  # its tensors (memory-mapped or read) are not needed any more
            self._emit(job, ImportEvent(stage="registering", message="Adding it to the studio's models"))
            provenance = {
                "kind": "audiocraft", "checkpoint": where, "sha256": sha,
                "bytes": ckpt_path.stat().st_size, "layout": layout, "audiocraft_version": version,
                "configuration": plan.summary(),
                "text_encoder": _text_encoder_text(plan), "codec": ac.CODEC,
                "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "imported_by": job.user}
            spec = self._spec(model_id, req, plan, converted, default_name, provenance)
            preview = self.custom_models.add_spec(spec, job.user, provenance)
            registered = True
            report = ImportReport(
                model=preview, checkpoint=provenance["checkpoint"], layout=provenance["layout"],
                audiocraft_version=provenance["audiocraft_version"], sha256=sha, configuration=plan.summary(),
                text_encoder=provenance["text_encoder"], codec=ac.CODEC, tensors=converted.tensors,
                weights_bytes=converted.weights_bytes, seconds=round(time.monotonic() - started, 1),
                notes=[*converted.notes, ADAPTER_NOTE])
            log.info("imported %s as %s in %.1f s", job.source_text, model_id, report.seconds)
            final = ImportEvent(stage="ready", message=f"{spec.display_name} was imported as {model_id}: choose "
                                "it in Switch model.", fraction=1.0, report=report)
        except StudioError as exc:
            final = ImportEvent(stage="error", message=exc.message, code=exc.code, details=exc.extra or None)
        except Exception as exc:  # noqa: BLE001 - the import thread must always end with an event
            log.exception("import of %s failed", job.source_text)
            text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            final = ImportEvent(stage="error", code="import_failed", message=f"The import failed: {text}")
        finally:
            if dest is not None and not registered and dest.exists() and \
                    not any(m.source.folder == str(dest) for m in self.custom_models.registry.models):
                shutil.rmtree(dest, ignore_errors=True)
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            if job.upload is not None:
                shutil.rmtree(job.upload, ignore_errors=True)
            self._busy.release()  # before the last event: a client may start the next import as soon as it has it
        self._emit(job, final)

    def _reference_config(self, job: _Import, repo: str) -> dict:
        """A reference checkpoint's config.json (cached, else that file alone downloaded): checked before its
        weights are fetched."""
        folder = hub.cached_files(repo, ["config.json"], self.store.hf_cache_dir)
        if folder is None:
            self._emit(job, ImportEvent(stage="downloading", message=f"Reading {repo}'s configuration"))
            folder = hub.download_snapshot(repo, None, self.store.hf_cache_dir, self.store.hf_endpoint,
                                           lambda _d, _t: None, allow_patterns=["config.json"])
        try:
            return json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InvalidRequest(f"{repo}'s config.json is not readable JSON.", code="invalid_config") from None

    def _reference(self, job: _Import, repo: str, weights: bool = True) -> Path:
        """The official checkpoint the config names (from the HF cache, else downloaded with progress)."""
        patterns = [p for p in REFERENCE_FILES if weights or "safetensors" not in p]
        cached = hub.cached_files(repo, patterns, self.store.hf_cache_dir)
        if cached is not None:
            return cached

        def on_bytes(done: int, total: int) -> None:
            self._emit(job, ImportEvent(stage="downloading", message=f"Downloading {repo}",
                                        fraction=done / total if total else None, bytes_done=done, bytes_total=total))

        self._emit(job, ImportEvent(stage="downloading", message=f"Downloading {repo} (named by the checkpoint)"))
        return hub.download_snapshot(repo, None, self.store.hf_cache_dir, self.store.hf_endpoint, on_bytes,
                                     allow_patterns=patterns)

    @staticmethod
    def _spec(model_id: str, req: ImportRequest, plan: ac.Plan, converted: ac.Converted, default_name: str,
              provenance: dict) -> ModelSpec:
        fields = describe(converted.config, converted.weights_bytes)
        if plan.segment_s < fields["max_duration_s"]:  # audiocraft generates up to its training segment
            fields["max_duration_s"] = plan.segment_s
            fields["window_stride_s"] = None  # the studio's rule: 18 s or 60 % of the window
        # no name: the id when one was given (two imports of folders named alike are then told apart in the lists)
        display = (req.display_name or "").strip() or (req.id or "").strip() or default_name
        description = (req.description or "").strip() or (
            f"Imported from the audiocraft checkpoint {provenance['checkpoint']} (sha256 "
            f"{provenance['sha256'][:12]}).")
        try:
            return ModelSpec.model_validate({
                "id": model_id, "display_name": display[:80], "description": description[:500],
                "backend": "transformers", "source": {"folder": str(converted.folder)},
                "generation": {"top_k": plan.top_k, "top_p": plan.top_p, "temperature": plan.temperature,
                               "guidance_scale": plan.guidance}, **fields})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InvalidRequest(f"The studio cannot describe the converted model: {problems}.",
                                 code="unsupported_config") from None

    # ---- events -------------------------------------------------------------------------------------------
    def _emit(self, job: _Import, event: ImportEvent) -> None:
        job.last = event
        job.events.put(event)

    @staticmethod
    def _follow(job: _Import) -> Iterator[ImportEvent]:
        while True:
            event = job.events.get()
            yield event
            if event.terminal:
                return


def hub_repo_ok(repo: str) -> bool:
    from studio.services.custom_models import _REPO_ID

    return bool(_REPO_ID.fullmatch(repo)) and ".." not in repo and "--" not in repo


def hub_revision_ok(revision: str) -> bool:
    from studio.services.custom_models import _REVISION

    return bool(_REVISION.fullmatch(revision)) and ".." not in revision


def _is_torch_file(path: Path) -> bool:
    """torch.save's format: a zip whose entries are <name>/data.pkl, <name>/data/0, ..."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in zf.namelist()[:64])
    except (zipfile.BadZipFile, OSError):
        return False


def _inside(path: Path, roots: list[Path]) -> Path:
    if not inside_roots(path, roots):  # a symlink out of the root
        raise InvalidRequest(f"{path.name} links outside the folders checkpoints may be read from.",
                             code="path_not_allowed", allowed_roots=[str(r) for r in roots])
    return path.resolve()


def _default_name(req: ImportRequest, upload_name: str | None) -> str:
    """The name a model gets when the request gives none: the checkpoint's folder, repo or archive."""
    if req.source == "hub":
        return (req.repo_id or "").strip().split("/")[-1]
    if req.source == "upload":
        stem = archive_stem(upload_name or "imported")
        return Path(stem).stem if stem.lower().endswith(CHECKPOINT_SUFFIXES) else stem
    path = Path((req.path or "").strip().rstrip("/"))
    return path.parent.name if path.name in CHECKPOINT_NAMES or path.name == COMPRESSION else \
        path.stem if path.suffix.lower() in CHECKPOINT_SUFFIXES else path.name


def _text_encoder_text(plan: ac.Plan) -> str:
    if plan.text_encoder_finetuned:
        return f"{plan.text_encoder}, fine-tuned: its weights from the checkpoint"
    return f"{plan.text_encoder} (the official checkpoint)"
