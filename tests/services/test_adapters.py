"""LoRA adapters: registration (folder, archive, hub) and each refusal, compatibility with the loaded model,
lifecycle, listings and version history, and generation with adapters (switching without reloading the base).

Every adapter is a real PEFT checkpoint made by tests/adapters_factory.py on studio-tiny, on a tiny MusicGen with
other shapes, or on a same-shaped tiny MusicGen with other weights; they are built once per test session.
"""
from __future__ import annotations

import json
import re
import shutil
import weakref
from pathlib import Path

import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from studio.config import Settings
from studio.context import build_context
from studio.db.adapters import list_adapters
from studio.db.engine import session_scope
from studio.errors import Incompatible, InvalidRequest, NotFound
from studio.registry import parse_registry
from studio.runtime.adapters import check_structure, inspect_adapter
from studio.services.adapters import AdapterUpdate, RegisterAdapterRequest, adapter_key
from studio.services.generation import GenerateRequest
from tests import adapters_factory as factory
from tests.conftest import registry_dict, rest_client
from tests.fakehub import serve_repos

OTHER = "tiny-other"  # a registry entry for a model shaped like studio-tiny but with other weights
OTHER_MAX_S = 12
HEX_FOLDER = r"adapters/[0-9a-f]{32}"


# ---- adapters, built once ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def loras(tmp_path_factory, tiny_folder) -> dict[str, Path]:
    """Adapter folders by kind. The valid ones say `base_model_name_or_path: <...>/studio-tiny` (PEFT writes the
    base folder's path), which the studio maps onto the registry entry studio-tiny."""
    root = tmp_path_factory.mktemp("loras")
    same_shapes = factory.build_tiny_variant(root / "bases" / "same-shapes-other-weights")  # seed: other weights
    other_shapes = factory.build_tiny_variant(root / "bases" / "hidden-48", hidden_size=factory.VARIANT_HIDDEN)
    not_peft = root / "not-peft"
    not_peft.mkdir()
    (not_peft / "README.md").write_text("# just some weights\n")
    shutil.copyfile(factory.make_lora(tiny_folder, root / "scratch")
                    / "adapter_model.safetensors", not_peft / "adapter_model.safetensors")
    a = factory.make_lora(tiny_folder, root / "lora-a", seed=1)

    def patched(name: str, **config) -> Path:  # lora-a with adapter_config.json fields overwritten
        folder = root / name
        shutil.copytree(a, folder)
        cfg = json.loads((folder / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**cfg, **config}))
        return folder

    return {
        "a": a,
        "b": factory.make_lora(tiny_folder, root / "lora-b", seed=2, r=2, alpha=4),
        "other": factory.make_lora(same_shapes, root / "lora-other", seed=3),
        "not_peft": not_peft,
        "not_lora": factory.make_not_lora(root / "ia3", base_folder=tiny_folder),
        "pickled": factory.make_pickled(root / "pickled", base_folder=tiny_folder),
        "wrong_shapes": factory.make_wrong_shapes(root / "wrong-shapes", variant_folder=other_shapes,
                                                  base_name="studio-tiny"),
        "unmapped": factory.make_unmapped(tiny_folder, root / "unmapped"),
        "unknown_base": factory.make_lora(tiny_folder, root / "unknown-base", base_name="some-org/musicgen-xl"),
        "rank_as_text": patched("rank-as-text", r="four"),
        "no_alpha": patched("no-alpha", lora_alpha=None),
        "no_targets": patched("no-targets", target_modules=None),
        "dora_without_magnitudes": patched("dora-without-magnitudes", use_dora=True),
    }


@pytest.fixture
def ctx(make_ctx):
    """studio-tiny loaded; the registry also has tiny-other; a shared studio (0.0.0.0): import roots only."""
    context = make_ctx(registry_dict(**{OTHER: {"max_duration_s": OTHER_MAX_S}}), host="0.0.0.0")
    assert context.manager.switch_and_wait("studio-tiny").stage == "ready"
    return context


@pytest.fixture(scope="module")
def refusing(make_module_ctx):
    """(REST client, context) like `client` and `ctx`, shared by the module's tables of refusals: each case
    asserts that nothing was recorded or stored, so a case that wrongly accepts fails itself (and the ones after)."""
    context = make_module_ctx(registry_dict(**{OTHER: {"max_duration_s": OTHER_MAX_S}}), host="0.0.0.0")
    assert context.manager.switch_and_wait("studio-tiny").stage == "ready"
    with rest_client(context) as c:
        yield c, context


# ---- helpers ----------------------------------------------------------------------------------------------
def imports(ctx) -> Path:
    folder = ctx.settings.data_dir / "imports"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def put(ctx, source: Path, name: str | None = None) -> str:
    """Copy an adapter folder into the context's default import root; return its name there."""
    name = name or source.name
    shutil.copytree(source, imports(ctx) / name, dirs_exist_ok=True)
    return name


def register(ctx, source: Path, name: str | None = None, **fields):
    return ctx.adapters.register(RegisterAdapterRequest(source="folder", path=put(ctx, source, name), **fields))


def post_folder(client, ctx, source: Path, **fields):
    return client.post("/api/adapters", json={"source": "folder", "path": put(ctx, source), **fields})


def stored(ctx) -> list[Path]:
    """What the adapter store holds (a refused registration leaves nothing, not even its temp folder)."""
    folder = ctx.settings.data_dir / "adapters"
    return sorted(folder.iterdir()) if folder.exists() else []


def recorded(ctx) -> list:
    with session_scope(ctx.engine) as session:
        return list_adapters(session, include_deleted=True)


def loaded_keys(ctx) -> set[str]:
    with ctx.manager.use("test") as model:
        return set(model.adapters)


def samples(path: Path):
    data, _ = sf.read(path, dtype="int16")
    return data


def generate(ctx, adapter_id=None, seed=7):
    return ctx.generation.generate(GenerateRequest(prompt="calm piano", duration_s=0.5, seed=seed,
                                                   adapter_id=adapter_id))


def detail(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()["detail"]
    assert body["code"] == code, body
    assert body["message"]
    return body


def archive_bytes(folder: Path, tmp_path: Path, fmt: str) -> bytes:
    return factory.make_archive(folder, tmp_path / f"{folder.name}.{fmt}", fmt).read_bytes()


# ---- registration -----------------------------------------------------------------------------------------
def _assert_owned_copy(ctx, info, source: Path) -> None:
    record = next(r for r in recorded(ctx) if r.id == info.id)
    assert re.fullmatch(HEX_FOLDER, record.path), record.path  # relative to the data directory
    folder = ctx.settings.data_dir / record.path
    assert stored(ctx) == [folder]
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (folder / name).read_bytes() == (source / name).read_bytes()
    assert info.size_bytes == sum(p.stat().st_size for p in folder.iterdir())


@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_register_from_a_folder_in_the_import_root(ctx, loras, how):
    name = put(ctx, loras["a"])
    path = name if how == "relative" else str(imports(ctx) / name)
    info = ctx.adapters.register(RegisterAdapterRequest(source="folder", path=path, description="keys"))
    assert (info.name, info.version, info.base_model, info.description) == ("lora-a", 1, "studio-tiny", "keys")
    assert info.active and not info.deleted and info.compatible and info.compatibility_note is None
    assert (info.rank, info.alpha, info.usage_count) == (4, 8, 0)
    assert info.base_model_name == "Studio Tiny" and info.base_model_max_duration_s == 30
    assert info.source.startswith("folder:")
    _assert_owned_copy(ctx, info, loras["a"])
    shutil.rmtree(imports(ctx) / name)  # the registry owns its copy: the import folder may go
    assert ctx.adapters.get(info.id).id == info.id


def test_register_from_a_configured_import_root(make_ctx, tmp_path, loras):
    root = tmp_path / "shared-adapters"
    shutil.copytree(loras["a"], root / "team" / "lora-a")
    ctx = make_ctx(import_roots=(root,), host="0.0.0.0")
    info = ctx.adapters.register(RegisterAdapterRequest(source="folder", path="team/lora-a"))
    assert info.name == "lora-a" and info.base_model == "studio-tiny"
    # the default root is not allowed once roots are configured
    put(ctx, loras["b"])
    with pytest.raises(InvalidRequest) as err:
        ctx.adapters.register(RegisterAdapterRequest(source="folder", path=str(imports(ctx) / "lora-b")))
    assert err.value.code == "path_not_allowed" and err.value.extra["allowed_roots"] == [str(root.resolve())]


def test_register_over_rest_from_a_folder(client, ctx, loras):
    r = post_folder(client, ctx, loras["a"], name="Warm Keys", description="lofi keys",
                    training_dataset="my-dataset", training_config={"learning_rate": 1e-4, "r": 4})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["version"], body["base_model"]) == ("Warm Keys", 1, "studio-tiny")
    assert body["training_dataset"] == "my-dataset" and body["training_config"]["learning_rate"] == 1e-4
    assert body["lora_config"]["peft_type"] == "LORA"
    assert client.get(f"/api/adapters/{body['id']}").json() == body


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_register_from_an_uploaded_archive(client, ctx, loras, tmp_path, fmt):
    data = archive_bytes(loras["a"], tmp_path, fmt)
    r = client.post("/api/adapters", files={"archive": (f"lora-a.{fmt}", data, "application/octet-stream")},
                    data={"description": "uploaded", "version": "3"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["name"], body["version"], body["description"]) == ("lora-a", 3, "uploaded")
    assert body["source"] == f"upload:lora-a.{fmt}" and body["compatible"] is True
    _assert_owned_copy(ctx, ctx.adapters.get(body["id"]), loras["a"])


def test_register_from_a_hub_repo(make_ctx, loras):
    files = {name: loras["a"] / name for name in ("adapter_config.json", "adapter_model.safetensors")}
    files.update({"README.md": "# a lora\n", "training_args.bin": b"\x80\x04pickle" * 10})
    with serve_repos({"test-org/keys-lora": files}) as hub:
        ctx = make_ctx(hf_endpoint=hub.url, host="0.0.0.0")
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
        with rest_client(ctx) as client:
            r = client.post("/api/adapters", json={"source": "hub", "repo_id": "test-org/keys-lora"})
        assert r.status_code == 201, r.text
        assert hub.gets("training_args.bin") == []  # never downloaded, never unpickled
    body = r.json()
    assert (body["name"], body["version"], body["source"]) == ("keys-lora", 1, "hub:test-org/keys-lora")
    _assert_owned_copy(ctx, ctx.adapters.get(body["id"]), loras["a"])
    assert (ctx.settings.data_dir / next(r.path for r in recorded(ctx)) / "README.md").is_file()


# ---- refusals: nothing recorded, nothing left in the adapter store -----------------------------------------
REFUSED_FOLDERS = [
    # (case, adapter kind, extra request fields, status, code)
    ("no adapter_config.json", "not_peft", {}, 400, "not_peft_adapter"),
    ("IA3, not LoRA", "not_lora", {}, 400, "not_lora"),
    ("pickled adapter_model.bin", "pickled", {}, 400, "pickled_weights"),
    ("made on a model with other shapes", "wrong_shapes", {}, 400, "shape_mismatch"),
    ("a key for a module that does not exist", "unmapped", {}, 400, "unmapped_keys"),
    ("base model not in the registry", "unknown_base", {}, 400, "unknown_base_model"),
    ("explicit base model not in the registry", "a", {"base_model": "nope"}, 400, "unknown_base_model"),
    ("explicit base contradicts adapter_config.json", "a", {"base_model": OTHER}, 409, "base_model_conflict"),
    ("empty name", "a", {"name": "  "}, 400, "invalid_name"),
    ("r is not a number", "rank_as_text", {}, 400, "invalid_adapter_config"),
    ("lora_alpha missing", "no_alpha", {}, 400, "invalid_adapter_config"),
    ("no target_modules", "no_targets", {}, 400, "invalid_adapter_config"),
    ("DoRA without its magnitudes", "dora_without_magnitudes", {}, 400, "incomplete_weights"),
]


@pytest.mark.parametrize("case, kind, fields, status, code", REFUSED_FOLDERS, ids=[c[0] for c in REFUSED_FOLDERS])
def test_refused_folders(refusing, loras, case, kind, fields, status, code):
    client, ctx = refusing
    detail(post_folder(client, ctx, loras[kind], **fields), status, code)
    assert recorded(ctx) == [] and stored(ctx) == []
    assert client.get("/api/adapters").json() == []


@pytest.mark.parametrize("kind, code", [("pickled", "pickled_weights"), ("not_lora", "not_lora"),
                                        ("wrong_shapes", "shape_mismatch"), ("unmapped", "unmapped_keys")])
@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_refused_archives(refusing, loras, tmp_path, kind, code, fmt):
    client, ctx = refusing
    data = archive_bytes(loras[kind], tmp_path, fmt)
    detail(client.post("/api/adapters", files={"archive": (f"x.{fmt}", data)}), 400, code)
    assert recorded(ctx) == [] and stored(ctx) == []


def _adapter_entries(folder: Path, prefix: str = "lora-a/") -> dict[str, bytes]:
    return {prefix + p.name: p.read_bytes() for p in folder.iterdir()}


MALICIOUS = [
    # (case, archive name, builder(adapter entries) -> bytes)
    ("zip with ../", "evil.zip", lambda e: factory.zip_bytes({**e, "../escaped.txt": b"pwned"})),
    ("zip with lora/../../", "evil.zip", lambda e: factory.zip_bytes({**e, "lora-a/../../escaped.txt": b"pwned"})),
    ("zip with an absolute path", "evil.zip", lambda e: factory.zip_bytes({**e, "/tmp/escaped.txt": b"pwned"})),
    ("tar.gz with ../", "evil.tar.gz", lambda e: factory.tar_gz_bytes({**e, "../escaped.txt": b"pwned"})),
    ("tar.gz with a symlink out", "evil.tar.gz", lambda e: factory.tar_gz_bytes(e, link=("lora-a/README.md", "/etc/passwd"))),
    ("not an archive", "lora.zip", lambda e: b"this is not a zip file" * 10),
]


@pytest.mark.parametrize("case, filename, build", MALICIOUS, ids=[c[0] for c in MALICIOUS])
def test_malicious_archives_are_refused(refusing, loras, case, filename, build):
    client, ctx = refusing
    data = build(_adapter_entries(loras["a"]))
    detail(client.post("/api/adapters", files={"archive": (filename, data)}), 400, "invalid_archive")
    assert recorded(ctx) == [] and stored(ctx) == []
    data_dir = ctx.settings.data_dir
    assert not list(data_dir.parent.rglob("escaped.txt"))


BAD_BODIES = [
    # (case, raw JSON body, status, code)
    ("not JSON", b"{bad json", 422, "invalid_json"),
    ("empty", b"", 422, "invalid_json"),
    ("null", b"null", 422, "invalid_body"),
    ("unknown source", b'{"source": "ftp", "path": "x"}', 422, "invalid_body"),
    ("misspelt field", b'{"source": "folder", "pth": "x"}', 422, "invalid_body"),
    ("version 0", b'{"source": "folder", "path": "x", "version": 0}', 422, "invalid_body"),
    ("folder without a path", b'{"source": "folder"}', 400, "missing_path"),
    ("folder that does not exist", b'{"source": "folder", "path": "nothing-here"}', 400, "folder_not_found"),
    ("hub without a repo", b'{"source": "hub"}', 400, "invalid_repo_id"),
    ("hub repo climbing", b'{"source": "hub", "repo_id": "../etc"}', 400, "invalid_repo_id"),
    ("hub repo with a path", b'{"source": "hub", "repo_id": "org/name/../x"}', 400, "invalid_repo_id"),
]


@pytest.mark.parametrize("case, raw, status, code", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_registration_bodies(refusing, case, raw, status, code):
    client, ctx = refusing
    imports(ctx)
    r = client.post("/api/adapters", content=raw, headers={"content-type": "application/json"})
    detail(r, status, code)
    assert recorded(ctx) == [] and stored(ctx) == []


def test_upload_without_an_archive(client):
    detail(client.post("/api/adapters", data={"name": "x"}, files={"other": ("a.zip", b"x")}), 400,
           "missing_archive")
    detail(client.post("/api/adapters", json={"source": "upload"}), 400, "missing_archive")


def test_pickled_only_hub_repo_is_refused_before_downloading(make_ctx, loras):
    files = {"adapter_config.json": loras["pickled"] / "adapter_config.json",
             "adapter_model.bin": loras["pickled"] / "adapter_model.bin"}
    with serve_repos({"test-org/pickled-lora": files}) as hub:
        ctx = make_ctx(hf_endpoint=hub.url, host="0.0.0.0")
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
        with rest_client(ctx) as client:
            r = client.post("/api/adapters", json={"source": "hub", "repo_id": "test-org/pickled-lora"})
            detail(r, 400, "pickled_weights")
        assert hub.gets("adapter_model.bin") == []
    assert recorded(ctx) == [] and stored(ctx) == []


def test_duplicate_name_and_version(db_url, client, ctx, loras):
    first = post_folder(client, ctx, loras["a"], name="keys")
    assert first.status_code == 201 and first.json()["version"] == 1
    shutil.copytree(loras["b"], imports(ctx) / "b-again")
    r = client.post("/api/adapters", json={"source": "folder", "path": "b-again", "name": "keys", "version": 1})
    body = detail(r, 409, "version_exists")
    assert body["next_version"] == 2 and "2" in body["message"]
    assert len(recorded(ctx)) == 1 and len(stored(ctx)) == 1
    # without a version: the next free one; a deleted version's number is never reused
    second = client.post("/api/adapters", json={"source": "folder", "path": "b-again", "name": "keys"}).json()
    assert second["version"] == 2
    client.delete(f"/api/adapters/{second['id']}")
    third = client.post("/api/adapters", json={"source": "folder", "path": "b-again", "name": "keys"}).json()
    assert third["version"] == 3
    r = client.post("/api/adapters", json={"source": "folder", "path": "b-again", "name": "keys", "version": 2,
                                           "allow_duplicate": True})
    assert detail(r, 409, "version_exists")["next_version"] == 4


def _outside(ctx, tmp_path, loras) -> str:
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(loras["a"], elsewhere / "lora-a", dirs_exist_ok=True)
    return str(elsewhere / "lora-a")


def _symlinked_folder(ctx, tmp_path, loras) -> str:
    (imports(ctx) / "linked").symlink_to(_outside(ctx, tmp_path, loras), target_is_directory=True)
    return "linked"


def _symlinked_file(ctx, tmp_path, loras) -> str:
    folder = imports(ctx) / "half-linked"
    folder.mkdir()
    shutil.copyfile(loras["a"] / "adapter_config.json", folder / "adapter_config.json")
    (folder / "adapter_model.safetensors").symlink_to(Path(_outside(ctx, tmp_path, loras))
                                                      / "adapter_model.safetensors")
    return "half-linked"


OUTSIDE = [
    # (case, path maker)
    ("absolute path elsewhere", _outside),
    ("relative path climbing out", lambda ctx, tmp_path, loras: _outside(ctx, tmp_path, loras) and
     "../../elsewhere/lora-a"),
    ("symlinked folder inside the root pointing outside", _symlinked_folder),
    ("file symlink inside the root pointing outside", _symlinked_file),
    ("the data directory itself", lambda ctx, tmp_path, loras: str(ctx.settings.data_dir)),
    ("home directory on a shared studio", lambda ctx, tmp_path, loras: "~"),
]


@pytest.mark.parametrize("case, make_path", OUTSIDE, ids=[c[0] for c in OUTSIDE])
def test_paths_outside_the_import_roots_are_refused(client, ctx, loras, tmp_path, case, make_path):
    path = make_path(ctx, tmp_path, loras)
    body = detail(client.post("/api/adapters", json={"source": "folder", "path": path}), 400, "path_not_allowed")
    assert body["allowed_roots"] == [str(imports(ctx).resolve())]
    assert recorded(ctx) == [] and stored(ctx) == []


def test_a_local_studio_also_allows_home(make_ctx):
    local = make_ctx(host="127.0.0.1").settings.allowed_import_roots
    assert Path.home().resolve() in local
    assert Path.home().resolve() not in make_ctx(host="0.0.0.0").settings.allowed_import_roots


# ---- compatibility ----------------------------------------------------------------------------------------
def test_adapter_of_a_same_shaped_model_with_other_weights_is_incompatible(client, ctx, loras):
    a = post_folder(client, ctx, loras["a"]).json()
    r = post_folder(client, ctx, loras["other"], base_model=OTHER)
    assert r.status_code == 201, r.text
    other = r.json()
    assert other["base_model"] == OTHER and other["compatible"] is False
    assert other["compatibility_note"] == f"Requires {OTHER}"
    assert other["base_model_max_duration_s"] == OTHER_MAX_S
    # PEFT alone would load it silently: every tensor fits studio-tiny's modules
    with ctx.manager.use("test") as model:
        check_structure(model.model, inspect_adapter(loras["other"]), "Studio Tiny")
        assert adapter_key(other["id"]) not in model.adapters  # never loaded into a model it does not fit
    listed = {x["id"]: x for x in client.get("/api/adapters").json()}
    assert listed[other["id"]]["compatible"] is False and listed[a["id"]]["compatible"] is True

    r = client.post("/api/generate", json={"prompt": "x", "duration_s": 0.5, "seed": 1, "adapter_id": other["id"]})
    body = detail(r, 409, "adapter_incompatible")
    assert body["required_model"] == OTHER and OTHER in body["message"] and "Studio Tiny" in body["message"]
    assert body["compatible"] == [{"id": a["id"], "name": "lora-a", "version": 1}]
    assert "lora-a v1" in body["message"]
    assert client.get("/api/jobs").json() == []  # refused before any job was recorded


def test_incompatible_without_alternatives_says_so(ctx, loras):
    other = register(ctx, loras["other"], base_model=OTHER)
    with pytest.raises(Incompatible) as err:
        generate(ctx, other.id)
    assert err.value.code == "adapter_incompatible" and err.value.extra["compatible"] == []
    assert "No adapter for Studio Tiny" in err.value.message


def test_compatibility_follows_the_loaded_model(client, ctx, loras):
    a = post_folder(client, ctx, loras["a"]).json()
    ctx.manager.unload()
    body = client.get(f"/api/adapters/{a['id']}").json()
    assert body["compatible"] is False and body["compatibility_note"] == "No model is loaded."
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    assert client.get(f"/api/adapters/{a['id']}").json()["compatible"] is True


# ---- lifecycle --------------------------------------------------------------------------------------------
def _gen(client, adapter_id, seed=1):
    return client.post("/api/generate", json={"prompt": "x", "duration_s": 0.5, "seed": seed,
                                              "adapter_id": adapter_id})


def test_deactivate_and_activate(client, ctx, loras):
    a = post_folder(client, ctx, loras["a"]).json()
    key = adapter_key(a["id"])
    assert key not in loaded_keys(ctx)  # loaded by the first generation that uses it, not before
    assert _gen(client, a["id"]).status_code == 200 and key in loaded_keys(ctx)
    r = client.patch(f"/api/adapters/{a['id']}", json={"active": False})
    assert r.status_code == 200 and r.json()["active"] is False
    assert key not in loaded_keys(ctx)  # deactivation unloads it (when the model is next used)
    assert [x["id"] for x in client.get("/api/adapters", params={"active": False}).json()] == [a["id"]]
    assert client.get("/api/adapters", params={"active": True}).json() == []
    assert detail(_gen(client, a["id"]), 400, "adapter_inactive")["adapter_id"] == a["id"]

    r = client.patch(f"/api/adapters/{a['id']}", json={"active": True})
    assert r.json()["active"] is True
    assert key not in loaded_keys(ctx)  # nothing is loaded ahead of use
    assert _gen(client, a["id"]).status_code == 200 and key in loaded_keys(ctx)


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "tab\tname"], ids=["empty", "blank", "101 chars", "control"])
def test_rename_refused(client, ctx, loras, name):
    a = post_folder(client, ctx, loras["a"]).json()
    detail(client.patch(f"/api/adapters/{a['id']}", json={"name": name}), 400, "invalid_name")
    assert client.get(f"/api/adapters/{a['id']}").json()["name"] == "lora-a"


def test_rename_and_describe(client, ctx, loras):
    a = post_folder(client, ctx, loras["a"]).json()
    r = client.patch(f"/api/adapters/{a['id']}", json={"name": "  Warm Keys  ", "description": "new"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["description"], body["version"]) == ("Warm Keys", "new", 1)
    assert body["updated_at"] > a["updated_at"] and body["created_at"] == a["created_at"]
    long_name = "y" * 100
    assert client.patch(f"/api/adapters/{a['id']}", json={"name": long_name}).json()["name"] == long_name
    detail(client.patch(f"/api/adapters/{a['id']}", json={"colour": "red"}), 422, "invalid_body")


def test_rename_onto_a_name_in_use_is_refused(client, ctx, loras):
    post_folder(client, ctx, loras["a"], name="keys")
    b = post_folder(client, ctx, loras["b"]).json()
    body = detail(client.patch(f"/api/adapters/{b['id']}", json={"name": "keys"}), 409, "name_taken")
    assert body["name"] == "keys" and "every version" in body["message"]
    assert client.get(f"/api/adapters/{b['id']}").json()["name"] == "lora-b"


def test_renaming_moves_every_version_of_the_name(db_url, client, ctx, loras):
    """Renaming v3 of lofi renames lofi: v1..v3 (the deleted v2 too) become lofi-dup v1..v3, never a lone v3."""
    ids = [client.post("/api/adapters", json={"source": "folder", "path": put(ctx, loras[k], f"v{i}"), "name": "lofi",
                                              "allow_duplicate": True}).json()["id"] for i, k in enumerate("aba")]
    client.delete(f"/api/adapters/{ids[1]}")
    r = client.patch(f"/api/adapters/{ids[2]}", json={"name": "lofi-dup"})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["version"], r.json()["label"]) == ("lofi-dup", 3, "lofi-dup v3")
    assert [(x["name"], x["version"]) for x in client.get("/api/adapters").json()] == \
        [("lofi-dup", 1), ("lofi-dup", 3)]
    timeline = client.get("/api/adapters/timeline", params={"name": "lofi-dup"}).json()
    assert [(e["version"], e["status"]) for e in timeline] == [(1, "active"), (2, "deleted"), (3, "active")]
    detail(client.get("/api/adapters/timeline", params={"name": "lofi"}), 404, "adapter_not_found")
    # the old name is free again; a new registration under it starts at v1
    r = client.post("/api/adapters", json={"source": "folder", "path": put(ctx, loras["b"], "v4"), "name": "lofi",
                                           "allow_duplicate": True})
    assert r.json()["version"] == 1


def test_soft_delete(client, ctx, loras):
    a = post_folder(client, ctx, loras["a"], training_metrics={"loss": [0.9, 0.4]}).json()
    job = _gen(client, a["id"]).json()
    assert job["adapter_id"] == a["id"] and job["adapter_label"] == "lora-a v1"
    assert adapter_key(a["id"]) in loaded_keys(ctx)

    r = client.delete(f"/api/adapters/{a['id']}")
    assert r.status_code == 200 and r.json()["deleted"] is True and r.json()["deleted_at"]
    assert adapter_key(a["id"]) not in loaded_keys(ctx)  # deletion unloads it
    assert client.get("/api/adapters").json() == []
    assert client.get("/api/adapters", params={"group_by_name": True}).json() == []
    detail(client.get(f"/api/adapters/{a['id']}"), 404, "adapter_deleted")
    detail(client.patch(f"/api/adapters/{a['id']}", json={"name": "again"}), 404, "adapter_deleted")
    detail(client.delete(f"/api/adapters/{a['id']}"), 404, "adapter_deleted")
    detail(_gen(client, a["id"]), 400, "adapter_deleted")

    old = client.get(f"/api/jobs/{job['job_id']}").json()
    assert old["adapter_id"] == a["id"] and old["adapter_label"] == "Deleted Adapter"
    assert client.get(f"/api/jobs/{job['job_id']}/audio").status_code == 200
    assert [e["status"] for e in client.get("/api/adapters/timeline", params={"name": "lora-a"}).json()] == \
        ["deleted"]
    assert len(stored(ctx)) == 1  # old jobs keep their reference: the record (and its files) stay

    # deleted adapters are listed on request, and restored
    deleted = client.get("/api/adapters", params={"deleted": True}).json()
    assert [(x["id"], x["deleted"]) for x in deleted] == [(a["id"], True)]
    r = client.post(f"/api/adapters/{a['id']}/restore")
    assert r.status_code == 200, r.text
    assert (r.json()["deleted"], r.json()["active"], r.json()["label"]) == (False, True, "lora-a v1")
    assert client.get("/api/adapters", params={"deleted": True}).json() == []
    assert [x["id"] for x in client.get("/api/adapters").json()] == [a["id"]]
    assert _gen(client, a["id"]).status_code == 200
    assert client.get(f"/api/jobs/{job['job_id']}").json()["adapter_label"] == "lora-a v1"
    detail(client.post(f"/api/adapters/{a['id']}/restore"), 409, "adapter_not_deleted")
    detail(client.post("/api/adapters/999/restore"), 404, "adapter_not_found")


UNKNOWN = [
    ("GET", "/api/adapters/999", None),
    ("PATCH", "/api/adapters/999", {"active": False}),
    ("DELETE", "/api/adapters/999", None),
]


@pytest.mark.parametrize("method, url, body", UNKNOWN, ids=[c[0] for c in UNKNOWN])
def test_unknown_adapter_is_404(refusing, method, url, body):
    client, _ = refusing
    assert detail(client.request(method, url, json=body), 404, "adapter_not_found")["adapter_id"] == 999


def test_unknown_adapter_in_generation_and_timeline(client):
    detail(_gen(client, 999), 404, "adapter_not_found")
    detail(client.get("/api/adapters/timeline", params={"name": "nope"}), 404, "adapter_not_found")
    detail(client.get("/api/adapters/timeline"), 422, "invalid_parameter")


# ---- listings (read-only tests share one studio) ----------------------------------------------------------
@pytest.fixture(scope="module")
def shelf(tmp_path_factory, tiny_folder, loras):
    """A studio (studio-tiny loaded) holding lora-a v1 and v2, lora-b (inactive) and lora-other (for tiny-other):
    (client, ids by label). Like the `ctx` fixture, built once for the module."""
    data_dir = tmp_path_factory.mktemp("shelf") / "data"
    shutil.copytree(tiny_folder, data_dir / "models" / "studio-tiny")
    settings = Settings(data_dir=data_dir, load_at_start=False, device="cpu", host="0.0.0.0",
                        hf_cache_dir=data_dir.parent / "hf-cache")
    context = build_context(settings, parse_registry(registry_dict(**{OTHER: {"max_duration_s": OTHER_MAX_S}})))
    assert context.manager.switch_and_wait("studio-tiny").stage == "ready"
    with rest_client(context) as client:
        ids = {"a1": post_folder(client, context, loras["a"]).json()["id"]}
        shutil.copytree(loras["a"], imports(context) / "a-v2")
        ids["a2"] = client.post("/api/adapters", json={"source": "folder", "path": "a-v2", "name": "lora-a",
                                                       "allow_duplicate": True}).json()["id"]
        ids["b"] = post_folder(client, context, loras["b"]).json()["id"]
        client.patch(f"/api/adapters/{ids['b']}", json={"active": False})
        ids["other"] = post_folder(client, context, loras["other"], base_model=OTHER).json()["id"]
        yield client, ids
    context.engine.dispose()


FILTERS = [
    # (query, expected labels in listing order: by name, then creation)
    ({}, ["a1", "a2", "b", "other"]),
    ({"active": True}, ["a1", "a2", "other"]),
    ({"active": False}, ["b"]),
    ({"base_model": OTHER}, ["other"]),
    ({"base_model": "studio-tiny"}, ["a1", "a2", "b"]),
    ({"base_model": "nope"}, []),
    ({"compatible": True}, ["a1", "a2", "b"]),
    ({"compatible": False}, ["other"]),
    ({"compatible": True, "active": True}, ["a1", "a2"]),
]


@pytest.mark.parametrize("query, expected", FILTERS, ids=[json.dumps(q) for q, _ in FILTERS])
def test_listing_filters(shelf, query, expected):
    client, catalogue = shelf
    r = client.get("/api/adapters", params=query)
    assert r.status_code == 200, r.text
    by_id = {v: k for k, v in catalogue.items()}
    assert [by_id[x["id"]] for x in r.json()] == expected


def test_listing_carries_base_model_capabilities(shelf):
    client, catalogue = shelf
    listed = {x["id"]: x for x in client.get("/api/adapters").json()}
    assert (listed[catalogue["a1"]]["base_model_name"], listed[catalogue["a1"]]["base_model_max_duration_s"]) == \
        ("Studio Tiny", 30)
    assert (listed[catalogue["other"]]["base_model_name"], listed[catalogue["other"]]["base_model_max_duration_s"]) \
        == (OTHER, OTHER_MAX_S)
    for x in listed.values():
        assert {"compatible", "compatibility_note", "active", "usage_count", "rank", "label"} <= set(x)
        # large fields stay out of listings (a page refreshes them every 2 s): the detail has them
        assert not {"lora_config", "training_config", "training_metrics", "target_modules"} & set(x)
    full = client.get(f"/api/adapters/{catalogue['a1']}").json()
    assert full["lora_config"]["peft_type"] == "LORA" and full["target_modules"]
    grouped = client.get("/api/adapters", params={"group_by_name": True}).json()
    assert all("lora_config" not in v for g in grouped for v in g["versions"])


def test_group_by_name(shelf):
    client, catalogue = shelf
    groups = client.get("/api/adapters", params={"group_by_name": True}).json()
    assert [g["name"] for g in groups] == ["lora-a", "lora-b", "lora-other"]
    versions = groups[0]["versions"]
    assert [(v["id"], v["version"]) for v in versions] == [(catalogue["a1"], 1), (catalogue["a2"], 2)]
    assert versions[0]["created_at"] <= versions[1]["created_at"]
    active = client.get("/api/adapters", params={"group_by_name": True, "active": True}).json()
    assert [g["name"] for g in active] == ["lora-a", "lora-other"]


def test_timeline(client, ctx, loras):
    config = {"learning_rate": 1e-4, "epochs": 3}
    v1 = post_folder(client, ctx, loras["a"], name="keys", training_metrics={"loss": [1.0, 0.5, 0.25]},
                     training_config=config).json()
    shutil.copytree(loras["b"], imports(ctx) / "b2")
    v2 = client.post("/api/adapters", json={"source": "folder", "path": "b2", "name": "keys",
                                            "training_metrics": {"final_loss": 0.2}}).json()
    shutil.copytree(loras["a"], imports(ctx) / "a3")
    v3 = client.post("/api/adapters", json={"source": "folder", "path": "a3", "name": "keys",
                                            "allow_duplicate": True}).json()
    client.patch(f"/api/adapters/{v2['id']}", json={"active": False})
    client.delete(f"/api/adapters/{v3['id']}")
    post_folder(client, ctx, loras["b"])  # another name: not in the timeline

    r = client.get("/api/adapters/timeline", params={"name": "keys"})
    assert r.status_code == 200, r.text
    entries = r.json()
    assert [(e["id"], e["version"]) for e in entries] == [(v1["id"], 1), (v2["id"], 2), (v3["id"], 3)]
    assert [e["final_loss"] for e in entries] == [0.25, 0.2, None]
    assert entries[0]["loss"] == [1.0, 0.5, 0.25]
    assert [e["status"] for e in entries] == ["active", "inactive", "deleted"]
    assert all(e["training_run_url"] is None for e in entries)
    assert client.get(f"/api/adapters/{v1['id']}").json()["training_config"] == config


def test_training_provenance_file_is_read(ctx, loras, tmp_path):
    folder = tmp_path / "trained"
    shutil.copytree(loras["a"], folder)
    (folder / "training_provenance.json").write_text(json.dumps({
        "training_dataset": "ds-1", "training_run_id": "run-7", "trained_at": "2025-01-02T03:04:05Z",
        "training_metrics": {"loss": [0.5, 0.3]}, "training_config": {"r": 4}}))
    info = register(ctx, folder)
    assert (info.training_dataset, info.training_run_id, info.trained_at.year) == ("ds-1", "run-7", 2025)
    entry = ctx.adapters.timeline("trained")[0]
    # the run is named, but not linked: it is not a run of this studio (a link would answer 404)
    assert entry.final_loss == 0.3 and entry.training_run_id == "run-7" and entry.training_run_url is None


# ---- generation -------------------------------------------------------------------------------------------
def test_generation_with_and_without_an_adapter(ctx, loras):
    base_before = generate(ctx)  # before any adapter was near the model
    a = register(ctx, loras["a"])
    with_a = generate(ctx, a.id)
    base_after = generate(ctx)  # the adapter is still loaded, but not applied
    assert with_a.adapter_id == a.id and with_a.adapter_label == "lora-a v1" and base_before.adapter_id is None
    assert samples(with_a.output_file).shape == samples(base_before.output_file).shape
    assert (samples(with_a.output_file) != samples(base_before.output_file)).any(), "the adapter did nothing"
    assert (samples(base_after.output_file) == samples(base_before.output_file)).all(), "base output changed"
    assert (samples(generate(ctx, a.id).output_file) == samples(with_a.output_file)).all()  # reproducible
    assert ctx.adapters.get(a.id).usage_count == 2
    assert ctx.jobs.get(with_a.job_id).adapter_id == a.id and ctx.jobs.get(base_after.job_id).adapter_id is None
    assert ctx.adapters.jobs_using(a.id) == 2
    ctx.adapters.delete(a.id)  # unloaded: the base is back to its own modules' output
    assert (samples(generate(ctx).output_file) == samples(base_before.output_file)).all()


def test_generation_over_rest_records_the_adapter(client, ctx, loras):
    a = post_folder(client, ctx, loras["a"]).json()
    r = _gen(client, a["id"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["adapter_id"] == a["id"] and body["adapter_label"] == "lora-a v1"
    job = client.get(f"/api/jobs/{body['job_id']}").json()
    assert job["adapter_id"] == a["id"] and job["adapter_label"] == "lora-a v1"
    assert client.get(f"/api/adapters/{a['id']}").json()["usage_count"] == 1
    _gen(client, a["id"], seed=2)
    assert client.get(f"/api/adapters/{a['id']}").json()["usage_count"] == 2
    plain = client.post("/api/generate", json={"prompt": "x", "duration_s": 0.5}).json()
    assert plain["adapter_id"] is None and client.get(f"/api/jobs/{plain['job_id']}").json()["adapter_id"] is None


def test_adapter_peft_cannot_load_is_a_400_and_leaves_the_base_intact(client, ctx, loras):
    base = samples(generate(ctx).output_file)
    a = post_folder(client, ctx, loras["a"]).json()
    client.patch(f"/api/adapters/{a['id']}", json={"active": False})
    config = ctx.settings.data_dir / next(r.path for r in recorded(ctx)) / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "target_modules": "matches_nothing"}))
    assert client.patch(f"/api/adapters/{a['id']}", json={"active": True}).status_code == 200  # nothing loads ahead of use
    assert loaded_keys(ctx) == set()
    body = detail(_gen(client, a["id"]), 400, "adapter_load_failed")
    assert "lora-a v1" in body["message"] and body["adapter_id"] == a["id"]
    job = client.get(f"/api/jobs/{body['job_id']}").json()  # accepted into the queue, then failed, saying why
    assert job["status"] == "failed" and job["error_code"] == "adapter_load_failed" and job["audio_url"] is None
    assert loaded_keys(ctx) == set()
    assert (samples(generate(ctx).output_file) == base).all()


def test_switching_adapters_never_reloads_the_base(ctx, loras):
    a, b = register(ctx, loras["a"]), register(ctx, loras["b"])
    with ctx.manager.use("test") as loaded:
        wrapper, model_id, model_ref = loaded, id(loaded.model), weakref.ref(loaded.model)
    outputs, used = {}, set()
    for label, adapter in [("A", a), ("B", b), ("base", None), ("A again", a), ("base again", None)]:
        outputs[label] = samples(generate(ctx, adapter.id if adapter else None).output_file)
        used |= {adapter_key(adapter.id)} if adapter else set()
        with ctx.manager.use("test") as loaded:
            assert loaded is wrapper and id(loaded.model) == model_id and model_ref() is loaded.model, label
            assert loaded.active_adapter == (adapter_key(adapter.id) if adapter else None)
            assert set(loaded.adapters) == used  # each loaded at its first use, and kept
    assert (outputs["A"] != outputs["B"]).any() and (outputs["A"] != outputs["base"]).any()
    assert (outputs["A"] == outputs["A again"]).all() and (outputs["base"] == outputs["base again"]).all()
    # what is loaded is what was trained, for both (loading B leaves A's tensors alone)
    with ctx.manager.use("test") as loaded:
        state = loaded.model.state_dict()
    for adapter, source in ((a, loras["a"]), (b, loras["b"])):
        trained = load_file(str(source / "adapter_model.safetensors"))
        for key, tensor in trained.items():
            part = ".lora_A." if ".lora_A." in key else ".lora_B."
            name = key.removeprefix("base_model.model.").replace(part, f"{part}{adapter_key(adapter.id)}.")
            assert torch.equal(state[name], tensor), name


def test_adapters_load_on_first_use_and_unload_when_deactivated_or_deleted(ctx, loras):
    a = register(ctx, loras["a"])
    key = adapter_key(a.id)
    assert loaded_keys(ctx) == set()  # registering loads nothing: the studio stays free
    generate(ctx, a.id)
    assert loaded_keys(ctx) == {key}
    ctx.adapters.update(a.id, AdapterUpdate(active=False))
    assert loaded_keys(ctx) == set()
    ctx.adapters.update(a.id, AdapterUpdate(active=True))
    generate(ctx, a.id)
    generate(ctx)
    with ctx.manager.use("test") as model:
        assert set(model.adapters) == {key} and key in model.model.peft_config
        assert model.active_adapter is None  # loaded, but the base model is what generates now
    ctx.adapters.delete(a.id)
    with ctx.manager.use("test") as model:
        assert model.adapters == {} and key not in getattr(model.model, "peft_config", {})
    with pytest.raises(NotFound):
        ctx.adapters.get(a.id)
    with pytest.raises(InvalidRequest) as err:
        generate(ctx, a.id)
    assert err.value.code == "adapter_deleted"


def test_a_client_told_ready_can_generate_at_once(make_ctx, loras):
    """No adapter work follows a switch: the studio is free the moment 'ready' is sent (no 423 Busy), adapters
    load at their first generation, and a switch to the loaded model does nothing at all."""
    ctx = make_ctx(registry_dict(**{"tiny-b": {}}), host="0.0.0.0")
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    ids = [ctx.adapters.register(RegisterAdapterRequest(source="folder", path=put(ctx, loras[k], f"warm-{i}"),
                                                        allow_duplicate=True)).id for i, k in enumerate("ab")]
    for _ in range(2):
        assert ctx.manager.switch_and_wait("tiny-b").stage == "ready"
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
        assert ctx.manager.status().state == "idle"
        assert generate(ctx, ids[0]).adapter_id == ids[0]  # strict: Busy here fails the test
        assert loaded_keys(ctx) == {adapter_key(ids[0])}
    with ctx.manager.use("test") as before:
        pass
    final = ctx.manager.switch_and_wait("studio-tiny")
    assert final.stage == "ready" and "already loaded" in final.message
    with ctx.manager.use("test") as after:
        assert after is before and set(after.adapters) == {adapter_key(ids[0])}  # nothing reloaded
