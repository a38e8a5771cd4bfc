"""Reading what a person hands the studio: folders inside the import roots, and uploaded archives unpacked with
caps. Shared by the adapter registry (services/adapters.py) and training datasets (services/datasets.py), which
differ only in the files they keep and how large those may be (ArchiveRules).

Archives: refused are absolute paths, '..', links, entries that are not plain files, too many entries; and,
counted in real bytes while unpacking (declared sizes can lie), a file over its limit or an archive that expands
beyond the studio's budget. Only the files a caller keeps are ever written."""
from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from studio.errors import InvalidRequest, TooLarge
from studio.storage import os_storage_error

_COMPRESSED = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ": lzma.open}


def _default_too_large(name: str, limit: int) -> TooLarge:
    return TooLarge(f"{name} is over {size_text(limit)}, the most the studio keeps.", code="file_too_large",
                    file=name, max_bytes=limit)


@dataclass(frozen=True)
class ArchiveRules:
    """What a caller unpacks from an archive and how much of it."""

    keep: Callable[[tuple[str, ...]], bool]  # the entry's path parts (already checked safe): unpack it?
    file_cap: Callable[[str], int]  # the most bytes of one kept file, by its file name
    budget: int  # the most bytes unpacked in all
    max_members: int
    members_hint: str = ""  # appended to the too-many-entries message, e.g. "; an adapter needs a handful"
    budget_hint: str = ""  # appended to the too-large message, e.g. "; archive only the adapter folder"
    too_large: Callable[[str, int], TooLarge] = _default_too_large  # one kept file over its cap
    skipped: Callable[[Path, str], None] | None = None  # called with (dest, entry name) for entries not kept


def size_text(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MB" if nbytes >= 2**20 \
        else f"{nbytes // 1024} KB"


def archive_stem(name: str) -> str:
    """'songs.tar.gz' -> 'songs'."""
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def copy_stream(src: IO[bytes], out: IO[bytes], name: str, limit: int, too_large: Callable[[str, int], TooLarge],
                budget: list[int] | None = None, budget_hint: str = "") -> int:
    """Copy src to out in blocks, counting the real bytes: too_large(name, limit) past `limit`, TooLarge
    archive_too_large past what is left of a shared `budget` [bytes left]."""
    done = 0
    for block in iter(lambda: src.read(2**20), b""):
        done += len(block)
        if done > limit:
            raise too_large(name, limit)
        if budget is not None:
            budget[0] -= len(block)
            if budget[0] < 0:
                raise TooLarge(f"The archive unpacks to more than the studio takes{budget_hint}.",
                               code="archive_too_large")
        out.write(block)
    return done


class _Counted:
    """A read-only stream that refuses to give more than `limit` bytes: bounds what a compressed tar expands to,
    files skipped included."""

    def __init__(self, raw: IO[bytes], limit: int, hint: str):
        self.raw, self.left, self.hint = raw, limit, hint

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size if size is not None and size >= 0 else 2**20)
        self.left -= len(data)
        if self.left < 0:
            raise TooLarge(f"The archive unpacks to more than the studio takes{self.hint}.", code="archive_too_large")
        return data


def extract(archive: Path, dest: Path, display_name: str, rules: ArchiveRules) -> None:
    """Unpack the entries `rules` keeps of a .zip / .tar(.gz, .bz2, .xz) into `dest` (created here), under their
    paths in the archive."""
    dest.mkdir(parents=True)
    budget = [rules.budget]
    with archive.open("rb") as f:
        head = f.read(8)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = zf.infolist()
                _check_count(len(members), rules)
                for m in members:
                    link = (m.external_attr >> 16) & 0o170000 == 0o120000
                    if _keep(m.filename, link, not m.is_dir(), rules):
                        with zf.open(m) as src:
                            _unpack_one(src, dest, m.filename, budget, rules)
                    elif rules.skipped is not None:
                        rules.skipped(dest, m.filename)
        else:
            opener = next((o for magic, o in _COMPRESSED.items() if head.startswith(magic)), None)
            with (opener(archive, "rb") if opener else archive.open("rb")) as raw:
                stream = _Counted(raw, 2 * rules.budget, rules.budget_hint)
                try:
                    tf = tarfile.open(fileobj=stream, mode="r|")  # streaming: one pass, nothing seeks back
                except tarfile.ReadError:
                    raise InvalidRequest(f"{display_name} is not a .zip or .tar.gz archive.",
                                         code="invalid_archive") from None
                with tf:
                    for count, m in enumerate(tf, start=1):
                        _check_count(count, rules)
                        if _keep(m.name, m.issym() or m.islnk(), m.isfile(), rules):
                            _unpack_one(tf.extractfile(m), dest, m.name, budget, rules)
                        elif rules.skipped is not None:
                            rules.skipped(dest, m.name)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        if os_storage_error(exc, dest) is not None:  # the machine's fault, not the archive's: the caller says so
            raise
        raise InvalidRequest(f"{display_name} could not be unpacked: {exc}", code="invalid_archive") from None


def _check_count(count: int, rules: ArchiveRules) -> None:
    if count > rules.max_members:
        raise InvalidRequest(f"The archive has more than {rules.max_members} entries{rules.members_hint}.",
                             code="invalid_archive", max_entries=rules.max_members)


def _keep(name: str, is_link: bool, plain: bool, rules: ArchiveRules) -> bool:
    """Refuse entries that point outside the archive; True for the entries the caller keeps (plain files only)."""
    parts = Path(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or ".." in name.split("\\") or is_link:
        raise InvalidRequest(f"The archive entry {name!r} points outside the archive.", code="invalid_archive")
    if not parts or not rules.keep(parts):
        return False
    if not plain:
        raise InvalidRequest(f"The archive entry {name!r} is not a plain file.", code="invalid_archive")
    return True


def _unpack_one(src: IO[bytes] | None, dest: Path, name: str, budget: list[int], rules: ArchiveRules) -> None:
    target = dest.joinpath(*Path(name).parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        copy_stream(src, out, target.name, rules.file_cap(target.name), rules.too_large, budget, rules.budget_hint)


# ---- folders inside the import roots ---------------------------------------------------------------------------
def inside_roots(path: Path, roots: list[Path]) -> bool:
    """`path` (symlinks resolved) lies inside one of the roots."""
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return any(resolved.is_relative_to(root) for root in roots)


def import_folder(path: str, roots: list[Path], accept: Callable[[Path], bool] = lambda _folder: True) -> Path | None:
    """The folder a request names, resolved, when it lies inside an import root and `accept(folder)` (the caller's
    check of the files it will read: no symlinks out of the roots); InvalidRequest folder_not_found when it is
    inside a root but is not a folder; None when it is not allowed (the caller names the allowed places)."""
    raw = Path(path).expanduser()
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    for candidate in candidates:
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError):
            continue
        if any(resolved.is_relative_to(root) for root in roots):
            try:
                is_dir = resolved.is_dir()
            except OSError:  # e.g. a name longer than the file system allows
                is_dir = False
            if not is_dir:
                raise InvalidRequest(f"There is no folder {path[:200]}.", code="folder_not_found")
            if accept(resolved):
                return resolved
    return None
