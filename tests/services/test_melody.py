"""Melody conditioning through the generation service: melody_upload_id is read from its start at the model's rate,
turned into a chromagram and followed; refused (before anything is recorded) for text-only models and unknown
uploads; recorded in Job.melody and shown with the job; kept by resubmitting and by a restart."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from studio.db.engine import session_scope
from studio.db.jobs import get_job
from studio.errors import Incompatible, NotFound
from studio.runtime.chroma import chromagram
from studio.services.generation import GenerateRequest, JobRequest
from tests.melody_support import melody_ctx, upload, write_tune

C_MAJOR = [261.63, 329.63, 392.0, 523.25]
OTHER = [440.0, 369.99, 493.88, 311.13]


@pytest.fixture(scope="module")
def studio(make_module_ctx, tmp_path_factory):
    """One studio with studio-tiny-melody loaded and two melodies uploaded (44.1 kHz stereo WAV, 22.05 kHz FLAC)."""
    ctx = melody_ctx(make_module_ctx)
    assert ctx.manager.switch_and_wait("studio-tiny-melody").stage == "ready"
    files = tmp_path_factory.mktemp("tunes")
    ctx.tunes = {"c": upload(ctx, write_tune(files / "c major.wav", C_MAJOR, channels=2)),
                 "other": upload(ctx, write_tune(files / "other.flac", OTHER, rate=22050))}
    return ctx


def _jobs(ctx) -> int:
    return ctx.jobs.search().total


def test_a_melody_is_followed_and_recorded(studio):
    req = dict(prompt="calm piano", duration_s=1.0, seed=4, settings={"do_sample": False})
    with_c = studio.generation.generate(GenerateRequest(**req, melody_upload_id=studio.tunes["c"]))
    with_other = studio.generation.generate(GenerateRequest(**req, melody_upload_id=studio.tunes["other"]))
    plain = studio.generation.generate(GenerateRequest(**req))
    codes = {name: load_file(str(studio.settings.data_dir / get_codes(studio, r.job_id)))["codes"]
             for name, r in (("c", with_c), ("other", with_other), ("plain", plain))}
    assert not np.array_equal(codes["c"], codes["other"]) and not np.array_equal(codes["c"], codes["plain"])
    info = studio.jobs.get(with_c.job_id)
    assert info.melody is not None and info.melody.upload_id == studio.tunes["c"]
    assert info.melody.seconds == pytest.approx(2.0, abs=1e-3) and info.melody.trimmed_from_s is None
    assert studio.jobs.get(plain.job_id).melody is None
    # the codes are those of the loaded model decoding the chroma of the upload read at 32 kHz mono
    audio, _, _ = studio.uploads.read(studio.tunes["c"], 32000, 1)
    from studio.runtime.backend import Row, SamplingParams

    with studio.manager.use("test") as model:
        direct = model.generate_batch([Row("calm piano", 50, 4, SamplingParams(False, 250, 0.0, 1.0, 3.0),
                                           melody=chromagram(audio))], stream_every_s=None)[0]
    assert np.array_equal(direct.codes, codes["c"])


def get_codes(ctx, job_id: int):
    with session_scope(ctx.engine) as session:
        return get_job(session, job_id).codes_file


def test_a_melody_longer_than_a_window_is_cut_and_said(studio, tmp_path):
    spec = studio.registry.get("studio-tiny-melody")
    long = upload(studio, write_tune(tmp_path / "long.ogg", C_MAJOR * 9, each_s=1.0, rate=32000))  # 36 s
    accepted = studio.generation.submit(JobRequest(prompt="pop", duration_s=0.5, melody_upload_id=long))
    studio.generation.wait(accepted.job_id)
    melody = studio.jobs.get(accepted.job_id).melody
    assert melody.seconds == pytest.approx(spec.max_duration_s) and melody.trimmed_from_s == pytest.approx(36.0)


def test_variations_and_resubmitting_keep_the_melody(studio):
    accepted = studio.generation.submit(JobRequest(prompt="rock", duration_s=0.5, variations=2,
                                                   melody_upload_id=studio.tunes["other"]))
    for job_id in accepted.job_ids:
        studio.generation.wait(job_id)
        assert studio.jobs.get(job_id).melody.upload_id == studio.tunes["other"]
    again = studio.generation.resubmit(accepted.job_id)
    studio.generation.wait(again.job_id)
    assert studio.jobs.get(again.job_id).melody == studio.jobs.get(accepted.job_id).melody


def test_a_restart_rebuilds_the_melody_of_a_waiting_job(studio):
    """plan_of (how a restarted studio queues its waiting jobs again) reads the recorded upload again."""
    accepted = studio.generation.submit(JobRequest(prompt="jazz", duration_s=0.5, seed=9,
                                                   melody_upload_id=studio.tunes["c"]))
    studio.generation.wait(accepted.job_id)
    with session_scope(studio.engine) as session:
        job = get_job(session, accepted.job_id)
        session.expunge(job)
    plan = studio.generation.plan_of(job)
    audio, _, _ = studio.uploads.read(studio.tunes["c"], 32000, 1)
    assert np.array_equal(plan.melody, chromagram(audio)) and plan.melody_record == job.melody
    assert plan.task(job.id).row.melody is plan.melody


REFUSALS = [
    # (case, model loaded, upload, error class, code)
    ("text-only model", "studio-tiny", "c", Incompatible, "melody_not_supported"),
    ("unknown upload", "studio-tiny-melody", "0123456789abcdef01234567", NotFound, "upload_not_found"),
    ("not an id", "studio-tiny-melody", "../../etc/passwd", NotFound, "upload_not_found"),
]


@pytest.mark.parametrize("model,upload_id,error,code", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_record_nothing(make_ctx, model, upload_id, error, code, tmp_path):
    ctx = melody_ctx(make_ctx)
    assert ctx.manager.switch_and_wait(model).stage == "ready"
    if upload_id == "c":
        upload_id = upload(ctx, write_tune(tmp_path / "c.wav", C_MAJOR))
    before = _jobs(ctx)
    with pytest.raises(error) as caught:
        ctx.generation.submit(JobRequest(prompt="pop", duration_s=0.5, melody_upload_id=upload_id))
    assert caught.value.code == code
    assert _jobs(ctx) == before
    if code == "melody_not_supported":
        assert "melody" in caught.value.message and caught.value.extra["model_id"] == "studio-tiny"
