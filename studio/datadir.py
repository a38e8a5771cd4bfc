"""The data directory at start-up: a folder this user can write, emptied of the temporary files a killed studio
left behind (uploads being received, archives being unpacked, a tiny model being built, audio being written)."""
from __future__ import annotations

import errno
import logging
import shutil
import tempfile
from pathlib import Path

from studio.config import Settings
from studio.errors import CannotStart

log = logging.getLogger(__name__)


def open_data_dir(settings: Settings) -> None:
    """Create the data directory and its tmp/ folder and prove a file can be written there, or refuse to start."""
    folder = settings.data_dir
    fix = "give this user write access to it, or start with another --data-dir"
    try:
        settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.tmp_dir, prefix="write-check-") as probe:
            probe.write(b"ok")
            probe.flush()
    except (FileExistsError, NotADirectoryError):
        raise CannotStart(f"the data directory {folder} (or a folder in it) is a file, not a folder: start with "
                          "another --data-dir.") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # EFBIG: the file-size limit
            raise CannotStart(f"the disk holding the data directory {folder} is full: free space there, or start "
                              "with another --data-dir.") from None
        raise CannotStart(f"the data directory {folder} is not writable ({exc.strerror}): {fix}.") from None


def leftovers(settings: Settings) -> list[Path]:
    """The temporary files and folders a studio killed mid-operation leaves behind in the data directory."""
    found = sorted(settings.tmp_dir.iterdir()) if settings.tmp_dir.is_dir() else []
    found += sorted(settings.adapters_dir.glob(".incoming-*"))  # an adapter registration in progress
    found += sorted(settings.models_dir.glob(".tiny-*"))  # studio-tiny being built (studio/runtime/tiny.py)
    found += sorted(settings.outputs_dir.rglob("*.part"))  # audio being written (services/audio_out.py)
    return found


def remove_leftovers(settings: Settings) -> list[Path]:
    """Remove what leftovers() finds (at start-up, before anything new is written); the paths removed."""
    removed = []
    for path in leftovers(settings):
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError as exc:  # noqa: PERF203 - one stuck file must not stop the start; say which
            log.warning("could not remove the leftover %s: %s", path, exc)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted studio: %s", len(removed),
                 ", ".join(str(p) for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    return removed
