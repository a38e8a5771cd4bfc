"""The Generate tab's limits for long pieces and its continuation fields, without a browser: the duration box takes
the extended limit and says how many windows a piece takes; a clip is saved as an upload (an unreadable one is
refused with its reason, nothing recorded); "Extend this" sends the job."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from sqlmodel import func, select

from studio.db.engine import session_scope
from studio.db.models import AudioUpload, Job
from studio.errors import InvalidRequest
from studio.registry import parse_registry
from studio.ui.continue_input import continuation_fields, continued_line, kept_seconds, length_text, windows_hint
from studio.ui.generate_tab import duration_hint, duration_info, duration_problem
from tests.conftest import registry_dict


@pytest.fixture(scope="module")
def ctx(make_module_ctx):
    return make_module_ctx(parse_registry(registry_dict(long={"max_duration_s": 30, "max_extended_duration_s": 180,
                                                              "window_stride_s": 18})))


@pytest.mark.parametrize("seconds, problem, hint", [
    (10, None, ""), (30, None, ""), (45, None, "generated in 2 windows"), (90, None, "generated in 5 windows"),
    (170, None, "near Long's limit of 180 s"), (180, None, "generated in 10 windows"),
    (181, "over Long's limit of 180 s", "over Long's limit of 180 s")])
def test_the_duration_box_takes_the_extended_limit_and_counts_windows(ctx, seconds, problem, hint):
    model = ctx.models.get("long").model_copy(update={"display_name": "Long"})
    found = duration_problem(seconds, model)
    assert (found is None) == (problem is None) and (problem is None or problem in found)
    assert hint in duration_hint(seconds, model)
    assert "up to 180 s" in duration_info(model)
    one = ctx.models.get("studio-tiny")  # no extension: one window, 30 s
    assert duration_problem(31, one) is not None and windows_hint(29, one) == ""


def test_a_clip_becomes_an_upload_and_a_bad_one_records_nothing(ctx, tmp_path):
    good = tmp_path / "hum.ogg"
    sf.write(good, (0.2 * np.sin(np.arange(48000) / 10)).astype(np.float32), 48000, format="OGG")
    fields = continuation_fields(ctx, str(good), False, None, "local")
    assert fields["include_continued"] is False and ctx.uploads.get(fields["continue_upload_id"]).format == "ogg"
    assert continuation_fields(ctx, str(good), None, 12, "local") == {"continue_job_id": 12,
                                                                      "include_continued": True}
    assert continuation_fields(ctx, None, True, None, "local") == {}
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 20)
    with session_scope(ctx.engine) as session:
        before = (session.exec(select(func.count()).select_from(AudioUpload)).one(),
                  session.exec(select(func.count()).select_from(Job)).one())
    with pytest.raises(InvalidRequest) as err:
        continuation_fields(ctx, str(bad), True, None, "local")
    assert err.value.code in ("unsupported_audio", "unreadable_audio") and "broken.wav" in err.value.message
    with session_scope(ctx.engine) as session:
        after = (session.exec(select(func.count()).select_from(AudioUpload)).one(),
                 session.exec(select(func.count()).select_from(Job)).one())
    assert after == before
    assert [p.name for p in (ctx.settings.data_dir / "uploads").iterdir() if p.name.startswith(".")] == []


def test_the_result_line_says_what_was_continued():
    assert continued_line(None) == ""
    line = continued_line({"source": "job", "job_id": 4, "seconds": 12, "trimmed_from_s": 40, "included": True})
    assert "job 4" in line and "last 12 s of 40 s" in line and "included" in line
    assert "not included" in continued_line({"source": "upload", "upload_id": "a", "seconds": 3,
                                             "trimmed_from_s": None, "included": False})


def test_the_length_counts_the_included_audio():
    """A continued clip at the start of the file is part of its length: the result line says the file's length
    (6 s for 3 s of clip + 3 s new), not the new music's alone."""
    assert length_text(3, None) == "3 s"
    assert length_text(3, {"source": "upload", "upload_id": "a", "seconds": 3, "trimmed_from_s": None,
                           "included": False}) == "3 s"
    assert length_text(3, {"source": "upload", "upload_id": "a", "seconds": 3, "trimmed_from_s": None,
                           "included": True}) == "6 s (3 s continued + 3 s new)"
    # a job is included whole, even when only its end was the model's context
    assert kept_seconds({"source": "job", "job_id": 4, "seconds": 12, "trimmed_from_s": 40, "included": True}) == 40
    assert kept_seconds({"source": "upload", "upload_id": "a", "seconds": 12, "trimmed_from_s": 40,
                         "included": True}) == 12
