"""Where model weights live on disk: built-in models under <data-dir>/models, hub models in the HF cache."""
from __future__ import annotations

import shutil
from pathlib import Path

from studio.errors import NotFound
from studio.registry import EvaluationModelSpec, ModelSpec
from studio.runtime import hub
from studio.runtime.clap import build_tiny_clap
from studio.runtime.tiny import build_tiny_melody_model, build_tiny_model, build_tiny_stereo_model
from studio.storage import storage_writes

BUILDERS = {"studio-tiny": build_tiny_model, "studio-tiny-stereo": build_tiny_stereo_model,
            "studio-tiny-melody": build_tiny_melody_model,
            "studio-tiny-clap": build_tiny_clap}
AnySpec = ModelSpec | EvaluationModelSpec  # generation and evaluation models are stored alike


class ModelStore:
    def __init__(self, models_dir: Path, hf_cache_dir: Path | None = None, hf_endpoint: str | None = None):
        self.models_dir = Path(models_dir)
        self.hf_cache_dir = hf_cache_dir
        self.hf_endpoint = hf_endpoint

    def available(self, spec: AnySpec) -> bool:
        """Usable without a download (built-in models are built locally on first use)."""
        return spec.is_builtin or self.local_path(spec) is not None

    def local_path(self, spec: AnySpec) -> Path | None:
        if spec.is_builtin:
            folder = self.models_dir / spec.source.builtin
            return folder if (folder / "config.json").is_file() else None
        if getattr(spec.source, "folder", None) is not None:  # a custom model used where it is
            folder = Path(spec.source.folder)
            return folder if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) else None
        return hub.cached_snapshot(spec.source.hub, spec.source.revision, self.hf_cache_dir)

    def fetch(self, spec: AnySpec, on_bytes: hub.ByteProgress) -> Path:
        """A local folder with the model, building or downloading it if needed."""
        if spec.is_builtin:
            with storage_writes(self.models_dir):  # a full or read-only disk is said as such, naming the folder
                return BUILDERS[spec.source.builtin](self.models_dir / spec.source.builtin)
        found = self.local_path(spec)
        if found is not None:
            return found
        if getattr(spec.source, "folder", None) is not None:
            raise NotFound(f"{spec.source.folder} no longer holds a model (config.json and safetensors weights): "
                           "put it back, or remove this model and add it again.", code="model_folder_missing")
        return hub.download_snapshot(spec.source.hub, spec.source.revision, self.hf_cache_dir, self.hf_endpoint,
                                     on_bytes)

    @property
    def imported_dir(self) -> Path:
        """Where models converted from audiocraft checkpoints are written (the studio's own folders)."""
        return self.models_dir / "imported"

    def is_imported(self, spec: AnySpec) -> bool:
        folder = getattr(spec.source, "folder", None)
        return folder is not None and Path(folder).parent == self.imported_dir

    def delete_files(self, spec: AnySpec) -> int:
        """Delete a hub model's cached files (every cached revision of its repo), or an imported model's converted
        folder; bytes freed. Built-in models and folders a person added are never deleted here: a folder belongs
        to whoever put it there."""
        if self.is_imported(spec):
            folder = Path(spec.source.folder)
            freed = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            with storage_writes(self.imported_dir):
                shutil.rmtree(folder, ignore_errors=True)
            return freed
        if spec.source.hub is None:
            return 0
        return hub.delete_cached_repo(spec.source.hub, self.hf_cache_dir)
