"""Training datasets: the report for each kind of bad input (nothing half-created when nothing is usable), slicing,
resampling and channels, captions from every source, edits that bump the version and hash, exclusion, delete, and
what a killed studio leaves behind."""
from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from studio.datadir import recover_interrupted_work
from studio.db.engine import session_scope
from studio.db.models import Dataset, TrainingRun
from studio.errors import Conflict, InvalidRequest, InvalidValues, NotFound
from studio.services.datasets import (ClipCaption, ClipsEdit, CreateDatasetRequest, clean_caption, content_hash,
                                      slice_starts, to_channels)
from tests.conftest import registry_dict
from tests.tone_dataset import tone, write_tone_folder
from sqlmodel import select


@pytest.fixture
def studio(make_ctx, tmp_path):
    """A studio (no model loaded: datasets need none) whose import root is tmp_path/imports."""
    imports = tmp_path / "imports"
    imports.mkdir()
    ctx = make_ctx(import_roots=(imports,), registry=registry_dict(stereo={"channels": 2, "sample_rate": 48000}))
    ctx.imports = imports
    return ctx


def folder_req(path: str, **kw) -> CreateDatasetRequest:
    return CreateDatasetRequest(source="folder", path=path, **kw)


def wav(path: Path, seconds: float, rate: int = 32000, channels: int = 1, kind: str = "calm bass", seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(kind, seconds, rate, seed=seed, channels=channels), rate)


def nothing_created(ctx) -> None:
    with session_scope(ctx.engine) as session:
        assert session.exec(select(Dataset)).all() == []
    folder = ctx.settings.data_dir / "datasets"
    assert not folder.exists() or list(folder.iterdir()) == []  # no .incoming-*, no half dataset


# ---- the report: one good file beside one bad input of each kind ------------------------------------------------
def _bad_noise(d: Path):
    (d / "bad.wav").write_bytes(os.urandom(3000))
    (d / "bad.txt").write_text("noise")


def _empty_wav(d: Path):
    sf.write(d / "bad.wav", np.zeros((0,), np.float32), 32000)
    (d / "bad.txt").write_text("silence")


def _nan_wav(d: Path):
    data = np.full(32000 * 2, np.nan, np.float32)
    sf.write(d / "bad.wav", data, 32000, subtype="FLOAT")
    (d / "bad.txt").write_text("broken")


def _no_caption(d: Path):
    wav(d / "bad.wav", 2.0)


def _empty_caption(d: Path):
    wav(d / "bad.wav", 2.0)
    (d / "bad.txt").write_text("  \n ")


def _too_short(d: Path):
    wav(d / "bad.wav", 0.4)
    (d / "bad.txt").write_text("a blip")


def _unsupported(d: Path):
    (d / "bad.m4a").write_bytes(b"\0" * 100)


def _orphan_caption(d: Path):
    (d / "bad.txt").write_text("a caption for nothing")


def _jsonl_bad_line(d: Path):
    (d / "good.txt").unlink()
    (d / "metadata.jsonl").write_text('{"file_name": "good.wav", "text": "calm bass"}\nnot json\n')


def _jsonl_missing_audio(d: Path):
    (d / "good.txt").unlink()
    (d / "metadata.jsonl").write_text('{"file_name": "good.wav", "text": "calm bass"}\n'
                                      '{"file_name": "bad.wav", "text": "gone"}\n')


def _csv_without_columns(d: Path):
    (d / "metadata.csv").write_text("path,description\ngood.wav,calm bass\n")


BAD_INPUTS = [  # (case, make the bad input beside good.wav + good.txt, the file the problem names, its code)
    ("random bytes named .wav", _bad_noise, "bad.wav", "unreadable"),
    ("a wav with no samples", _empty_wav, "bad.wav", "unreadable"),
    ("a wav of NaN samples", _nan_wav, "bad.wav", "unreadable"),
    ("no caption", _no_caption, "bad.wav", "missing_caption"),
    ("an empty caption", _empty_caption, "bad.wav", "empty_caption"),
    ("shorter than min_clip_s", _too_short, "bad.wav", "too_short"),
    ("an audio format soundfile cannot read", _unsupported, "bad.m4a", "unsupported_format"),
    ("a caption file with no audio", _orphan_caption, "bad.txt", "caption_without_audio"),
    ("metadata.jsonl: a line that is not JSON", _jsonl_bad_line, "metadata.jsonl", "unreadable"),
    ("metadata.jsonl: a row naming no audio file", _jsonl_missing_audio, "metadata.jsonl", "caption_without_audio"),
    ("metadata.csv without file_name and text", _csv_without_columns, "metadata.csv", "unreadable"),
]


@pytest.mark.parametrize("case,make,file,code", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_each_bad_input_is_a_problem_in_the_report_and_the_good_file_is_used(studio, case, make, file, code):
    d = studio.imports / "set"
    wav(d / "good.wav", 2.0)
    (d / "good.txt").write_text("calm bass")
    make(d)
    info = studio.datasets.create(folder_req("set"))
    problems = [(p.file, p.code) for p in info.report.problems]
    assert (file, code) in problems, info.report.problems
    assert all(p.message for p in info.report.problems)
    assert info.clips == 1 and info.report.files_used == 1
    assert [c.source_file for c in studio.datasets.clips(info.id)] == ["good.wav"]


@pytest.mark.parametrize("case,make,file,code", [c for c in BAD_INPUTS if c[2] == "bad.wav"],
                         ids=[c[0] for c in BAD_INPUTS if c[2] == "bad.wav"])
def test_no_usable_clip_is_refused_with_the_report_and_nothing_is_created(studio, case, make, file, code):
    d = studio.imports / "set"
    d.mkdir()
    make(d)
    with pytest.raises(InvalidValues) as refused:
        studio.datasets.create(folder_req("set"))
    assert refused.value.code == "no_usable_clips" and refused.value.status == 422
    report = refused.value.extra["report"]
    assert (file, code) in [(p["file"], p["code"]) for p in report["problems"]]
    assert report["clips"] == 0
    nothing_created(studio)


def test_a_folder_with_no_audio_is_refused(studio):
    (studio.imports / "empty").mkdir()
    (studio.imports / "empty" / "notes.md").write_text("hi")
    with pytest.raises(InvalidValues) as refused:
        studio.datasets.create(folder_req("empty"))
    assert refused.value.code == "no_usable_clips" and "no audio file" in refused.value.message
    nothing_created(studio)


@pytest.mark.parametrize("fields,field,code", [
    (dict(max_clip_s=31.0), "max_clip_s", "clip_too_long"),
    (dict(max_clip_s=2.0, overlap_s=2.0), "overlap_s", "overlap_too_long"),
    (dict(max_clip_s=2.0, min_clip_s=3.0), "min_clip_s", "min_clip_too_long"),
    (dict(name="  "), "name", "invalid_name"),
])
def test_settings_that_cannot_work_are_refused_naming_the_field(studio, fields, field, code):
    write_tone_folder(studio.imports / "tones", n=2, seconds=2.0)
    with pytest.raises(InvalidValues) as refused:
        studio.datasets.create(folder_req("tones", **fields))
    assert refused.value.code == code and [e["field"] for e in refused.value.extra["errors"]] == [field]
    nothing_created(studio)


def test_paths_outside_the_import_roots_and_links_out_of_them_are_refused(studio, tmp_path):
    outside = tmp_path / "outside"
    write_tone_folder(outside, n=2, seconds=2.0)
    for path in (str(outside), "../outside"):
        with pytest.raises(InvalidRequest) as refused:
            studio.datasets.create(folder_req(path))
        assert refused.value.code == "path_not_allowed"
    linked = studio.imports / "linked"
    write_tone_folder(linked, n=2, seconds=2.0)
    os.symlink(outside / "clip_000.wav", linked / "secret.wav")
    with pytest.raises(InvalidRequest) as refused:
        studio.datasets.create(folder_req("linked"))
    assert refused.value.code == "path_not_allowed" and "secret.wav" in refused.value.message
    with pytest.raises(InvalidRequest) as refused:
        studio.datasets.create(folder_req("missing"))
    assert refused.value.code == "folder_not_found"
    with pytest.raises(NotFound) as refused:
        studio.datasets.create(folder_req("linked", model_id="nope"))
    assert refused.value.code == "model_not_found"
    nothing_created(studio)


# ---- captions ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("captions,source", [("sidecar", "sidecar .txt files"), ("jsonl", "metadata.jsonl"),
                                             ("csv", "metadata.csv")])
def test_captions_from_each_source(studio, captions, source):
    made = write_tone_folder(studio.imports / "tones", n=4, seconds=2.0, captions=captions)
    info = studio.datasets.create(folder_req("tones"))
    assert info.report.caption_source == source and info.report.problems == []
    assert [(c.source_file, c.caption) for c in studio.datasets.clips(info.id)] == made


def test_metadata_with_a_caption_column_and_sidecars_for_the_rest(studio):
    d = studio.imports / "mixed"
    for i in range(3):
        wav(d / "sub" / f"s{i}.wav", 1.5, seed=i)
    (d / "metadata.csv").write_text('file_name,caption\nsub/s0.wav,"calm, low bass"\n')
    (d / "sub" / "s1.txt").write_text("fast\nsynth\n")
    (d / "sub" / "s2.txt").write_text("x" * 3000)
    info = studio.datasets.create(folder_req("mixed"))
    assert info.report.caption_source == "metadata.csv and sidecar .txt files"
    captions = [c.caption for c in studio.datasets.clips(info.id)]
    assert captions[:2] == ["calm, low bass", "fast synth"] and len(captions[2]) == 2000


def test_clean_caption():
    assert clean_caption("  fast \n\t synth ") == "fast synth"


# ---- slicing and resampling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("frames,window,hop,min_frames,expected", [
    (100, 40, 30, 10, [(0, 40), (30, 70), (60, 100)]),
    (95, 40, 30, 10, [(0, 40), (30, 70), (60, 95)]),
    (95, 40, 40, 20, [(0, 40), (40, 80)]),  # the last 15 frames are too short
    (40, 40, 30, 10, [(0, 40)]),  # exactly one window: no second slice inside the first
    (30, 40, 30, 10, [(0, 30)]),
    (5, 40, 30, 10, []),
])
def test_slice_starts(frames, window, hop, min_frames, expected):
    assert slice_starts(frames, window, hop, min_frames) == expected


def test_long_files_are_sliced_with_overlap_and_short_tails_left_out(studio):
    d = studio.imports / "long"
    wav(d / "a.wav", 5.0)
    wav(d / "b.wav", 3.6, seed=1)
    wav(d / "c.wav", 1.5, seed=2)
    for name in "abc":
        (d / f"{name}.txt").write_text("calm bass")
    info = studio.datasets.create(folder_req("long", max_clip_s=2.0, overlap_s=0.5, min_clip_s=1.0))
    clips = studio.datasets.clips(info.id)
    got = [(c.source_file, c.start_s, c.duration_s) for c in clips]
    assert got == [("a.wav", 0.0, 2.0), ("a.wav", 1.5, 2.0), ("a.wav", 3.0, 2.0),
                   ("b.wav", 0.0, 2.0), ("b.wav", 1.5, 2.0),  # b's tail (3.0-3.6 s) is shorter than 1 s
                   ("c.wav", 0.0, 1.5)]
    assert info.report.sliced_files == 2 and info.report.files_used == 3 and info.clips == 6
    assert info.report.total_minutes == pytest.approx(11.5 / 60, abs=1e-3)
    assert info.max_clip_s == 2.0 and info.overlap_s == 0.5
    # the overlapping part of two consecutive clips is the same audio
    first = sf.read(studio.datasets.clip_audio(info.id, clips[0].id))[0]
    second = sf.read(studio.datasets.clip_audio(info.id, clips[1].id))[0]
    np.testing.assert_array_equal(first[48000:64000], second[:16000])


def test_default_window_is_the_models(studio):
    wav(studio.imports / "w" / "a.wav", 31.0)
    (studio.imports / "w" / "a.txt").write_text("calm bass")
    info = studio.datasets.create(folder_req("w"))
    assert info.max_clip_s == 30.0 and [c.duration_s for c in studio.datasets.clips(info.id)] == [30.0, 1.0]


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def test_44k_stereo_is_resampled_to_the_models_rate_and_channels(studio):
    d = studio.imports / "hifi"
    d.mkdir()
    t = np.arange(int(44100 * 2.5)) / 44100
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    sf.write(d / "a.flac", np.stack([left, 0.5 * left], axis=1).astype(np.float32), 44100)
    (d / "a.txt").write_text("a tone")
    info = studio.datasets.create(folder_req("hifi"))
    assert info.sample_rate == 32000 and info.channels == 1 and info.report.resampled_files == 1
    path = studio.datasets.clip_audio(info.id, studio.datasets.clips(info.id)[0].id)
    data, rate = sf.read(path, always_2d=True)
    assert rate == 32000 and data.shape == (80000, 1)
    assert _peak_hz(data[:, 0], rate) == pytest.approx(440, abs=1)
    assert np.abs(data[1000:-1000, 0]).max() == pytest.approx(0.375, abs=0.01)  # (1 + 0.5) / 2 of 0.5


def test_mono_is_doubled_for_a_stereo_model(studio):
    wav(studio.imports / "m" / "a.ogg", 2.0, rate=22050)
    (studio.imports / "m" / "a.txt").write_text("calm bass")
    info = studio.datasets.create(folder_req("m", model_id="stereo"))
    data, rate = sf.read(studio.datasets.clip_audio(info.id, studio.datasets.clips(info.id)[0].id), always_2d=True)
    assert (info.sample_rate, info.channels, rate, data.shape) == (48000, 2, 48000, (96000, 2))
    np.testing.assert_array_equal(data[:, 0], data[:, 1])


def test_to_channels():
    x = np.array([[1.0, 3.0, 5.0]], np.float32)
    assert to_channels(x, 1).tolist() == [[3.0]] and to_channels(x, 2).tolist() == [[1.0, 3.0]]
    assert to_channels(np.array([[2.0]]), 2).tolist() == [[2.0, 2.0]]


# ---- archives --------------------------------------------------------------------------------------------------
def _zip_of(folder: Path, top: str = "songs", extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.iterdir()):
            zf.writestr(f"{top}/{p.name}", p.read_bytes())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_an_uploaded_archive_gives_the_same_dataset_as_its_folder(studio, tmp_path):
    made = write_tone_folder(tmp_path / "src", n=4, seconds=2.0, captions="jsonl")
    archive = tmp_path / "upload.bin"
    archive.write_bytes(_zip_of(tmp_path / "src", extra={"songs/clip.m4a": b"\0",
                                                         "__MACOSX/songs/._clip_000.wav": b"x"}))
    info = studio.datasets.create(CreateDatasetRequest(source="upload"), upload=archive, upload_name="songs.zip")
    assert info.name == "songs" and info.source == "upload:songs.zip" and info.clips == 4
    assert [(p.file, p.code) for p in info.report.problems] == [("clip.m4a", "unsupported_format")]
    assert [(c.source_file, c.caption) for c in studio.datasets.clips(info.id)] == made
    write_tone_folder(studio.imports / "same", n=4, seconds=2.0, captions="jsonl")
    assert studio.datasets.create(folder_req("same")).content_hash == info.content_hash
    assert list((studio.settings.data_dir / "datasets").glob(".incoming-*")) == []


def test_an_archive_entry_pointing_outside_is_refused(studio, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"hello"
        info = tarfile.TarInfo("../evil.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(InvalidRequest) as refused:
        studio.datasets.create(CreateDatasetRequest(source="upload"), upload=archive, upload_name="evil.tar.gz")
    assert refused.value.code == "invalid_archive"
    nothing_created(studio)


# ---- versions: edits, exclusion ---------------------------------------------------------------------------------
@pytest.fixture
def tones(studio):
    write_tone_folder(studio.imports / "tones", n=6, seconds=2.0)
    info = studio.datasets.create(folder_req("tones"))
    return studio, info, studio.datasets.clips(info.id)


def test_caption_edits_bump_the_version_and_change_the_hash(db_url, tones):
    ctx, info, clips = tones
    assert info.version == 1
    assert info.content_hash == content_hash([(h, c.caption) for h, c in
                                              zip([t.hash for t in ctx.datasets.training_clips(info.id)[1]], clips)])
    edited = ctx.datasets.edit_clips(info.id, ClipsEdit(captions=[ClipCaption(id=clips[0].id, caption="warm bass")]))
    assert edited.version == 2 and edited.content_hash != info.content_hash
    assert ctx.datasets.clips(info.id)[0].caption == "warm bass"
    same = ctx.datasets.edit_clips(info.id, ClipsEdit(captions=[ClipCaption(id=clips[0].id, caption="warm bass")]))
    assert (same.version, same.content_hash) == (2, edited.content_hash)  # nothing changed: no new version
    back = ctx.datasets.edit_clips(info.id, ClipsEdit(captions=[ClipCaption(id=clips[0].id, caption="calm bass")]))
    assert back.version == 3 and back.content_hash == info.content_hash  # the hash says what is trained on


def test_bulk_edits_on_chosen_clips(tones):
    ctx, info, clips = tones
    chosen = [clips[0].id, clips[1].id]
    out = ctx.datasets.edit_clips(info.id, ClipsEdit(clip_ids=chosen, find="bass", replace="cello", prefix="lofi ",
                                                     suffix=", 90 bpm"))
    assert out.version == 2
    assert [c.caption for c in ctx.datasets.clips(info.id)][:3] == [
        "lofi calm cello, 90 bpm", "lofi fast synth, 90 bpm", "calm bass"]
    ctx.datasets.edit_clips(info.id, ClipsEdit(caption="a tone"))  # every clip
    assert {c.caption for c in ctx.datasets.clips(info.id)} == {"a tone"}


def test_exclusion_leaves_clips_out_of_training_and_the_hash(tones):
    ctx, info, clips = tones
    out = ctx.datasets.edit_clips(info.id, ClipsEdit(clip_ids=[clips[1].id, clips[2].id], excluded=True))
    assert (out.version, out.clips, out.excluded) == (2, 4, 2) and out.content_hash != info.content_hash
    summary, used = ctx.datasets.training_clips(info.id)
    assert [c.clip_id for c in used] == [clips[0].id] + [c.id for c in clips[3:]]
    assert summary.version == 2 and summary.content_hash == out.content_hash
    assert all(c.file.is_absolute() and c.file.is_file() for c in used)
    # an excluded clip may have an empty caption; a used one may not
    ctx.datasets.edit_clips(info.id, ClipsEdit(clip_ids=[clips[1].id], caption=""))
    with pytest.raises(InvalidValues) as refused:
        ctx.datasets.edit_clips(info.id, ClipsEdit(clip_ids=[clips[1].id], excluded=False))
    assert refused.value.code == "empty_caption"
    back = ctx.datasets.edit_clips(info.id, ClipsEdit(clip_ids=[clips[1].id], caption="fast synth", excluded=False))
    ctx.datasets.edit_clips(info.id, ClipsEdit(clip_ids=[clips[2].id], excluded=False))
    assert ctx.datasets.get(info.id).content_hash == info.content_hash and back.clips == 5
    ctx.datasets.edit_clips(info.id, ClipsEdit(excluded=True))
    with pytest.raises(InvalidRequest) as refused:
        ctx.datasets.training_clips(info.id)
    assert refused.value.code == "dataset_empty"


@pytest.mark.parametrize("edit,code", [
    (lambda ids: ClipsEdit(captions=[ClipCaption(id=99999, caption="x")]), "clip_not_found"),
    (lambda ids: ClipsEdit(clip_ids=[ids[0], 99999], excluded=True), "clip_not_found"),
    (lambda ids: ClipsEdit(clip_ids=[ids[0]], caption="  "), "empty_caption"),
    (lambda ids: ClipsEdit(clip_ids=[ids[0]], prefix="x" * 1995), "caption_too_long"),
])
def test_bad_edits_are_refused_and_change_nothing(tones, edit, code):
    ctx, info, clips = tones
    with pytest.raises(InvalidValues) as refused:
        ctx.datasets.edit_clips(info.id, edit([c.id for c in clips]))
    assert refused.value.code == code
    assert ctx.datasets.get(info.id).version == 1 and ctx.datasets.clips(info.id) == clips


def test_clips_of_another_dataset_are_not_found(tones):
    ctx, info, clips = tones
    write_tone_folder(ctx.imports / "other", n=2, seconds=2.0)
    other = ctx.datasets.create(folder_req("other"))
    with pytest.raises(NotFound):
        ctx.datasets.clip_audio(other.id, clips[0].id)
    with pytest.raises(InvalidValues):
        ctx.datasets.edit_clips(other.id, ClipsEdit(clip_ids=[clips[0].id], excluded=True))


# ---- delete --------------------------------------------------------------------------------------------------
def test_delete_is_refused_while_a_run_uses_it_then_removes_the_files(tones):
    ctx, info, _clips = tones
    folder = ctx.settings.data_dir / "datasets"
    with session_scope(ctx.engine) as session:
        run = TrainingRun(name="r", method="sft", model_id="studio-tiny", dataset_id=info.id, folder="training/runs/1",
                          status="running")
        session.add(run)
        session.commit()
        run_id = run.id
    with pytest.raises(Conflict) as refused:
        ctx.datasets.delete(info.id)
    assert refused.value.code == "dataset_in_use" and refused.value.extra["run_ids"] == [run_id]
    with session_scope(ctx.engine) as session:
        session.get(TrainingRun, run_id).status = "succeeded"
        session.commit()
    deleted = ctx.datasets.delete(info.id)
    assert deleted.id == info.id
    assert [p for p in folder.iterdir()] == []
    with pytest.raises(NotFound) as gone:
        ctx.datasets.get(info.id)
    assert gone.value.code == "dataset_not_found"
    assert ctx.datasets.list() == []
    with session_scope(ctx.engine) as session:  # soft: the record stays for the runs that trained on it
        assert session.get(Dataset, info.id).deleted_at is not None


def test_a_killed_studio_leaves_no_half_dataset(tones):
    ctx, info, _clips = tones
    folder = ctx.settings.data_dir / "datasets"
    (folder / ".incoming-x" / "dataset").mkdir(parents=True)  # killed while preparing
    (folder / "0123abcd").mkdir()  # killed between the files' rename and the record
    recover_interrupted_work(ctx.settings, ctx.engine)
    with session_scope(ctx.engine) as session:
        live = session.get(Dataset, info.id).folder
    assert [p.name for p in folder.iterdir()] == [Path(live).name]
    assert ctx.datasets.clips(info.id) and ctx.datasets.training_clips(info.id)[1][0].file.is_file()


def test_progress_is_reported(studio):
    write_tone_folder(studio.imports / "tones", n=3, seconds=2.0)
    seen = []
    studio.datasets.create(folder_req("tones"), on_progress=lambda f, m: seen.append((f, m)))
    assert seen[-1] == (1.0, "Done") and any("clip_001.wav" in m for _f, m in seen)
    fractions = [f for f, _m in seen if f is not None]
    assert fractions == sorted(fractions)


def test_listing_counts(tones):
    ctx, info, clips = tones
    ctx.datasets.edit_clips(info.id, ClipsEdit(clip_ids=[clips[0].id], excluded=True))
    [summary] = ctx.datasets.list()
    assert (summary.clips, summary.excluded, summary.version) == (5, 1, 2)
    assert summary.total_minutes == pytest.approx(10 / 60, abs=1e-3)
    assert json.loads(ctx.datasets.get(info.id).model_dump_json())["report"]["files_found"] == 6


def test_per_clip_edits_of_captions_and_exclusion_are_one_version(db_url, tones):
    ctx, info, clips = tones
    out = ctx.datasets.edit_clips(info.id, ClipsEdit(captions=[
        ClipCaption(id=clips[0].id, excluded=True), ClipCaption(id=clips[1].id, caption="fast  synth pad"),
        ClipCaption(id=clips[2].id, caption="calm bass", excluded=False)]))  # clip 2: unchanged
    assert (out.version, out.clips, out.excluded) == (2, 5, 1)
    now = ctx.datasets.clips(info.id)
    assert [(c.caption, c.excluded) for c in now[:3]] == [("calm bass", True), ("fast synth pad", False),
                                                          ("calm bass", False)]


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3"])
def test_every_supported_format_is_read(studio, suffix):
    made = write_tone_folder(studio.imports / "fmt", n=2, seconds=1.5, suffix=suffix, sample_rate=44100)
    info = studio.datasets.create(folder_req("fmt"))
    assert info.report.problems == [] and info.clips == 2
    assert [c.source_file for c in studio.datasets.clips(info.id)] == [name for name, _ in made]
    for clip in studio.datasets.clips(info.id):
        assert clip.duration_s == pytest.approx(1.5, abs=0.06)  # mp3 may add or drop a few ms of padding


def test_too_many_entries_is_refused(studio, monkeypatch):
    import studio.services.datasets as datasets
    monkeypatch.setattr(datasets, "MAX_ENTRIES", 5)
    write_tone_folder(studio.imports / "many", n=4, seconds=1.0)
    with pytest.raises(InvalidRequest) as refused:
        studio.datasets.create(folder_req("many"))
    assert refused.value.code == "too_many_files"
    nothing_created(studio)


def test_a_metadata_file_linking_out_of_the_roots_is_refused(studio, tmp_path):
    (tmp_path / "secret.csv").write_text("file_name,text\n")
    d = studio.imports / "meta"
    wav(d / "a.wav", 1.5)
    os.symlink(tmp_path / "secret.csv", d / "metadata.csv")
    with pytest.raises(InvalidRequest) as refused:
        studio.datasets.create(folder_req("meta"))
    assert refused.value.code == "path_not_allowed"


def test_a_csv_the_reader_refuses_is_a_problem_not_a_failure(studio):
    d = studio.imports / "csvq"
    wav(d / "a.wav", 1.5)
    (d / "a.txt").write_text("calm bass")
    (d / "metadata.csv").write_text('file_name,text\n"a.wav","' + "x" * 200_000 + '"\n')  # over csv's field limit
    info = studio.datasets.create(folder_req("csvq"))
    assert info.clips == 1 and [p.code for p in info.report.problems] == ["unreadable"]


def test_an_unreadable_file_is_reported_without_the_servers_paths(ctx, tmp_path):
    folder = ctx.settings.data_dir / "imports" / "junk-names"
    write_tone_folder(folder, n=2, seconds=1.5)
    (folder / "bad.wav").write_bytes(b"junk" * 10)
    (folder / "bad.txt").write_text("calm bass", encoding="utf-8")
    info = ctx.datasets.create(CreateDatasetRequest(source="folder", path=str(folder), model_id="studio-tiny"))
    bad = [p for p in info.report.problems if p.file == "bad.wav"]
    assert [p.code for p in bad] == ["unreadable"] and "Format not recognised" in bad[0].message
    assert str(ctx.settings.data_dir) not in bad[0].message and "/" not in bad[0].message
