"""Writes the machine refused (disk full, quota, file-size limit, read-only disk, no permission) as domain errors.

One mapping for every place that writes the studio's data: the database (db/engine.py adds SQLite's words), audio
files, adapter copies and unpacking, upload spools and hub downloads. A person gets 507 disk_full or 503
storage_unavailable naming the folder, never a 500."""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from studio.errors import DiskFull, StorageUnavailable

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # EFBIG: the file-size limit (ulimit -f)
UNWRITABLE_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def disk_full(folder: Path) -> DiskFull:
    return DiskFull(f"The disk holding the studio's data is full: free space in {folder}.", folder=str(folder))


def unwritable(folder: Path, why: str) -> StorageUnavailable:
    return StorageUnavailable(f"The studio cannot write its data in {folder} ({why}): check that the disk is "
                              "writable and this user may write there.", folder=str(folder))


def os_storage_error(exc: BaseException, folder: Path) -> StorageUnavailable | None:
    """The domain error for an OSError of a write into `folder` the machine refused, else None."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno in FULL_ERRNOS:
        return disk_full(folder)
    if exc.errno in UNWRITABLE_ERRNOS and _inside(exc.filename, folder):
        return unwritable(folder, "read-only disk" if exc.errno == errno.EROFS else "permission denied")
    return None


def _inside(filename, folder: Path) -> bool:
    """A permission error is the data folder's only when it names no file (a write) or a file in that folder: an
    unreadable file elsewhere (an import folder) is the request's problem, not the machine's."""
    if filename is None:
        return True
    try:
        return Path(os.fsdecode(filename)).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, ValueError):
        return False


@contextmanager
def storage_writes(folder: Path) -> Iterator[None]:
    """Around writes into `folder`: a refused write leaves as DiskFull / StorageUnavailable (the caller's own
    clean-up, e.g. a temporary directory's, still runs); any other error passes unchanged."""
    try:
        yield
    except OSError as exc:
        mapped = os_storage_error(exc, folder)
        if mapped is None:
            raise
        raise mapped from exc
