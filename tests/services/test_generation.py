"""The generation service: file names a person recognises, the loudness reached reported with the job, and a
cancelled job told as such (not as a failure)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from studio.errors import Cancelled
from studio.services.audio_out import download_name
from studio.services.generation import GenerateRequest, _job_failure, loudness_note
from studio.services.job_events import music_progress
from studio.gen_settings import settings_class

NAMES = [
    # (case, prompt, job id, format, file name)
    ("plain", "lofi hip hop beat", 12, "flac", "lofi-hip-hop-beat_job12.flac"),
    ("punctuation and case", "  Lo-Fi, HIP hop!!  beat ", 3, "wav", "lo-fi-hip-hop-beat_job3.wav"),
    ("accents", "café crème jazz", 7, "mp3", "cafe-creme-jazz_job7.mp3"),
    ("path tricks", "../../etc/passwd", 1, "wav", "etc-passwd_job1.wav"),
    ("markup", "<img src=x onerror=alert(1)>", 2, "wav", "img-src-x-onerror-alert-1_job2.wav"),
    ("nothing usable", "🎵🎶", 4, "wav", "music_job4.wav"),
    ("long", "a very long prompt " * 10, 5, "wav", "a-very-long-prompt-a-very-long-prompt-a_job5.wav"),
]


@pytest.mark.parametrize("prompt,job_id,fmt,name", [n[1:] for n in NAMES], ids=[n[0] for n in NAMES])
def test_download_names_follow_the_prompt_and_job(prompt, job_id, fmt, name):
    assert download_name(prompt, job_id, fmt) == name


def test_job_records_the_loudness_reached_and_the_true_peak(ctx):
    ctx.gen_config.update("studio-tiny", {"normalize_loudness": True, "target_lufs": -20.0})
    r = ctx.generation.generate(GenerateRequest(prompt="lofi hip hop beat", duration_s=2.0, seed=3))
    assert r.output_file.name == f"lofi-hip-hop-beat_job{r.job_id}.wav"
    job = ctx.jobs.get(r.job_id)
    assert job.loudness_lufs == r.loudness_lufs and job.true_peak_dbtp == r.true_peak_dbtp
    assert abs(job.loudness_lufs - (-20.0)) < 0.5 and job.true_peak_dbtp < -1.0
    assert r.loudness_note is None  # reached: nothing to say


NOTES = [
    # (case, normalise, target, reached, note expected?)
    ("reached", True, -14.0, -14.3, False),
    ("short of the target", True, -14.0, -23.0, True),
    ("normalisation off", False, -14.0, -30.0, False),
    ("undefined loudness", True, -14.0, None, False),
]


@pytest.mark.parametrize("on,target,reached,expected", [n[1:] for n in NOTES], ids=[n[0] for n in NOTES])
def test_a_missed_loudness_target_is_said(on, target, reached, expected):
    settings = settings_class("transformers", 1, 30.0)(normalize_loudness=on, target_lufs=target)
    note = loudness_note(settings, reached, -1.2)
    assert (note is not None) == expected
    if expected:
        assert "-23.0 LUFS" in note and "-14 LUFS" in note


def test_cancelling_is_recorded_and_said_as_a_cancellation(ctx):
    asked = []

    def on_step(done, total):
        if done >= 3 and not asked:  # progress comes at most every 0.25 s: not every step is seen
            asked.append(ctx.generation.cancel())

    with pytest.raises(Cancelled) as caught:
        ctx.generation.generate(GenerateRequest(prompt="x", duration_s=5.0, seed=1), on_step=on_step)
    job = ctx.jobs.list()[0]
    assert job.status == "cancelled" and not job.has_audio
    assert caught.value.message == f"Cancelled: job {job.id} stopped after {job.elapsed_s:.1f} s."
    assert caught.value.extra["job_id"] == job.id and asked == [True]
    assert not [p for p in (ctx.settings.data_dir / "outputs").rglob("*") if p.is_file()]  # no file, half or whole
    assert ctx.manager.status().state == "idle"


PROGRESS = [
    # (case, steps done, steps in all, seconds asked for, what the header says)
    ("start", 0, 503, 10.0, "0.0 of 10 s (0 %)"),
    ("an eighth", 63, 503, 10.0, "1.3 of 10 s (13 %)"),
    ("half of a short piece", 50, 100, 2.0, "1.0 of 2 s (50 %)"),
    ("done", 503, 503, 10.0, "10.0 of 10 s (100 %)"),
    ("fractional length", 10, 40, 7.5, "1.9 of 7.5 s (25 %)"),
    ("no steps known", 0, 0, 5.0, "0.0 of 5 s (0 %)"),
]


@pytest.mark.parametrize("done,total,seconds,said", [p[1:] for p in PROGRESS], ids=[p[0] for p in PROGRESS])
def test_progress_reads_in_seconds_of_music_and_percent(done, total, seconds, said):
    assert music_progress(done, total, seconds) == said
    assert music_progress(done, total, seconds, percent=False) == said.split(" (")[0]  # beside a progress bar


def test_the_header_says_seconds_of_music_during_a_generation_never_steps(ctx):
    seen: list[str] = []

    def on_step(done, total):
        seen.append(ctx.models.current().activity or "")

    r = ctx.generation.generate(GenerateRequest(prompt="lofi", duration_s=2.0, seed=1), on_step=on_step)
    said = [s for s in seen if s.startswith(f"generating job {r.job_id}: ")]
    assert said, seen[:5]
    assert all("step" not in s for s in seen)
    assert said[-1] == f"generating job {r.job_id}: 2.0 of 2 s (100 %)"


def test_a_job_a_gpu_worker_dropped_is_said_as_unavailable_not_as_a_bug():
    """POST /api/generate waiting on a job whose Ray replica died: 503 `interrupted` (send it again), never the 500
    that means a bug of the studio; its id is given for the resubmit."""
    job = SimpleNamespace(id=281, error_code="interrupted",
                          error="interrupted: the GPU worker running this job stopped (replica ab12); submit it again "
                                "(POST /api/jobs/281/resubmit)")
    failure = _job_failure(job)
    assert (failure.status, failure.code, failure.extra["job_id"]) == (503, "interrupted", 281)
    assert _job_failure(SimpleNamespace(id=1, error_code="generation_failed", error="x")).status == 500
