"""Adapter registration within bounds: archive bombs and lying sizes, upload and metadata caps (Security 4 and 5),
identical adapters (bug 9), hub errors as statuses the README lists (bug 7).

Refusals share one studio per module (a refusal records nothing and leaves nothing in adapters/); the limits are
lowered with monkeypatch so that a bomb is megabytes, not gigabytes.
"""
from __future__ import annotations

import io
import json
import struct
import tempfile
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import studio.api.adapters as adapters_api
import studio.services.adapters as adapters_service
from studio.config import Settings
from studio.context import build_context
from studio.db.adapters import list_adapters
from studio.db.engine import session_scope
from studio.registry import parse_registry
from studio.server import build_api
from tests import adapters_factory as factory
from tests.conftest import registry_dict

MB = 2**20


@pytest.fixture(scope="module")
def lora(tmp_path_factory, tiny_folder) -> Path:
    return factory.make_lora(tiny_folder, tmp_path_factory.mktemp("lora") / "lora-a", seed=1)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_folder):
    """(client, ctx): a studio with no model loaded (registration checks against the base's skeleton)."""
    import shutil

    data_dir = tmp_path_factory.mktemp("limits") / "data"
    shutil.copytree(tiny_folder, data_dir / "models" / "studio-tiny")
    settings = Settings(data_dir=data_dir, load_at_start=False, device="cpu", host="0.0.0.0",
                        hf_cache_dir=data_dir.parent / "hf-cache")
    ctx = build_context(settings, parse_registry(registry_dict()))
    with TestClient(build_api(ctx, load_model=False)) as client:
        yield client, ctx
    ctx.engine.dispose()


@pytest.fixture
def small_limits(monkeypatch, tmp_path):
    """Weights up to 1 MB, uploads up to 3 MB; Python's temp dir is an empty folder the test can watch."""
    monkeypatch.setattr(adapters_service, "MAX_WEIGHTS_BYTES", 1 * MB)
    monkeypatch.setattr(adapters_service, "MAX_UPLOAD_BYTES", 3 * MB)
    monkeypatch.setattr(adapters_api, "MAX_UPLOAD_BYTES", 3 * MB)
    watched = tmp_path / "tmp"
    watched.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(watched))
    return watched


def entries(folder: Path, prefix: str = "lora-a/", **replace: bytes) -> dict[str, bytes]:
    files = {prefix + p.name: p.read_bytes() for p in folder.iterdir()}
    files.update({prefix + k.replace("__", "."): v for k, v in replace.items()})
    return files


def lying_zip(files: dict[str, bytes], member: str, declared: int) -> bytes:
    """A zip whose `member` declares `declared` bytes unpacked (local header and central directory) while it
    really holds more."""
    data = bytearray(factory.zip_bytes(files))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo(member)
    struct.pack_into("<I", data, info.header_offset + 22, declared)  # local header: uncompressed size
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) != -1:  # central directory entry of that member
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46:pos + 46 + name_len].decode() == member:
            struct.pack_into("<I", data, pos + 24, declared)
        pos += 4
    return bytes(data)


def zeros(n: int) -> bytes:
    return b"\0" * n


def padded_config(folder: Path, pad_bytes: int) -> bytes:
    config = json.loads((folder / "adapter_config.json").read_text())
    return json.dumps({**config, "padding": "x" * pad_bytes}).encode()


def detail(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["detail"]
    assert body["code"] == code and body["message"], body
    return body


def nothing_left(ctx) -> None:
    adapters_dir = ctx.settings.data_dir / "adapters"
    assert not adapters_dir.exists() or list(adapters_dir.iterdir()) == []  # no .incoming-*, no half adapter
    with session_scope(ctx.engine) as session:
        assert list_adapters(session, include_deleted=True) == []


# (case, file name, builder(lora folder) -> archive bytes, status, code)
BOMBS = [
    ("zip bomb: weights unpack past the limit", "bomb.zip",
     lambda f: factory.zip_bytes(entries(f, adapter_model__safetensors=zeros(8 * MB))), 413, "weights_too_large"),
    ("tar.gz bomb: weights unpack past the limit", "bomb.tar.gz",
     lambda f: factory.tar_gz_bytes(entries(f, adapter_model__safetensors=zeros(8 * MB))), 413, "weights_too_large"),
    ("zip: 100 KB of padding in adapter_config.json", "padded.zip",
     lambda f: factory.zip_bytes(entries(f, adapter_config__json=padded_config(f, 100_000))), 413, "metadata_too_large"),
    ("tar.gz: 100 KB of padding in adapter_config.json", "padded.tar.gz",
     lambda f: factory.tar_gz_bytes(entries(f, adapter_config__json=padded_config(f, 100_000))), 413, "metadata_too_large"),
    ("zip: README.md past its limit", "readme.zip",
     lambda f: factory.zip_bytes(entries(f, README__md=zeros(300_000))), 413, "metadata_too_large"),
    ("zip: provenance past its limit", "prov.zip",
     lambda f: factory.zip_bytes(entries(f, training_provenance__json=b'{"x": "' + b"y" * 600_000 + b'"}')), 413,
     "metadata_too_large"),
    ("zip: each copy under the limit, all together over", "copies.zip",
     lambda f: factory.zip_bytes({**entries(f), **{f"c{i}/adapter_model.safetensors": zeros(900_000) for i in range(3)}}),
     413, "archive_too_large"),
    ("tar.gz: a huge file that is not kept still counts while unpacking", "junk.tar.gz",
     lambda f: factory.tar_gz_bytes({**entries(f), "lora-a/optimizer.pt.zeros": zeros(6 * MB)}), 413, "archive_too_large"),
    ("zip: declares 100 bytes, holds 2 MB", "liar.zip",
     lambda f: lying_zip(entries(f, adapter_model__safetensors=zeros(2 * MB)), "lora-a/adapter_model.safetensors",
                         100), 400, "invalid_archive"),
    ("zip: too many entries", "many.zip",
     lambda f: factory.zip_bytes({**entries(f), **{f"junk/{i}.txt": b"" for i in range(250)}}), 400, "invalid_archive"),
    ("upload past the upload limit", "big.zip",
     lambda f: factory.zip_bytes(entries(f)) + b"\0" * (4 * MB), 413, "upload_too_large"),
]


@pytest.mark.parametrize("case, filename, build, status, code", BOMBS, ids=[c[0] for c in BOMBS])
def test_bombs_and_oversized_archives_are_refused(studio, lora, small_limits, case, filename, build, status, code):
    client, ctx = studio
    r = client.post("/api/adapters", files={"archive": (filename, build(lora), "application/octet-stream")})
    detail(r, status, code)
    nothing_left(ctx)
    assert list(small_limits.iterdir()) == []  # the upload never went through the shared temp dir


def test_a_declared_length_over_the_limit_is_refused_before_reading(studio, small_limits):
    client, ctx = studio
    r = client.post("/api/adapters", content=b"--x\r\n", headers={
        "content-type": "multipart/form-data; boundary=x", "content-length": str(10 * MB)})
    detail(r, 413, "upload_too_large")
    nothing_left(ctx)


OVERSIZED_BODIES = [
    # (case, extra JSON fields)
    ("training_config over 64 KB", {"training_config": {"notes": "x" * 70_000}}),
    ("training_metrics over 256 KB", {"training_metrics": {"loss": [0.123456789] * 30_000}}),
    ("training_dataset over 500 characters", {"training_dataset": "d" * 501}),
]


@pytest.mark.parametrize("case, fields", OVERSIZED_BODIES, ids=[c[0] for c in OVERSIZED_BODIES])
def test_oversized_metadata_in_the_body_is_refused(studio, case, fields):
    client, ctx = studio
    r = client.post("/api/adapters", json={"source": "folder", "path": "anything", **fields})
    body = detail(r, 422, "invalid_body")
    assert next(iter(fields)) in body["message"]
    nothing_left(ctx)


def test_unknown_config_keys_are_dropped_and_listings_stay_small(client, ctx, lora, tmp_path):
    archive = factory.zip_bytes(entries(lora, adapter_config__json=padded_config(lora, 30_000)))
    r = client.post("/api/adapters", files={"archive": ("padded.zip", archive)})
    assert r.status_code == 201, r.text
    body = r.json()
    assert "padding" not in body["lora_config"] and body["lora_config"]["peft_type"] == "LORA"
    stored = ctx.settings.data_dir / next(iter(
        p for p in (ctx.settings.data_dir / "adapters").iterdir())) / "adapter_config.json"
    assert "padding" not in json.loads(stored.read_text())  # PEFT loads the kept file
    listing = client.get("/api/adapters")
    assert len(listing.content) < 2000 and "lora_config" not in listing.json()[0]
    assert client.post("/api/generate", json={"prompt": "x", "duration_s": 0.5, "seed": 1,
                                              "adapter_id": body["id"]}).status_code == 200


def test_identical_adapters_are_refused_unless_asked_for(client, ctx, lora):
    archive = factory.zip_bytes(entries(lora))
    first = client.post("/api/adapters", files={"archive": ("lofi.zip", archive)}, data={"name": "lofi"}).json()
    again = detail(client.post("/api/adapters", files={"archive": ("lofi.zip", archive)}), 409, "identical_adapter")
    assert (again["existing_id"], again["existing_label"]) == (first["id"], "lofi v1")
    assert "lofi v1" in again["message"] and "anyway" in again["message"]
    # the same files under another archive (or folder) name are still the same adapter
    other = factory.tar_gz_bytes(entries(lora, prefix="renamed/"))
    detail(client.post("/api/adapters", files={"archive": ("renamed.tar.gz", other)}), 409, "identical_adapter")
    forced = client.post("/api/adapters", files={"archive": ("lofi.zip", archive)},
                         data={"name": "lofi", "allow_duplicate": "true"})
    assert forced.status_code == 201 and forced.json()["label"] == "lofi v2"
    assert len(list((ctx.settings.data_dir / "adapters").iterdir())) == 2


@pytest.mark.parametrize("endpoint, status, code", [
    ("http://127.0.0.1:9", 503, "hub_unreachable"),  # nothing listens on the discard port
])
def test_hub_unreachable_is_not_a_500(make_ctx, endpoint, status, code):
    ctx = make_ctx(hf_endpoint=endpoint, host="0.0.0.0")
    with TestClient(build_api(ctx, load_model=False)) as client:
        r = client.post("/api/adapters", json={"source": "hub", "repo_id": "test-org/keys-lora"})
    body = detail(r, status, code)
    assert "cannot be reached" in body["message"]
    nothing_left(ctx)


def test_hub_repo_not_found_is_a_404(make_ctx):
    from tests.fakehub import serve_repos

    with serve_repos({}) as hub:
        ctx = make_ctx(hf_endpoint=hub.url, host="0.0.0.0")
        with TestClient(build_api(ctx, load_model=False)) as client:
            r = client.post("/api/adapters", json={"source": "hub", "repo_id": "test-org/missing-lora"})
    detail(r, 404, "repo_not_found")
    nothing_left(ctx)


def test_hub_files_over_their_limits_are_refused_before_downloading(make_ctx, lora):
    from tests.fakehub import serve_repos

    files = {"adapter_config.json": padded_config(lora, 100_000),
             "adapter_model.safetensors": lora / "adapter_model.safetensors"}
    with serve_repos({"test-org/padded-lora": files}) as hub:
        ctx = make_ctx(hf_endpoint=hub.url, host="0.0.0.0")
        with TestClient(build_api(ctx, load_model=False)) as client:
            r = client.post("/api/adapters", json={"source": "hub", "repo_id": "test-org/padded-lora"})
        body = detail(r, 413, "metadata_too_large")
        assert body["file"] == "adapter_config.json"
        assert hub.gets("adapter_config.json") == []  # refused from the listing: nothing downloaded
    nothing_left(ctx)
