"""A write the machine refuses outside the database (issue 8, Security 7): every place that writes the studio's data
(the audio file of a job, an adapter's upload spool, its unpacking, its copy into the store, a hub download) answers
507 disk_full or 503 storage_unavailable naming the folder, never a 500; a job is recorded failed with that message,
and no half-written file stays behind. The database's own refusals are tests/db/test_storage_errors.py."""
from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

import studio.runtime.hub as hub_module
from studio.db.adapters import list_adapters
from studio.db.engine import session_scope
from tests import adapters_factory as factory

ERRNOS = {  # errno -> (status, code, words of the message)
    errno.ENOSPC: (507, "disk_full", "is full"),
    errno.EDQUOT: (507, "disk_full", "is full"),
    errno.EFBIG: (507, "disk_full", "is full"),  # the file-size limit (ulimit -f)
    errno.EROFS: (503, "storage_unavailable", "read-only disk"),
    errno.EACCES: (503, "storage_unavailable", "permission denied"),
}


@pytest.fixture(scope="module")
def loaded(module_studio):
    return module_studio(load=True)


@pytest.fixture(scope="module")
def lora(tmp_path_factory, tiny_folder) -> Path:
    return factory.make_lora(tiny_folder, tmp_path_factory.mktemp("lora") / "lora-a", seed=3)


class _FailingFile(io.BufferedWriter):
    """A file that takes a few bytes, then refuses the rest as the disk would."""

    err: int = errno.ENOSPC

    def write(self, data) -> int:
        super().write(bytes(memoryview(data)[:5]))
        super().flush()
        raise OSError(self.err, os.strerror(self.err))


def fail_writes(monkeypatch, err: int, where) -> list[Path]:
    """Path.open(..., 'wb') of the files `where(path)` selects gives a file that fails with `err` after 5 bytes;
    the opened paths are returned (they must be gone afterwards)."""
    opened: list[Path] = []
    real_open = Path.open

    def open_(self, mode="r", *args, **kwargs):
        if "w" in mode and "b" in mode and where(self):
            opened.append(self)
            raw = real_open(self, "wb", buffering=0)
            failing = _FailingFile(raw)
            failing.err = err
            return failing
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    return opened


def refused(response, err: int, folder: Path) -> dict:
    status, code, words = ERRNOS[err]
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail["code"] == code and words in detail["message"], detail
    assert detail["folder"] == str(folder) and str(folder) in detail["message"]
    return detail


def no_adapter_left(ctx) -> None:
    adapters_dir = ctx.settings.data_dir / "adapters"
    assert not adapters_dir.exists() or list(adapters_dir.iterdir()) == []  # no .incoming-*, no half adapter
    with session_scope(ctx.engine) as session:
        assert list_adapters(session, include_deleted=True) == []


@pytest.mark.parametrize("err", sorted(ERRNOS), ids=errno.errorcode.get)
def test_a_refused_audio_write_fails_the_job_with_the_message(loaded, monkeypatch, err):
    ctx, client = loaded
    outputs = ctx.settings.outputs_dir
    before = set(outputs.rglob("*")) if outputs.exists() else set()
    opened = fail_writes(monkeypatch, err, lambda p: p.name.endswith(".part"))
    r = client.post("/api/generate", json={"prompt": "disk test", "duration_s": 0.2, "seed": 1})
    monkeypatch.undo()
    assert opened, "the audio file was never written"
    detail = refused(r, err, opened[0].parent)
    job = client.get(f"/api/jobs/{detail['job_id']}").json()
    assert job["status"] == "failed" and job["error"] == detail["message"] and job["audio_url"] is None
    assert set(outputs.rglob("*")) == before  # no .part, no half file


def _zip(folder: Path) -> bytes:
    return factory.zip_bytes({f"lora-a/{p.name}": p.read_bytes() for p in folder.iterdir()})


# (place, how the adapter is registered, which written files fail)
PLACES = {
    "upload spool": ("upload", lambda p: p.name == "upload" and p.parent.name.startswith(".incoming-")),
    "archive unpack": ("upload", lambda p: "archive" in p.parts),
    "copy into the store": ("folder", lambda p: p.parent.name == "store"),
}


@pytest.mark.parametrize("err", sorted(ERRNOS), ids=errno.errorcode.get)
@pytest.mark.parametrize("place", list(PLACES))
def test_a_refused_adapter_write_is_507_or_503_and_leaves_nothing(module_studio, lora, monkeypatch, place, err):
    ctx, client = module_studio()
    how, where = PLACES[place]
    imports = ctx.settings.data_dir / "imports"
    if how == "folder" and not (imports / "lora-a").exists():
        shutil.copytree(lora, imports / "lora-a")
    opened = fail_writes(monkeypatch, err, where)
    if how == "upload":
        r = client.post("/api/adapters", files={"archive": ("lora-a.zip", _zip(lora))})
    else:
        r = client.post("/api/adapters", json={"source": "folder", "path": "lora-a"})
    monkeypatch.undo()
    assert opened, f"the {place} never wrote"
    refused(r, err, (ctx.settings.data_dir / "adapters").resolve())
    no_adapter_left(ctx)


@pytest.mark.parametrize("err", sorted(ERRNOS), ids=errno.errorcode.get)
def test_a_refused_hub_download_is_507_or_503_and_leaves_nothing(module_studio, monkeypatch, err):
    """The hub's own writes (huggingface_hub, not Path.open): a download that half-writes a file, then fails."""
    ctx, client = module_studio()

    def partial_download(repo_id, *args, local_dir=None, dry_run=False, **kwargs):
        if dry_run:  # the listing: a small adapter
            return [SimpleNamespace(filename=name, file_size=100, will_download=True)
                    for name in ("adapter_config.json", "adapter_model.safetensors")]
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(hub_module, "snapshot_download", partial_download)
    r = client.post("/api/adapters", json={"source": "hub", "repo_id": "test-org/keys-lora"})
    monkeypatch.undo()
    refused(r, err, (ctx.settings.data_dir / "adapters").resolve())  # not the temporary folder it wrote in
    no_adapter_left(ctx)


@pytest.mark.parametrize("err", sorted(ERRNOS), ids=errno.errorcode.get)
def test_a_refused_model_build_says_so_in_the_switch(module_studio, monkeypatch, err):
    """Building the built-in model on first use writes under models/: the switch's error names the disk problem."""
    import studio.runtime.store as store_module

    ctx, _client = module_studio()

    def build(folder):
        raise OSError(err, os.strerror(err))

    monkeypatch.setitem(store_module.BUILDERS, "studio-tiny", build)
    final = ctx.manager.switch_and_wait("studio-tiny")
    assert final.stage == "error" and ERRNOS[err][2] in final.message, final.message
    assert str(ctx.settings.data_dir / "models") in final.message
