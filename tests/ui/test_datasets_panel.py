"""The datasets panel's pure functions: what the page shows of a dataset, its report and clips, and how the grid's
and the bulk form's values become one edit."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from studio.services.datasets import ClipInfo, DatasetInfo, DatasetReport, ReportProblem
from studio.ui.datasets_panel import (bulk_edit, clip_rows, create_request, dataset_choices, grid_edit,
                                      parse_selection, refusal_markdown, report_markdown, summary_markdown)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def clip(i: int, caption: str = "calm bass", excluded: bool = False) -> ClipInfo:
    return ClipInfo(id=10 + i, position=i, source_file=f"clip_{i}.wav", start_s=0.0, duration_s=2.0,
                    caption=caption, excluded=excluded, audio_url=f"/api/datasets/1/clips/{10 + i}/audio")


CLIPS = [clip(0), clip(1, "fast synth"), clip(2, "calm bass", excluded=True)]


def report(problems=()) -> DatasetReport:
    return DatasetReport(files_found=3, files_used=2, clips=2, total_minutes=0.0667, sliced_files=0,
                         resampled_files=1, caption_source="sidecar .txt files", problems=list(problems))


def info(**kw) -> DatasetInfo:
    fields = dict(id=1, name="My *tones*", model_id="studio-tiny", sample_rate=32000, channels=1, max_clip_s=30.0,
                  overlap_s=0.0, clips=2, excluded=1, total_minutes=0.0667, version=3, content_hash="ab" * 32,
                  source="folder:/data/<b>tones</b>", created_by="local", created_at=NOW, updated_at=NOW,
                  report=report())
    return DatasetInfo(**{**fields, **kw})


def test_summary_shows_version_hash_and_escapes_user_text():
    text = summary_markdown(info())
    assert "version 3" in text and "sha256 abababababab…" in text and "(1 excluded)" in text
    assert "My \\*tones\\*" in text and "<b>" not in text
    assert "create one" in summary_markdown(None)


def test_choices_label_each_dataset_with_its_version():
    assert dataset_choices([info()]) == [("My *tones* v3 · 2 clips · 0.1 min", 1)]


def test_report_lists_every_problem_escaped():
    text = report_markdown(report([ReportProblem(file="a|<b>.wav", code="too_short", message="0.40 s long")]))
    assert "3 audio files found, 2 used" in text and "**2 clips**" in text and "1 problem:" in text
    assert "| a\\|\\<b\\>.wav | too short | 0.40 s long |" in text
    assert report_markdown(report()).endswith("No problems.")


def test_refusal_shows_the_report():
    text = refusal_markdown("Nothing was created: no usable clip.", report([ReportProblem(
        file="x.wav", code="unreadable", message="Not readable")]).model_dump())
    assert text.startswith("❌ **Not created.**") and "| x.wav | unreadable |" in text
    assert refusal_markdown("Give the folder's path.", None) == "❌ **Not created.** Give the folder's path."


def test_grid_rows_and_an_unchanged_grid_is_no_edit():
    frame = clip_rows(CLIPS)
    assert list(frame.columns) == ["ID", "#", "File", "Start (s)", "Length (s)", "Use", "Caption"]
    assert frame.values.tolist()[2] == [12, 3, "clip_2.wav", 0.0, 2.0, False, "calm bass"]
    assert grid_edit(CLIPS, frame) is None
    assert grid_edit(CLIPS, None) is None


def test_grid_changes_become_one_edit():
    frame = clip_rows(CLIPS).astype(object)  # as the page sends it back: any cell may come as text
    frame.loc[0, "Caption"] = "deep  bass "
    frame.loc[1, "Use"] = False
    frame.loc[2, "Use"] = "true"  # the browser may send text
    frame.loc[len(frame)] = ["x", 9, "", 0, 0, True, "a row typed in"]  # ignored: no clip has that id
    edit = grid_edit(CLIPS, frame)
    assert [(c.id, c.caption, c.excluded) for c in edit.captions] == [(10, "deep  bass ", None), (11, None, True),
                                                                      (12, None, False)]
    assert edit.clip_ids is None and edit.excluded is None


def test_a_caption_only_reflowed_is_no_change():
    frame = clip_rows(CLIPS)
    frame.loc[0, "Caption"] = " calm   bass"
    assert grid_edit(CLIPS, frame) is None


@pytest.mark.parametrize("text,expected", [
    ("", None), ("all", None), ("1", [10]), ("1-2", [10, 11]), ("3, 1 2", [12, 10, 11]), ("1-3,2", [10, 11, 12]),
])
def test_parse_selection(text, expected):
    assert parse_selection(text, CLIPS) == expected


@pytest.mark.parametrize("text,message", [("0", "no clip #0"), ("4", "no clip #4"), ("2-1", "backwards"),
                                          ("a", "not a clip number")])
def test_parse_selection_says_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_selection(text, CLIPS)


def test_bulk_edit():
    edit = bulk_edit([10], "", "bass", "cello", "lofi ", "", "Exclude them")
    assert (edit.clip_ids, edit.caption, edit.find, edit.replace, edit.prefix, edit.suffix, edit.excluded) == \
        ([10], None, "bass", "cello", "lofi ", None, True)
    assert bulk_edit(None, "", "", "", "", "", "Include them").excluded is False
    with pytest.raises(ValueError, match="Fill in"):
        bulk_edit(None, "", "", "x", "", "", "Leave as they are")


def test_create_request():
    req = create_request("Folder on the server", " tones ", "", "", 0, 0.5, 1)
    assert (req.source, req.path, req.name, req.model_id, req.max_clip_s, req.overlap_s, req.min_clip_s) == \
        ("folder", "tones", None, None, None, 0.5, 1.0)
    req = create_request("Upload archive", "ignored", "Mine", "studio-tiny", 10, None, None)
    assert (req.source, req.path, req.name, req.model_id, req.max_clip_s) == ("upload", None, "Mine", "studio-tiny",
                                                                              10.0)
    with pytest.raises(ValueError, match="overlap_s"):
        create_request("Folder on the server", "tones", "", "", 0, -1, 1)


def test_the_panel_builds_and_its_actions_have_api_names(make_ctx):
    from studio.ui.app import build_ui

    blocks = build_ui(make_ctx())
    names = {d.get("api_name") for d in blocks.config["dependencies"]}
    assert {"create_dataset", "save_dataset_grid", "edit_dataset_clips", "delete_dataset"} <= names
    assert isinstance(clip_rows([]), pd.DataFrame)
