"""Hub models: find them in the normal Hugging Face cache, or download them with byte-level progress."""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx2
from huggingface_hub import constants, snapshot_download
from huggingface_hub.utils import filter_repo_objects
from huggingface_hub.errors import (DryRunError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)
from tqdm.auto import tqdm

from studio.errors import Conflict, NotFound, OperationFailed, Unavailable, UpstreamError
from studio.storage import os_storage_error

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


def cached_files(repo_id: str, allow_patterns: list[str], cache_dir: Path | None) -> Path | None:
    """The cached snapshot of a repo's files matching allow_patterns (at least its config.json, and its
    safetensors weights when asked for), or None. Never touches the network."""
    try:
        folder = Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True,
                                        allow_patterns=allow_patterns))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None
    weights = any(p.endswith(".safetensors") for p in allow_patterns)
    if (folder / "config.json").is_file() and (not weights or any(folder.glob("*.safetensors"))):
        return folder
    return None


def _progress_tqdm(on_bytes: ByteProgress, total: int, min_interval: float = 0.1) -> type[tqdm]:
    """A tqdm class that reports the hub's byte progress to `on_bytes` instead of printing.

    snapshot_download drives a "Downloading bytes" bar (network), a "Reconstructing" bar (bytes written, the one
    plain HTTP downloads update) and a per-file count. Its totals grow as files start, so the percentage would jump
    back: we report against `total`, the size of every file to fetch, known beforehand, and never go backwards.
    Reports are throttled to one per `min_interval` seconds.
    """
    lock = threading.Lock()
    last = {"t": 0.0, "done": -1}

    class ProgressTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
            super().__init__(*args, **kwargs)
            self._is_bytes = self.unit == "B" and str(self.desc).startswith("Reconstruct")

        def update(self, n=1):
            result = super().update(n)
            if self._is_bytes:
                with lock:  # download threads report here concurrently: keep reports ordered
                    grand = max(total, int(self.total or 0))
                    done = min(int(self.n), grand)
                    now = time.monotonic()
                    if done > last["done"] and (now - last["t"] >= min_interval or done >= grand):
                        last["t"], last["done"] = now, done
                        on_bytes(done, grand)
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
                      on_bytes: ByteProgress, *, allow_patterns: list[str] = ALLOW_PATTERNS,
                      local_dir: Path | None = None, listing_patterns: list[str] = (),
                      check_listing: Callable[[dict[str, int]], None] | None = None,
                      storage_folder: Path | None = None) -> Path:
    """Download (or resume) a repo's files matching allow_patterns into the HF cache (or local_dir) and return
    the folder. check_listing first sees the names (and sizes) matching allow_patterns + listing_patterns and may refuse
    the repo (raise) before anything is downloaded. storage_folder: the folder a full or read-only disk is reported
    for (default: local_dir or the cache)."""
    common = dict(revision=revision, cache_dir=cache_dir, endpoint=endpoint, local_dir=local_dir)
    with _hub_errors(repo_id, revision, storage_folder or local_dir or cache_dir or Path(constants.HF_HUB_CACHE)):
        try:  # sizes first, for a steady percentage
            plan = snapshot_download(repo_id, dry_run=True, allow_patterns=[*allow_patterns, *listing_patterns],
                                     **common)
        except DryRunError as exc:  # wraps the real reason (not found, offline, ...)
            raise (exc.__cause__ or exc) from None
        if check_listing is not None:
            check_listing({f.filename: f.file_size or 0 for f in plan})
        wanted = set(filter_repo_objects([f.filename for f in plan], allow_patterns=allow_patterns))
        total = sum(f.file_size or 0 for f in plan if f.will_download and f.filename in wanted)
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns,
                                      tqdm_class=_progress_tqdm(on_bytes, total), **common))


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, folder: Path) -> Iterator[None]:
    """Hub and network failures -> a domain error a person can act on: expected conditions (not found, gated,
    offline, the hub failing, a full or read-only disk under `folder`) get their own 4xx/5xx class, never a 500."""
    try:
        yield
    except GatedRepoError:
        raise Conflict(f"{repo_id} is gated: accept its licence on the hub and log in (hf auth login)",
                       code="gated_repo") from None
    except RepositoryNotFoundError:
        raise NotFound(f"repository {repo_id} was not found on the hub", code="repo_not_found") from None
    except RevisionNotFoundError:
        raise NotFound(f"revision {revision!r} of {repo_id} was not found on the hub",
                       code="revision_not_found") from None
    except (LocalEntryNotFoundError, httpx2.ConnectError, httpx2.TimeoutException):
        raise Unavailable("the Hugging Face Hub cannot be reached (is this machine offline?)",
                          code="hub_unreachable") from None
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        raise UpstreamError(f"the hub answered {status or 'with an error'}", code="hub_error") from None
    except httpx2.TransportError:
        raise Unavailable("the connection to the hub broke during the download; try again (it resumes)",
                          code="hub_unreachable") from None
    except OSError as exc:
        mapped = os_storage_error(exc, folder)
        if mapped is not None:
            raise mapped from exc
        raise OperationFailed(f"could not write the download: {exc.strerror or exc}", code="disk_error") from None


def fetch_config(repo_id: str, revision: str | None, endpoint: str | None, dest: Path,
                 check_listing: Callable[[dict[str, int]], None],
                 listing_patterns: list[str]) -> tuple[Path, dict[str, int]]:
    """Download a repo's config.json alone into `dest` (no weights), after `check_listing` has seen the names and
    sizes of the files matching listing_patterns (and may refuse the repo). (config path, that listing)."""
    seen: dict[str, int] = {}

    def check(sizes: dict[str, int]) -> None:
        seen.update(sizes)
        check_listing(sizes)

    folder = download_snapshot(repo_id, revision, None, endpoint, lambda _done, _total: None,
                               allow_patterns=["config.json"], local_dir=dest, listing_patterns=listing_patterns,
                               check_listing=check, storage_folder=dest)
    return folder / "config.json", seen


def delete_cached_repo(repo_id: str, cache_dir: Path | None) -> int:
    """Delete every cached revision of a model repo from the HF cache; the bytes freed (0 when none is cached)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return 0
    for repo in info.repos:
        if repo.repo_type == "model" and repo.repo_id.lower() == repo_id.lower():
            strategy = info.delete_revisions(*(r.commit_hash for r in repo.revisions))
            strategy.execute()
            return strategy.expected_freed_size
    return 0
