"""Long pieces, continuing a clip and "Extend this" over REST on Studio Tiny with a short window (2 s, extended to
6 s, stride 1.2 s): exact lengths, progress and streamed audio across windows, both duration limits, continuation
from wav/flac/ogg/mp3 uploads at other rates and channel counts, the job's continuation record, and refusals that
record nothing."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf
from safetensors.numpy import load_file
from sqlmodel import func, select

from studio.db.engine import session_scope
from studio.db.models import Job
from studio.registry import parse_registry
from studio.services.generation import _check_duration
from tests.api.test_jobs import sse
from tests.api.test_uploads import tone
from tests.conftest import registry_dict, rest_client

LONG = {"max_duration_s": 2, "max_extended_duration_s": 6, "window_stride_s": 1.2}
RATE = 32000


@pytest.fixture(scope="module")
def api(make_module_ctx):
    reg = registry_dict()
    reg["models"][0].update(LONG)
    ctx = make_module_ctx(parse_registry(reg))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    with rest_client(ctx) as client:
        client.ctx = ctx
        yield client


def jobs_count(api) -> int:
    with session_scope(api.ctx.engine) as session:
        return session.exec(select(func.count()).select_from(Job)).one()


def run(api, **body) -> tuple[dict, list]:
    r = api.post("/api/jobs", json={"prompt": "slow piano", "seed": 1, **body})
    assert r.status_code == 202, r.text
    events = sse(api, r.json()["job_id"])
    assert events[-1][0] == "succeeded", events[-1]
    return api.get(f"/api/jobs/{r.json()['job_id']}").json(), events


def audio_of(api, job: dict) -> np.ndarray:
    r = api.get(f"/api/jobs/{job['id']}/audio")
    assert r.status_code == 200
    data, rate = sf.read(io.BytesIO(r.content), dtype="float32", always_2d=True)
    assert rate == RATE
    return data


def codes_of(api, job_id: int) -> np.ndarray:
    with session_scope(api.ctx.engine) as session:
        return load_file(str(api.ctx.settings.data_dir / session.get(Job, job_id).codes_file))["codes"]


def test_a_long_piece_streams_across_windows_with_one_progress(api):
    job, events = run(api, duration_s=4.5)  # 225 frames in windows of 100, stride 60: 1 + ceil(125 / 60) = 4
    assert len(audio_of(api, job)) == 4.5 * RATE and codes_of(api, job["id"]).shape == (4, 225)
    running = [d for n, d in events if n == "running" and d.get("total")]
    steps = [d["step"] for d in running]
    assert steps == sorted(steps) and len({d["total"] for d in running}) == 1
    assert running[-1]["total"] == 4 * 103  # every window's steps, one progress
    assert "of 4.5 s" in running[-1]["message"]
    chunks = [d for n, d in events if n == "audio"]
    pcm = np.concatenate([np.frombuffer(base64.b64decode(a["data"]), "<i2") for a in chunks])
    assert len(pcm) == 4.5 * RATE and len(chunks) >= 4  # streamed as it went, across the windows
    assert job["continuation"] is None


@pytest.mark.parametrize("duration, limit", [(6.5, "max_extended_duration_s")])
def test_the_extended_limit_is_enforced_and_named(api, duration, limit):
    before = jobs_count(api)
    r = api.post("/api/jobs", json={"prompt": "x", "duration_s": duration})
    assert r.status_code == 422
    body = r.json()["detail"]
    assert body["code"] == "duration_exceeds_limit" and body["limit"] == limit
    assert body["max_extended_duration_s"] == 6 and body["max_duration_s"] == 2
    assert jobs_count(api) == before


def test_a_one_window_model_keeps_its_single_window_limit():
    spec = parse_registry(registry_dict()).get("studio-tiny")  # no max_extended_duration_s
    with pytest.raises(Exception) as err:
        _check_duration(31.0, spec)
    assert err.value.code == "duration_exceeds_limit" and err.value.extra["limit"] == "max_duration_s"
    _check_duration(30.0, spec)
    extended = parse_registry(registry_dict(long=LONG)).get("long")
    _check_duration(6.0, extended)  # over one window, within the extended limit


@pytest.mark.parametrize("fmt, rate, channels, seconds", [("wav", 44100, 2, 0.5), ("flac", 22050, 1, 3.0),
                                                          ("ogg", 48000, 2, 3.0), ("mp3", 16000, 1, 0.6)])
def test_continue_an_uploaded_clip(api, fmt, rate, channels, seconds):
    upload = api.post("/api/uploads", files={"file": (f"clip.{fmt}", tone(seconds, rate, channels, fmt),
                                                      "application/octet-stream")})
    assert upload.status_code == 201, upload.text
    uid = upload.json()["id"]
    job, events = run(api, duration_s=1.5, continue_upload_id=uid)
    record = job["continuation"]
    # the first window sees at most window - min(new, stride) = 2 - 1.2 = 0.8 s of the clip: its end
    used = min(seconds, 0.8)
    assert record["source"] == "upload" and record["upload_id"] == uid and record["included"] is True
    assert abs(record["seconds"] - used) <= 0.02
    assert (record["trimmed_from_s"] is not None) == (seconds > 0.8)
    audio = audio_of(api, job)
    assert len(audio) == round(record["seconds"] * RATE) + 1.5 * RATE and audio.shape[1] == 1
    assert job["duration_s"] == 1.5  # the new music
    pcm = sum(len(base64.b64decode(d["data"])) // 2 for n, d in events if n == "audio")
    assert pcm == len(audio)
    # without the clip at the start: the new music only
    job2, _ = run(api, duration_s=1.5, continue_upload_id=uid, include_continued=False)
    assert len(audio_of(api, job2)) == 1.5 * RATE and job2["continuation"]["included"] is False


def test_extend_this_starts_with_the_source_jobs_codes(api):
    source, _ = run(api, duration_s=1.0, seed=7)
    extended, _ = run(api, duration_s=3.0, continue_job_id=source["id"])
    codes, src = codes_of(api, extended["id"]), codes_of(api, source["id"])
    assert codes.shape == (4, 200) and np.array_equal(codes[:, :50], src)
    assert len(audio_of(api, extended)) == 4 * RATE
    assert extended["continuation"] == {"source": "job", "job_id": source["id"], "seconds": 0.8,
                                        "trimmed_from_s": 1.0, "included": True}
    # extending the extension: a source longer than the window, all of it kept at the start
    again, _ = run(api, duration_s=1.0, continue_job_id=extended["id"])
    assert np.array_equal(codes_of(api, again["id"])[:, :200], codes)
    resubmitted = api.post(f"/api/jobs/{extended['id']}/resubmit")
    assert resubmitted.status_code == 202
    assert sse(api, resubmitted.json()["job_id"])[-1][0] == "succeeded"
    assert api.get(f"/api/jobs/{resubmitted.json()['job_id']}").json()["continuation"] == extended["continuation"]


def test_continuation_refusals_record_nothing(api):
    source, _ = run(api, duration_s=0.5)
    with session_scope(api.ctx.engine) as session:  # a job of another model, and a failed one
        other = Job(prompt="x", model_id="tiny-hub", settings={}, seed=1, duration_s=1, sample_rate=RATE,
                    status="succeeded", submitted_by="local", codes_file=session.get(Job, source["id"]).codes_file)
        failed = Job(prompt="x", model_id="studio-tiny", settings={}, seed=1, duration_s=1, sample_rate=RATE,
                     status="failed", submitted_by="local")
        session.add_all([other, failed])
        session.commit()
        other_id, failed_id = other.id, failed.id
    upload = api.post("/api/uploads", files={"file": ("c.wav", tone(1, 8000, 1, "wav"), "audio/wav")}).json()
    cases = [
        ({"continue_upload_id": "0" * 32}, 404, "upload_not_found"),
        ({"continue_upload_id": "../../etc/passwd"}, 404, "upload_not_found"),
        ({"continue_job_id": 10**9}, 404, "job_not_found"),
        ({"continue_job_id": other_id}, 409, "continue_job_other_model"),
        ({"continue_job_id": failed_id}, 409, "continue_job_not_finished"),
        ({"continue_job_id": source["id"], "continue_upload_id": upload["id"]}, 422, "continuation_conflict"),
        ({"continue_job_id": source["id"], "duration_s": 7}, 422, "duration_exceeds_limit"),
        ({"continue_job_id": "1"}, 422, None),
        ({"include_continued": "yes"}, 422, None),
    ]
    before = jobs_count(api)
    for body, status, code in cases:
        r = api.post("/api/jobs", json={"prompt": "x", "duration_s": 1.0, **body})
        assert r.status_code == status, (body, r.text)
        if code:
            assert r.json()["detail"]["code"] == code, (body, r.json())
        r = api.post("/api/generate", json={"prompt": "x", "duration_s": 1.0, **body})
        assert r.status_code == status, (body, r.text)
    assert jobs_count(api) == before


def test_a_bad_upload_is_refused_before_it_can_be_continued(api):
    before = jobs_count(api)
    r = api.post("/api/uploads", files={"file": ("song.mp3", b"ID3 not really an mp3" * 50, "audio/mpeg")})
    assert r.status_code == 400 and r.json()["detail"]["code"] in ("unsupported_audio", "unreadable_audio")
    assert jobs_count(api) == before
