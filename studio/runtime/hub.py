"""Hub models: find them in the normal Hugging Face cache, or download them with byte-level progress."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from tqdm.auto import tqdm

from studio.errors import OperationFailed

# Only what transformers needs, and only safetensors weights: the repos also carry audiocraft's pickled
# .bin checkpoints, which we never download nor unpickle.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]

ByteProgress = Callable[[int, int], None]  # (bytes_done, bytes_total)


def cached_snapshot(repo_id: str, revision: str | None, cache_dir: Path | None) -> Path | None:
    """The complete cached snapshot of a repo, or None. Never touches the network."""
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True,
                                   allow_patterns=ALLOW_PATTERNS)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    folder = Path(folder)
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    return None


def _progress_tqdm(on_bytes: ByteProgress, min_interval: float = 0.1) -> type[tqdm]:
    """A tqdm class that reports the hub's byte bars to `on_bytes` instead of printing.

    snapshot_download drives a "Downloading bytes" bar (network), a "Reconstructing" bar (bytes written,
    the one HTTP downloads update) and a per-file count; totals grow as files start, so `total` is read on
    every update. Reports are throttled to one per `min_interval` seconds.
    """
    lock = threading.Lock()
    last = {"t": 0.0}

    class ProgressTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
            super().__init__(*args, **kwargs)
            self._is_bytes = self.unit == "B" and str(self.desc).startswith("Reconstruct")

        def update(self, n=1):
            result = super().update(n)
            if self._is_bytes:
                now = time.monotonic()
                with lock:
                    done = now - last["t"] >= min_interval or (self.total and self.n >= self.total)
                    if done:
                        last["t"] = now
                if done:
                    on_bytes(int(self.n), int(self.total or 0))
            return result

        def close(self):
            fp = self.fp
            super().close()
            try:
                fp.close()
            except Exception:  # noqa: BLE001 - a devnull handle; nothing to report
                pass

    return ProgressTqdm


def download_snapshot(repo_id: str, revision: str | None, cache_dir: Path | None, endpoint: str | None,
                      on_bytes: ByteProgress) -> Path:
    """Download (or resume) a repo's transformers files into the HF cache and return the snapshot folder."""
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, endpoint=endpoint,
                                   allow_patterns=ALLOW_PATTERNS, tqdm_class=_progress_tqdm(on_bytes))
    except GatedRepoError:
        raise OperationFailed(f"{repo_id} is gated: accept its licence on the hub and log in (hf auth login)",
                              code="gated_repo") from None
    except RepositoryNotFoundError:
        raise OperationFailed(f"repository {repo_id} was not found on the hub", code="repo_not_found") from None
    except RevisionNotFoundError:
        raise OperationFailed(f"revision {revision!r} of {repo_id} was not found on the hub",
                              code="revision_not_found") from None
    except LocalEntryNotFoundError:
        raise OperationFailed("the Hugging Face Hub cannot be reached (is this machine offline?)",
                              code="hub_unreachable") from None
    except HfHubHTTPError as exc:
        raise OperationFailed(f"the hub answered {exc.response.status_code}", code="hub_error") from None
    except OSError as exc:
        raise OperationFailed(f"could not write the download: {exc.strerror or exc}", code="disk_error") from None
    return Path(folder)
