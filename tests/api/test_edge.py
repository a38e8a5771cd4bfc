"""The request edge (studio/api/security.py): Gradio file paths, Host names, cross-site writes, bad bodies."""
from __future__ import annotations

import gzip
import json
import os
import time

import pytest

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def studio(module_studio):
    return module_studio()


@pytest.fixture(scope="module")
def loaded(module_studio):
    return module_studio(load=True)


def _tmp(ctx):
    from studio.server import gradio_temp_dir

    return gradio_temp_dir(ctx)


def _files(folder) -> set[str]:
    return {os.path.join(root, f) for root, _dirs, files in os.walk(folder) for f in files}


def _register_payload(path: str) -> list:
    """The register_adapter endpoint's inputs as gradio_client sends them, with `path` as the archive."""
    archive = {"path": path, "orig_name": "a.zip", "meta": {"_type": "gradio.FileData"}}
    return ["Upload archive", "", archive, "", "", "", 0, "", "From adapter_config.json", False]


# ---- Gradio FileData paths ----------------------------------------------------------------------------------------
PATHS = {
    "device": lambda ctx: "/dev/zero",
    "system file": lambda ctx: "/etc/passwd",
    "studio database": lambda ctx: str(ctx.settings.data_dir / "studio.db"),
    "relative database": lambda ctx: "studio.db",
    "folder": lambda ctx: str(ctx.settings.data_dir),
    "missing file": lambda ctx: str(ctx.settings.data_dir / "missing.zip"),
    "the temp dir itself": lambda ctx: str(_tmp(ctx)),
    "traversal out of the temp dir": lambda ctx: str(_tmp(ctx) / ".." / ".." / "studio.db"),
    "symlink out of the temp dir": lambda ctx: _symlink(ctx),
    "url": lambda ctx: "http://127.0.0.1:9/adapter.zip",
    "file url": lambda ctx: "file:///etc/passwd",
}


def _symlink(ctx) -> str:
    link = _tmp(ctx) / "link" / "passwd.zip"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to("/etc/passwd")
    return str(link)


@pytest.mark.parametrize("route", ["/gradio_api/call/register_adapter", "/gradio_api/queue/join"])
@pytest.mark.parametrize("case", list(PATHS))
def test_file_paths_not_uploaded_are_refused_alike_before_gradio_reads_them(studio, route, case):
    ctx, client = studio
    path = PATHS[case](ctx)
    before = _files(_tmp(ctx))
    body = {"data": _register_payload(path), "fn_index": 0, "session_hash": "probe"}
    started = time.monotonic()
    r = client.post(route, json=body)
    assert time.monotonic() - started < 2, "the refusal must not read the file"
    assert r.status_code == 403, r.text
    assert r.json()["detail"] == {
        "code": "file_not_uploaded",
        "message": "A file must be uploaded to this studio first (POST /gradio_api/upload); other paths are refused."}
    assert _files(_tmp(ctx)) == before, "nothing may be copied into the cache"
    assert ctx.adapters.list() == []
    assert client.get("/api/models/current").status_code == 200  # the server still answers


def test_uploaded_file_goes_to_the_studios_own_temp_dir_and_is_accepted(studio):
    ctx, client = studio
    r = client.post("/gradio_api/upload", files={"files": ("a.zip", b"PK\x05\x06" + b"\0" * 18)})
    assert r.status_code == 200, r.text
    [uploaded] = r.json()
    assert uploaded.startswith(str(_tmp(ctx)) + os.sep)  # not the machine-wide /tmp/gradio
    assert str(_tmp(ctx)).startswith(str(ctx.settings.data_dir.resolve()))
    r = client.post("/gradio_api/call/register_adapter", json={"data": _register_payload(uploaded)})
    assert r.status_code == 200 and "event_id" in r.json(), r.text
    events = client.get(f"/gradio_api/call/register_adapter/{r.json()['event_id']}").text
    # the handler itself read the upload, and refused the (empty) archive with the studio's own message
    assert "holds no adapter_config.json" in events, events


def test_stale_temp_files_are_pruned_at_start(module_studio):
    ctx, _client = module_studio()
    old = _tmp(ctx) / "old-upload"
    old.mkdir()
    (old / "x.zip").write_bytes(b"x")
    fresh = _tmp(ctx) / "fresh-upload"
    fresh.mkdir()
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    from studio.server import build_app

    build_app(ctx, load_model=False)
    assert not old.exists() and fresh.exists()


# ---- Host names (DNS rebinding) -----------------------------------------------------------------------------------
HOSTS = [  # (bind host, share, Host header, answered)
    ("127.0.0.1", False, "127.0.0.1:7860", True),
    ("127.0.0.1", False, "localhost:7860", True),
    ("127.0.0.1", False, "LOCALHOST", True),
    ("127.0.0.1", False, "[::1]:7860", True),
    ("127.0.0.1", False, "evil.example", False),
    ("127.0.0.1", False, "evil.example:7860", False),
    ("127.0.0.1", False, "127.0.0.1.evil.example", False),
    ("127.0.0.1", False, "abc.gradio.live", False),
    ("127.0.0.1", True, "abc.gradio.live", True),  # --share: the tunnel keeps the public Host
    ("127.0.0.1", True, "evil.example", False),
    ("0.0.0.0", False, "studio.lan:7860", True),  # serving the network: reached by any name
]


@pytest.fixture(scope="module")
def by_bind(module_studio):
    made = {}

    def get(host, share):
        if (host, share) not in made:
            made[host, share] = module_studio(host=host, share=share)
        return made[host, share]

    return get


@pytest.mark.parametrize("bind,share,host,answered", HOSTS)
@pytest.mark.parametrize("path", ["/api/jobs", "/", "/gradio_api/info"])
def test_only_loopback_names_answer_a_loopback_studio(by_bind, bind, share, host, answered, path):
    _ctx, client = by_bind(bind, share)
    r = client.get(path, headers={"host": host})
    assert (r.status_code == 200) == answered, (r.status_code, r.text[:200])
    if not answered:  # the studio's shape, saying what to do, on the page's routes too
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        detail = r.json()["detail"]
        assert detail["code"] == "invalid_host" and "127.0.0.1" in detail["message"], detail


# ---- every refusal at the door has the studio's shape ---------------------------------------------------------------
DOOR = {  # name: (method, path, headers, raw body, status, code)
    "unknown Host": ("GET", "/api/jobs", {"host": "evil.example"}, None, 400, "invalid_host"),
    "no Host": ("GET", "/", {"host": ""}, None, 400, "invalid_host"),
    "broken Host": ("GET", "/api/jobs", {"host": "[::1"}, None, 400, "invalid_host"),
    "cross-site write": ("POST", "/api/generate/cancel", {"origin": EVIL}, None, 403, "cross_site_request"),
    "text body": ("POST", "/api/generate", {"content-type": "text/plain"}, b'{"prompt": "x"}', 415,
                  "unsupported_media_type"),
    "form to a JSON route": ("PUT", "/api/models/studio-tiny/config",
                             {"content-type": "multipart/form-data; boundary=x"}, b"--x--\r\n", 415,
                             "unsupported_media_type"),
    "compressed body": ("POST", "/api/generate", {"content-type": "application/json", "content-encoding": "br"},
                        b"xx", 415, "unsupported_encoding"),
    "body too large": ("POST", "/api/generate", {"content-type": "application/json"},
                       b'{"prompt": "' + b"a" * (1 << 20) + b'"}', 413, "body_too_large"),
    "Gradio file path not uploaded": ("POST", "/gradio_api/call/register_adapter",
                                      {"content-type": "application/json"},
                                      json.dumps({"data": _register_payload("/etc/passwd")}).encode(), 403,
                                      "file_not_uploaded"),
}


@pytest.mark.parametrize("case", list(DOOR))
def test_every_refusal_at_the_door_has_the_studios_shape(studio, case):
    method, path, headers, body, status, code = DOOR[case]
    _ctx, client = studio
    r = client.request(method, path, headers=headers, content=body)
    assert r.status_code == status, r.text[:200]
    assert r.headers["content-type"] == "application/json"
    detail = r.json()["detail"]
    assert detail["code"] == code and len(detail["message"]) > 20, detail


def test_gradio_uploads_are_capped_like_the_rest_api(make_ctx, monkeypatch):
    """Gradio's own upload route (/gradio_api/upload) takes no more than an adapter upload (MAX_UPLOAD_BYTES)."""
    from fastapi.testclient import TestClient

    import studio.server as server
    from tests.conftest import LOCAL

    monkeypatch.setattr(server, "MAX_UPLOAD_BYTES", 1000)
    ctx = make_ctx()
    with TestClient(server.build_app(ctx, load_model=False), base_url=LOCAL) as client:
        small = client.post("/gradio_api/upload", files={"files": ("a.zip", b"x" * 900)})
        big = client.post("/gradio_api/upload", files={"files": ("b.zip", b"x" * 1100)})
    assert small.status_code == 200, small.text
    assert big.status_code == 413, big.text
    assert not [p for p in _files(_tmp(ctx)) if p.endswith("b.zip")]  # nothing of the refused file kept


# ---- cross-site writes -------------------------------------------------------------------------------------------
WRITES = [  # (method, path, body)
    ("POST", "/api/generate/cancel", None),
    ("POST", "/api/models/studio-tiny/config/reset", None),
    ("PUT", "/api/models/studio-tiny/config", {"top_k": 7}),
    ("POST", "/api/adapters", {"source": "folder", "path": "imports/x"}),
    ("PATCH", "/api/adapters/1", {"active": False}),
    ("DELETE", "/api/adapters/1", None),
    ("POST", "/gradio_api/call/reset_generation_settings", {"data": ["studio-tiny"]}),
    ("POST", "/login", None),
]
CROSS_SITE = {
    "other origin": {"origin": EVIL},
    "other port": {"origin": "http://127.0.0.1:9999"},
    "null origin": {"origin": "null"},
    "fetch metadata cross-site": {"sec-fetch-site": "cross-site"},
    "fetch metadata same-site": {"sec-fetch-site": "same-site"},
}


@pytest.mark.parametrize("method,path,body", WRITES)
@pytest.mark.parametrize("marks", list(CROSS_SITE))
def test_cross_site_writes_are_refused(studio, method, path, body, marks):
    ctx, client = studio
    before = ctx.gen_config.history("studio-tiny").model_dump()
    r = client.request(method, path, json=body, headers=CROSS_SITE[marks])
    assert r.status_code == 403, r.text
    assert r.json()["detail"]["code"] == "cross_site_request"
    assert ctx.gen_config.history("studio-tiny").model_dump() == before


@pytest.mark.parametrize("headers", [{}, {"origin": "http://127.0.0.1"}, {"sec-fetch-site": "same-origin"},
                                     {"sec-fetch-site": "none"}], ids=["script", "same origin", "same-origin",
                                                                         "typed by the user"])
def test_same_origin_and_scripts_may_write(studio, headers):
    _ctx, client = studio
    r = client.post("/api/generate/cancel", headers=headers)
    assert r.status_code == 200 and r.json() == {"cancelled": False}, r.text


def test_cross_site_reset_leaves_the_settings_alone(studio):
    ctx, client = studio
    assert client.put("/api/models/studio-tiny/config", json={"top_k": 42}).status_code == 200
    r = client.post("/api/models/studio-tiny/config/reset", headers={"origin": EVIL})
    assert r.status_code == 403
    assert ctx.gen_config.get("studio-tiny").values["top_k"] == 42


CONTENT_TYPES = [  # (method, path, content type, body, status, code)
    ("POST", "/api/adapters", "text/plain", json.dumps({"source": "folder", "path": "x"}), 415,
     "unsupported_media_type"),
    ("POST", "/api/adapters", "application/x-www-form-urlencoded", "source=folder&path=x", 415,
     "unsupported_media_type"),
    ("POST", "/api/adapters", None, json.dumps({"source": "folder", "path": "x"}), 415, "unsupported_media_type"),
    ("POST", "/api/generate", "text/plain", json.dumps({"prompt": "x"}), 415, "unsupported_media_type"),
    ("PUT", "/api/models/studio-tiny/config", "text/plain", json.dumps({"top_k": 5}), 415, "unsupported_media_type"),
    ("POST", "/api/generate", "multipart/form-data; boundary=x", "--x--\r\n", 415, "unsupported_media_type"),
    ("POST", "/api/generate/cancel", "text/plain", "", 200, None),  # no body: nothing to misread
]


@pytest.mark.parametrize("method,path,ctype,body,status,code", CONTENT_TYPES)
def test_bodies_need_their_content_type(studio, method, path, ctype, body, status, code):
    _ctx, client = studio
    headers = {"content-type": ctype} if ctype else {}
    r = client.request(method, path, content=body.encode(), headers=headers)
    assert r.status_code == status, r.text
    if code:
        assert r.json()["detail"]["code"] == code


# ---- bad input never answers 500 -----------------------------------------------------------------------------------
BIG = 2 ** 64
BAD_BODIES = {  # name: (method, path, raw body, extra headers, status, code, field)
    "adapter_id beyond 64 bits": ("POST", "/api/generate", f'{{"prompt": "x", "adapter_id": {BIG}}}', {}, 422,
                                  "invalid_body", "adapter_id"),
    "negative adapter_id beyond 64 bits": ("POST", "/api/generate", f'{{"prompt": "x", "adapter_id": -{BIG}}}', {},
                                           422, "invalid_body", "adapter_id"),
    "seed beyond 64 bits": ("POST", "/api/generate", f'{{"prompt": "x", "seed": {BIG}}}', {}, 422,
                            "invalid_body", "seed"),
    "setting beyond 64 bits": ("PUT", "/api/models/studio-tiny/config", f'{{"top_k": {BIG}}}', {}, 422,
                               "invalid_settings", "top_k"),
    "version beyond 64 bits": ("POST", "/api/adapters", f'{{"source": "folder", "path": "x", "version": {BIG}}}',
                               {}, 422, "invalid_body", "version"),
    "number too large": ("POST", "/api/generate", '{"prompt": "x", "duration_s": 1e400}', {}, 422,
                         "invalid_body", "duration_s"),
    "NaN": ("POST", "/api/generate", '{"prompt": "x", "duration_s": NaN}', {}, 422, "invalid_body", "duration_s"),
    "Infinity": ("PUT", "/api/models/studio-tiny/config", '{"temperature": Infinity}', {}, 422,
                 "invalid_settings", "temperature"),
    "NUL in a folder path": ("POST", "/api/adapters", '{"source": "folder", "path": "imports/a\\u0000b"}', {}, 422,
                             "invalid_body", "path"),
    "NUL in a prompt": ("POST", "/api/generate", '{"prompt": "a\\u0000b"}', {}, 422, "invalid_body", "prompt"),
    "NUL in a key": ("PUT", "/api/models/studio-tiny/config", '{"top\\u0000k": 1}', {}, 422, "invalid_body",
                     "top\x00k"),
    "lone surrogate in a prompt": ("POST", "/api/generate", '{"prompt": "\\ud800 beat"}', {}, 422, "invalid_body",
                                   "prompt"),
    "lone surrogate in a name": ("PATCH", "/api/adapters/1", '{"name": "x\\udfff"}', {}, 422, "invalid_body",
                                 "name"),
    "deeply nested": ("POST", "/api/generate", '{"prompt": "x", "settings": ' + "[" * 100 + "]" * 100 + "}", {},
                      422, "invalid_body", "body"),
    "nested past the parser's stack": ("PUT", "/api/models/studio-tiny/config", "[" * 200_000, {}, 422,
                                       "invalid_body", "body"),
    "overlong folder name": ("POST", "/api/adapters", '{"source": "folder", "path": "' + "a" * 5000 + '"}', {},
                             400, "folder_not_found", None),
    "overlong folder path": ("POST", "/api/adapters", '{"source": "folder", "path": "' + "a/" * 3000 + '"}', {},
                             400, "folder_not_found", None),
    "not JSON": ("POST", "/api/generate", "{nope", {}, 422, "invalid_json", None),
    "not UTF-8": ("POST", "/api/generate", b'{"prompt": "\xff"}', {}, 422, "invalid_json", None),
    "broken gzip": ("POST", "/api/generate", b"\x1f\x8b\x08\x00broken", {"content-encoding": "gzip"}, 415,
                    "unsupported_encoding", None),
    "real gzip": ("POST", "/api/generate", gzip.compress(b'{"prompt": "x"}'), {"content-encoding": "gzip"}, 415,
                  "unsupported_encoding", None),
    "over 1 MiB": ("PUT", "/api/models/studio-tiny/config", '{"x": "' + "a" * (1 << 20) + '"}', {}, 413,
                   "body_too_large", None),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_bodies_answer_a_clear_4xx(loaded, case):
    method, path, raw, headers, status, code, field = BAD_BODIES[case]
    ctx, client = loaded
    jobs_before = len(ctx.jobs.list(limit=500, offset=0))
    body = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    r = client.request(method, path, content=body, headers={"content-type": "application/json", **headers})
    assert r.status_code == status, r.text[:300]
    detail = r.json()["detail"]
    assert detail["code"] == code and detail["message"]
    if field:
        assert [e["field"] for e in detail["errors"]] == [field]
    assert len(ctx.jobs.list(limit=500, offset=0)) == jobs_before  # nothing half-written


BAD_PARAMS = [  # (method, path)
    ("GET", f"/api/jobs/{BIG}"),
    ("GET", f"/api/jobs/{BIG}/audio"),
    ("GET", f"/api/jobs/-{BIG}"),
    ("GET", "/api/jobs/0"),
    ("GET", f"/api/jobs?offset={BIG}"),
    ("GET", "/api/jobs?offset=-1"),
    ("GET", f"/api/jobs?limit={BIG}"),
    ("GET", f"/api/adapters/{BIG}"),
    ("PATCH", f"/api/adapters/{BIG}"),
    ("DELETE", f"/api/adapters/{BIG}"),
    ("GET", f"/api/models/studio-tiny/config/history?offset={BIG}"),
    ("GET", f"/api/models/studio-tiny/config/history?limit={BIG}"),
]


@pytest.mark.parametrize("method,path", BAD_PARAMS)
def test_ids_and_offsets_beyond_64_bits_are_422(studio, method, path):
    _ctx, client = studio
    r = client.request(method, path, json={} if method == "PATCH" else None)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["code"] == "invalid_parameter"


@pytest.mark.parametrize("method,path", [("GET", f"/api/jobs/{2 ** 63 - 1}"), ("GET", f"/api/adapters/{2 ** 63 - 1}"),
                                         ("GET", f"/api/jobs?offset={2 ** 63 - 1}")])
def test_the_largest_64_bit_id_is_just_not_found(studio, method, path):
    _ctx, client = studio
    r = client.request(method, path)
    assert r.status_code in (200, 404), r.text
    if "offset" in path:
        assert r.json() == []
