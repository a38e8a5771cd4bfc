"""/api/uploads: wav, flac, ogg and mp3 at any rate and channel count are kept and described; damaged, empty,
silent-format and too-long files are refused with their code and leave nothing behind; an upload is read back at a
model's rate and channels, trimmed to the end (a clip to continue) or the start (a melody)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from sqlmodel import select

from studio.db.engine import session_scope
from studio.db.models import AudioUpload
from tests.conftest import rest_client


@pytest.fixture(scope="module")
def api(make_module_ctx):
    ctx = make_module_ctx()
    with rest_client(ctx) as client:
        client.ctx = ctx
        yield client


def tone(seconds: float, rate: int, channels: int, fmt: str) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)
    data = np.stack([wave * (1 - 0.5 * c) for c in range(channels)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format=fmt.upper())
    return buf.getvalue()


def post(api, name: str, body: bytes):
    return api.post("/api/uploads", files={"file": (name, body, "application/octet-stream")})


def leftovers(api) -> list:
    folder = api.ctx.settings.data_dir / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize("fmt,rate,channels", [("wav", 44100, 2), ("flac", 22050, 1), ("ogg", 48000, 2),
                                               ("mp3", 32000, 1)])
def test_each_format_is_kept_described_and_read_at_the_models_rate(api, fmt, rate, channels):
    r = post(api, f"clip.{fmt}", tone(2.0, rate, channels, fmt))
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["format"] == fmt and info["sample_rate"] == rate and info["channels"] == channels
    assert abs(info["seconds"] - 2.0) < 0.1 and info["filename"] == f"clip.{fmt}"
    assert api.get(f"/api/uploads/{info['id']}").json() == info
    assert api.get(info["audio_url"]).status_code == 200
    audio, seconds, trimmed = api.ctx.uploads.read(info["id"], 32000, 2, max_seconds=1.5)
    assert audio.shape == (48000, 2) and audio.dtype == np.float32 and trimmed and abs(seconds - 2.0) < 0.1
    mono, _, trimmed = api.ctx.uploads.read(info["id"], 16000, 1)
    assert mono.shape[1] == 1 and abs(len(mono) - 32000) < 1600 and not trimmed


def test_trimming_keeps_the_end_of_a_clip_to_continue_and_the_start_of_a_melody(api):
    rate = 8000
    ramp = np.linspace(-0.5, 0.5, 3 * rate, dtype=np.float32)[:, None]
    buf = io.BytesIO()
    sf.write(buf, ramp, rate, format="WAV", subtype="FLOAT")
    upload = post(api, "ramp.wav", buf.getvalue()).json()
    end, _, _ = api.ctx.uploads.read(upload["id"], rate, 1, max_seconds=1.0)
    start, _, _ = api.ctx.uploads.read(upload["id"], rate, 1, max_seconds=1.0, keep="start")
    assert np.allclose(end[:, 0], ramp[-rate:, 0]) and np.allclose(start[:, 0], ramp[:rate, 0])


@pytest.mark.parametrize("name,body,code", [
    ("notes.txt", b"just some text, not audio at all" * 10, "unsupported_audio"),
    ("broken.wav", b"RIFF\x24\x00\x00\x00WAVEfmt nonsense", "unsupported_audio"),
    ("empty.wav", b"", "empty_audio"),  # said as empty, not as "not an audio file"
])
def test_unusable_files_are_refused_with_their_code_and_leave_nothing(api, name, body, code):
    before = leftovers(api)
    with session_scope(api.ctx.engine) as session:
        rows = len(session.exec(select(AudioUpload)).all())
    r = post(api, name, body)
    assert r.status_code == 400 and r.json()["detail"]["code"] == code, r.text
    assert name in r.json()["detail"]["message"]
    assert leftovers(api) == before
    with session_scope(api.ctx.engine) as session:
        assert len(session.exec(select(AudioUpload)).all()) == rows


def test_a_truncated_file_and_a_too_long_one_are_refused(api, monkeypatch):
    whole = tone(1.0, 16000, 1, "flac")
    r = post(api, "cut.flac", whole[: len(whole) // 2])
    assert r.status_code == 400 and r.json()["detail"]["code"] in ("unreadable_audio", "unsupported_audio"), r.text
    monkeypatch.setattr(api.ctx.uploads, "max_seconds", 1.0)
    r = post(api, "long.wav", tone(1.5, 8000, 1, "wav"))
    assert r.status_code == 400 and r.json()["detail"]["code"] == "audio_too_long" and "1 s" in r.json()["detail"]["message"]


def test_unknown_ids_and_requests_without_a_file_say_so(api):
    assert api.get("/api/uploads/0123abcd").json()["detail"]["code"] == "upload_not_found"
    assert api.get("/api/uploads/not-hex").status_code == 422
    r = api.post("/api/uploads", data={"x": "1"}, files={"other": ("a.wav", b"x")})
    assert r.status_code == 400 and r.json()["detail"]["code"] == "missing_archive"
