"""/api/datasets: create from a folder (JSON) or an upload (multipart), the report, clips and their audio, edits,
delete; every refusal a 4xx with its code, and nothing created by a refused request."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import soundfile as sf
from sqlmodel import select

from studio.db.engine import session_scope
from studio.db.models import Dataset, TrainingRun
from tests.conftest import rest_client
from tests.tone_dataset import write_tone_folder


@pytest.fixture(scope="module")
def api(make_module_ctx, tmp_path_factory):
    imports = tmp_path_factory.mktemp("imports")
    write_tone_folder(imports / "tones", n=4, seconds=2.0)
    (imports / "broken").mkdir()
    (imports / "broken" / "a.wav").write_bytes(b"RIFF nonsense")
    (imports / "broken" / "a.txt").write_text("calm bass")
    ctx = make_module_ctx(import_roots=(imports,))
    with rest_client(ctx) as client:
        client.ctx, client.imports = ctx, imports
        yield client


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.writestr(f"set/{p.name}", p.read_bytes())
    return buf.getvalue()


def _count(ctx) -> int:
    with session_scope(ctx.engine) as session:
        return len(session.exec(select(Dataset)).all())


def test_create_from_a_folder_show_list_clips_audio_edit_delete(api):
    r = api.post("/api/datasets", json={"source": "folder", "path": "tones", "name": "My tones", "max_clip_s": 1.5,
                                        "overlap_s": 0.5})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["name"] == "My tones" and info["clips"] == 8 and info["version"] == 1
    assert info["report"]["files_found"] == 4 and info["report"]["problems"] == []
    assert api.get(f"/api/datasets/{info['id']}").json() == info
    assert info["id"] in [d["id"] for d in api.get("/api/datasets").json()]
    clips = api.get(f"/api/datasets/{info['id']}/clips").json()
    assert len(clips) == 8 and clips[0]["caption"] == "calm bass"
    audio = api.get(clips[0]["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    data, rate = sf.read(io.BytesIO(audio.content))
    assert rate == 32000 and len(data) == 48000
    r = api.patch(f"/api/datasets/{info['id']}/clips",
                  json={"captions": [{"id": clips[0]["id"], "caption": "deep bass"}], "clip_ids": [clips[1]["id"]],
                        "excluded": True})
    assert r.status_code == 200, r.text
    edited = r.json()
    assert (edited["version"], edited["clips"], edited["excluded"]) == (2, 7, 1)
    assert edited["content_hash"] != info["content_hash"]
    r = api.delete(f"/api/datasets/{info['id']}")
    assert r.status_code == 200 and r.json()["id"] == info["id"]
    for url in (f"/api/datasets/{info['id']}", f"/api/datasets/{info['id']}/clips", clips[0]["audio_url"]):
        gone = api.get(url)
        assert gone.status_code == 404 and gone.json()["detail"]["code"] == "dataset_not_found"


def test_create_from_an_upload(api):
    r = api.post("/api/datasets", files={"archive": ("my-set.zip", _zip(api.imports / "tones"))},
                 data={"max_clip_s": "2", "min_clip_s": "0.5"})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["name"] == "my-set" and info["source"] == "upload:my-set.zip" and info["clips"] == 4
    assert list((api.ctx.settings.data_dir / "datasets").glob(".incoming-*")) == []


def test_no_usable_clip_is_a_422_with_the_report_and_nothing_is_created(api):
    before = _count(api.ctx)
    r = api.post("/api/datasets", json={"source": "folder", "path": "broken"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail["code"] == "no_usable_clips" and "a.wav" in detail["message"]
    assert [(p["file"], p["code"]) for p in detail["report"]["problems"]] == [("a.wav", "unreadable")]
    assert _count(api.ctx) == before


REFUSALS = [  # (case, request kwargs, status, code, field named)
    ("outside the import roots", dict(json={"source": "folder", "path": "/etc"}), 400, "path_not_allowed", None),
    ("no such folder", dict(json={"source": "folder", "path": "nope"}), 400, "folder_not_found", None),
    ("no path", dict(json={"source": "folder"}), 422, "missing_path", "path"),
    ("unknown model", dict(json={"source": "folder", "path": "tones", "model_id": "nope"}), 404, "model_not_found",
     None),
    ("clips longer than the window", dict(json={"source": "folder", "path": "tones", "max_clip_s": 60}), 422,
     "clip_too_long", "max_clip_s"),
    ("overlap as long as the clips", dict(json={"source": "folder", "path": "tones", "max_clip_s": 2,
                                                "overlap_s": 2}), 422, "overlap_too_long", "overlap_s"),
    ("an unknown field", dict(json={"source": "folder", "path": "tones", "colour": 1}), 422, "invalid_body",
     "colour"),
    ("a number as text", dict(json={"source": "folder", "path": "tones", "max_clip_s": "2"}), 422, "invalid_body",
     "max_clip_s"),
    ("not JSON", dict(content=b"{", headers={"content-type": "application/json"}), 422, "invalid_json", None),
    ("upload named in JSON", dict(json={"source": "upload"}), 400, "missing_archive", None),
    ("a form number that is not one", dict(files={"archive": ("a.zip", b"PK")}, data={"overlap_s": "two"}), 422,
     "invalid_body", "overlap_s"),
    ("a form number that is infinite", dict(files={"archive": ("a.zip", b"PK")}, data={"max_clip_s": "inf"}), 422,
     "invalid_body", "max_clip_s"),
    ("a form without the archive", dict(files={"other": ("a.zip", b"PK")}), 400, "missing_archive", None),
    ("not an archive", dict(files={"archive": ("a.zip", b"hello")}), 400, "invalid_archive", None),
]


@pytest.mark.parametrize("case,kwargs,status,code,field", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refusals(api, case, kwargs, status, code, field):
    before = _count(api.ctx)
    r = api.post("/api/datasets", **kwargs)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail["code"] == code and detail["message"]
    if field:
        assert [e["field"] for e in detail["errors"]] == [field]
    assert _count(api.ctx) == before
    assert list((api.ctx.settings.data_dir / "datasets").glob(".incoming-*")) == []


def test_edit_refusals_and_unknown_ids(api):
    info = api.post("/api/datasets", json={"source": "folder", "path": "tones"}).json()
    clip = api.get(f"/api/datasets/{info['id']}/clips").json()[0]
    cases = [
        (api.patch(f"/api/datasets/{info['id']}/clips", json={"clip_ids": [10**9], "excluded": True}), 422,
         "clip_not_found"),
        (api.patch(f"/api/datasets/{info['id']}/clips", json={"clip_ids": [clip["id"]], "caption": ""}), 422,
         "empty_caption"),
        (api.patch(f"/api/datasets/{info['id']}/clips", json={"excluded": "true"}), 422, "invalid_body"),
        (api.patch("/api/datasets/999999/clips", json={}), 404, "dataset_not_found"),
        (api.get(f"/api/datasets/{info['id']}/clips/999999/audio"), 404, "clip_not_found"),
        (api.get("/api/datasets/0"), 422, "invalid_parameter"),
        (api.delete("/api/datasets/999999"), 404, "dataset_not_found"),
    ]
    for r, status, code in cases:
        assert (r.status_code, r.json()["detail"]["code"]) == (status, code), r.text
    assert api.get(f"/api/datasets/{info['id']}").json()["version"] == 1


def test_delete_is_refused_while_a_run_uses_it(api):
    info = api.post("/api/datasets", json={"source": "folder", "path": "tones"}).json()
    with session_scope(api.ctx.engine) as session:
        session.add(TrainingRun(name="r", method="sft", model_id="studio-tiny", dataset_id=info["id"],
                                folder="training/runs/x", status="queued"))
        session.commit()
    r = api.delete(f"/api/datasets/{info['id']}")
    assert r.status_code == 409 and r.json()["detail"]["code"] == "dataset_in_use"
    assert api.get(f"/api/datasets/{info['id']}").status_code == 200


def test_the_routes_are_typed_in_the_openapi_document(api):
    doc = api.get("/openapi.json").json()
    create = doc["paths"]["/api/datasets"]["post"]
    assert set(create["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/DatasetInfo"}
    assert "no_usable_clips" in create["responses"]["422"]["description"]
    assert "dataset_in_use" in doc["paths"]["/api/datasets/{dataset_id}"]["delete"]["responses"]["409"]["description"]
