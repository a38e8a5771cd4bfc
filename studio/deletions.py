"""Deleting a job's files without a half state, even when the studio is killed midway.

The database is the truth: a job's files go only after the commit that removed its record. A marker written before
that commit names the files, so a studio killed between the commit and the removal finishes it at the next start
(datadir.finish_deletes), and one killed before the commit keeps the files its record still names."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MARKER_GLOB = ".delete-job*.json"  # beside the audio, in <data-dir>/outputs/


def write_marker(folder: Path, job_id: int, files: list[str]) -> Path:
    """Record (atomically) that job_id's files are about to lose their record; the marker's path."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".delete-job{job_id}.json"
    part = marker.with_name(marker.name + ".part")  # a half-written marker is a leftover (*.part) at start
    try:
        part.write_text(json.dumps({"job_id": job_id, "files": files}))
        os.replace(part, marker)
    finally:
        part.unlink(missing_ok=True)
    return marker


def read_marker(marker: Path) -> tuple[int, list[str]] | None:
    try:
        data = json.loads(marker.read_text())
        return int(data["job_id"]), [str(f) for f in data["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_files(data_dir: Path, files: list[str]) -> tuple[list[str], bool]:
    """Remove files named relative to the data directory (never anything outside it): (those removed, whether
    every one is gone)."""
    root = Path(data_dir).resolve()
    removed, complete = [], True
    for name in files:
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            continue
        try:
            path.unlink(missing_ok=True)
            removed.append(name)
        except OSError as exc:
            complete = False
            log.warning("could not remove %s (its job is deleted): %s", path, exc)
    return removed, complete
