"""The studio's storage at start-up: the registry, a data directory this user can write, a usable database, and the
work a killed studio left open closed (jobs, temporary files of uploads, unpacked archives, a tiny model being built,
audio being written). Light on purpose (no torch, no gradio): app.py runs it first, so a studio that cannot start
says so in a second."""
from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from studio.config import Settings
from studio.db.datasets import live_folders
from studio.db.engine import make_engine, session_scope
from studio.db.jobs import get_job
from studio.db.recovery import close_interrupted_jobs
from studio.deletions import MARKER_GLOB, read_marker, remove_files
from studio.errors import CannotStart
from studio.registry import Registry, load_registry

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
    found += sorted((settings.data_dir / "datasets").glob(".incoming-*"))  # a dataset being prepared
    found += sorted(settings.models_dir.glob(".tiny-*"))  # studio-tiny being built (studio/runtime/tiny.py)
    found += sorted((settings.models_dir / "imported").glob(".import-*"))  # a conversion (runtime/audiocraft.py)
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
        log.info("removed %d temporary file(s) of an earlier run: %s", len(removed),
                 ", ".join(str(p) for p in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    return removed


@dataclass(frozen=True)
class Storage:
    registry: Registry
    engine: object
    lock: object = None  # the open lock file: held (never closed) while this studio runs
    studio_id: str | None = None  # this studio's id (studio_id()): the runner of the jobs and runs it accepts


def studio_id(settings: Settings) -> str:
    """This studio's stable id, kept in <data-dir>/studio.id (made at its first start). Studios sharing one
    PostgreSQL database each have their own data directory, hence their own id: a job records the studio that
    accepted it (Job.runner), and only that studio runs it, interrupts it or takes it up after a restart."""
    path = settings.data_dir / "studio.id"
    try:
        found = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        found = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise CannotStart(f"cannot read {path} ({exc}): remove it (a new id is made) or fix its permissions.") \
            from None
    if found:
        return found
    new = uuid.uuid4().hex
    tmp = path.with_name(f".studio.id-{os.getpid()}")
    try:
        tmp.write_text(new + "\n", encoding="utf-8")
        os.replace(tmp, path)  # whole or absent: a kill never leaves half an id
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CannotStart(f"cannot write {path} ({exc.strerror}): give this user write access to "
                          f"{settings.data_dir}, or start with another --data-dir.") from None
    return new


def lock_data_dir(settings: Settings):
    """Claim the data directory for this process, or refuse: a second studio on the same data would close the
    first one's running jobs and delete its uploads as "interrupted". A POSIX record lock belongs to the process
    and the kernel drops it when the process dies, even by SIGKILL: a killed studio never blocks the next start.
    (Several contexts in one process, as tests build them, share the claim.)"""
    try:
        import fcntl
    except ImportError:  # not POSIX: no claim
        return None
    path = settings.data_dir / "studio.lock"
    handle = open(path, "a+")  # noqa: SIM115 - kept open for the life of the process: closing it drops the lock
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise CannotStart(f"another Text2Song Studio (process {owner}) is using the data directory "
                          f"{settings.data_dir}: stop it, or start this one with another --data-dir.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def open_storage(settings: Settings, registry: Registry | None = None) -> Storage:
    """Everything build_context needs from disk, or a StudioError (CannotStart, RegistryError, NotFound for an
    unknown --model) saying in one line what is wrong and how to fix it."""
    registry = registry or load_registry(settings.registry_path)
    # an unknown --model fails at start-up, naming the known ones; a custom model's id (in the database) is known
    # once the database is open
    custom_model = settings.model is not None and settings.model not in registry.ids()
    if settings.eval_model:
        registry.evaluation_model(settings.eval_model)  # the same for --eval-model
    open_data_dir(settings)
    lock = lock_data_dir(settings)
    runner = studio_id(settings)
    engine = make_engine(settings.engine_url)
    try:
        if custom_model:
            _check_custom_model(engine, registry, settings.model)
        recover_interrupted_work(settings, engine, runner)
    except Exception:
        engine.dispose()
        raise
    return Storage(registry, engine, lock, runner)


def recover_interrupted_work(settings: Settings, engine, runner: str | None = None) -> list[int]:
    """A studio killed mid-operation (kill -9, power cut) left jobs open and temporary files behind: no studio
    runs them now, so record its running jobs as interrupted (queued ones stay queued: the queue runs them
    again) and remove the files. runner: this studio's id; the jobs other studios sharing the database run are
    theirs. Returns the ids of the jobs interrupted."""
    with session_scope(engine) as session:
        closed = close_interrupted_jobs(session, runner)
    if closed:
        log.warning("%d job(s) were interrupted when the studio last stopped: %s", len(closed),
                    ", ".join(map(str, closed)))
    remove_leftovers(settings)
    finish_deletes(settings, engine)
    remove_orphan_datasets(settings, engine)
    return closed


def finish_deletes(settings: Settings, engine) -> None:
    """Job deletions a kill interrupted (studio/deletions.py): the files of a job whose record is gone are removed;
    a job still recorded (killed before the commit) keeps its files."""
    for marker in sorted(settings.outputs_dir.glob(MARKER_GLOB)) if settings.outputs_dir.is_dir() else []:
        found = read_marker(marker)
        if found is not None:
            job_id, files = found
            with session_scope(engine) as session:
                gone = get_job(session, job_id) is None
            if gone and not remove_files(settings.data_dir, files)[1]:
                continue  # tried again at the next start
        marker.unlink(missing_ok=True)


def remove_orphan_datasets(settings: Settings, engine) -> list[Path]:
    """Dataset folders no live record names: a dataset deleted (record first, then files) or created (files first,
    then record) by a studio killed in between. Nothing else writes there at start-up."""
    folder = settings.data_dir / "datasets"
    if not folder.is_dir():
        return []
    with session_scope(engine) as session:
        live = live_folders(session)
    removed = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or f"datasets/{entry.name}" in live or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            shutil.rmtree(entry)
            removed.append(entry)
        except OSError as exc:  # tried again at the next start
            log.warning("could not remove the folder of a deleted dataset %s: %s", entry, exc)
    if removed:
        log.info("removed %d folder(s) of deleted or unfinished datasets", len(removed))
    return removed


def _check_custom_model(engine, registry: Registry, model_id: str) -> None:
    """--model names a model added in the studio (stored in the database), or start-up fails naming the known ones."""
    from studio.db.custom_models import get_custom_model

    with session_scope(engine) as session:
        if get_custom_model(session, model_id) is None:
            registry.get(model_id)  # NotFound naming registry.yaml's models
