"""The Adapters tab's metrics as text: the performance panel, the comparison table with verdicts in plain words, the
version timeline's rating and score, the comparison view's choices and refusals; user text escaped throughout."""
from __future__ import annotations

from datetime import datetime, timezone

import gradio as gr
import pytest
from sqlmodel import Session

from studio.services.adapters import TimelineEntry
from studio.services.metrics import TimelineFigures
from studio.ui.adapter_metrics_view import (compare_choices, compare_text, comparison_markdown, default_pair,
                                            performance_markdown, performance_or_note, timeline_cells,
                                            version_choices)
from studio.ui.adapters_tab import detail_updates, history_markdown
from tests.metrics_seed import Seeder

NASTY = "<img src=x onerror=alert(1)>|*b*"
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def seeded(make_module_ctx):
    ctx = make_module_ctx()
    with Session(ctx.engine) as session:
        s = Seeder(session)
        v1 = s.adapter(NASTY, 1, training_metrics={"loss": [2.0, 1.5]})
        v2 = s.adapter(NASTY, 2, training_metrics={"loss": [1.0, 0.5]})
        other = s.adapter("keys", 1, base="tiny-b")
        for stars in (5, 5, 4, 5, 5, 4):
            s.job("piano", v2, ratings={"alice": stars})
        s.job("piano", v1, ratings={"alice": 3, "bob": 2})
        s.job("piano", None, ratings={"alice": 1})
        s.abtest(f"test {NASTY}", v1, v2, {"a": 0, "b": 7, "none": 1})
        s.abtest("vs base", v1, None, {"a": 2}, overrides_a={"temperature": 0.5})
        s.evaluation(v1, ["piano"], [1, 2], [0.2, 0.3])
        ids = {"v1": v1.id, "v2": v2.id, "other": other.id}
    return ctx, ids


def test_performance_panel_shows_the_base_beside_and_escapes_names(seeded):
    ctx, ids = seeded
    text = performance_markdown(ctx.metrics.performance(ids["v1"]))
    assert "<img" not in text.replace("\\<img", "")
    assert "\\<img src=x onerror=alert\\(1\\)\\>\\|\\*b\\*" in text  # as written, never markup
    assert "| Average rating | 2.50 ★ (2 ratings) | 1.00 ★ (1 rating) |" in text
    assert ("| Ratings (1★ to 5★) | 1★ 0 · 2★ 1 · 3★ 1 · 4★ 0 · 5★ 0 | 1★ 1 · 2★ 0 · 3★ 0 · 4★ 0 · 5★ 0 |"
            in text)
    assert "| Evaluation score | 0.250 (2 clips, clap-tiny, run 1) | — (no run) |" in text
    assert "2 won, 7 lost, 1 tie (2 tests)" in text and "against this version: 0 won, 2 lost, 0 ties" in text
    assert "Studio Tiny (base model) with temperature 0.5" not in text  # the overrides are this side's
    assert "with temperature 0.5 | Studio Tiny \\(base model\\)" in text
    assert "Only tests revealed to everyone count" in text


def test_performance_note_for_an_unknown_adapter(seeded):
    ctx, _ = seeded
    assert performance_or_note(ctx, 999_999) == "*Performance not available: There is no adapter 999999.*"


def test_comparison_table_has_verdicts_and_samples_in_plain_words(seeded):
    ctx, ids = seeded
    text = comparison_markdown(ctx.metrics.compare(ids["v1"], ids["v2"]))
    name = "\\<img src=x onerror=alert\\(1\\)\\>\\|\\*b\\*"
    assert f"#### {name} v1 (A) vs {name} v2 (B)" in text and "<img" not in text.replace("\\<img", "")
    assert f"| Training loss, final (best) | 1.5 (1.5) | 0.5 (0.5) | 2 and 2 logged values | Lower: {name} v2" in text
    # 2 vs 6 ratings: 2 / C(8, 2) = 0.071 cannot be significant; 3 + 7 can (2 / 120)
    assert "| Average rating | 2.50 (2) | 4.67 (6) | 2 and 6 ratings | ⏳ Not enough data: 1 more needed |" in text
    # 7 of 7 decisive votes for B: p = 2 / 128
    assert f"| Blind A/B votes | 0 won (0%) | 7 won (100%) | 7 decisive votes, 1 tie | ✅ **{name} v2 is better** " \
           "(p = 0.0156) |" in text
    assert "| Evaluation score | 0.250 (2) | — (0) |" in text and "No evaluation run of" in text


def test_comparison_of_different_base_models_says_why(seeded):
    ctx, ids = seeded
    text = comparison_markdown(ctx.metrics.compare(ids["v1"], ids["other"]))
    assert "⚠️ **Not comparable.**" in text and "different base models" in text
    assert text.count("| Not comparable |") == 3


@pytest.mark.parametrize("a, b, message", [
    (None, "2", "Choose two versions"),
    ("1", "", "Choose two versions"),
    ("1", "1", "two different"),
    ("1", "999999", "There is no adapter 999999"),
    ("x", "1", "Choose the versions in the lists"),
])
def test_compare_refusals_are_messages(seeded, a, b, message):
    ctx, _ = seeded
    with pytest.raises(gr.Error) as err:
        compare_text(ctx, a, b)
    assert message in str(err.value.message)


def test_timeline_shows_rating_and_score(seeded):
    ctx, ids = seeded
    entries = [TimelineEntry(id=ids[v], version=n, trained_at=None, created_at=NOW, final_loss=None, loss=None,
                             status="active", training_run_id=None, training_run_url=None)
               for n, v in ((1, "v1"), (2, "v2"))]
    text = history_markdown(NASTY, entries, ids["v1"], ctx.metrics.timeline_figures([ids["v1"], ids["v2"]]))
    assert "| Rating (n) | Eval score (n) |" in text
    assert "| — | 2.50 (2) | 0.250 (2) | — |" in text and "| — | 4.67 (6) | — | — |" in text
    assert timeline_cells(None) == ("—", "—")
    assert timeline_cells(TimelineFigures(adapter_id=1, rating_mean=None, ratings=0, evaluation_mean=0.5,
                                          evaluation_n=3)) == ("—", "0.500 (3)")


def test_detail_view_carries_the_performance(seeded):
    ctx, ids = seeded
    out = detail_updates(ctx, ids["v2"], None)
    assert out[0] == ids["v2"] and "#### Performance of" in out[-1] and "4.67 ★ (6 ratings)" in out[-1]
    assert "4.67 (6)" in out[5]  # the timeline
    assert detail_updates(ctx, 999_999, None)[-1] == ""


def test_version_choices_and_default_pair(seeded):
    ctx, ids = seeded
    live, deleted = ctx.adapters.list(), ctx.adapters.list(deleted=True)
    choices = version_choices(live, deleted)
    assert [c[1] for c in choices] == [str(ids["v1"]), str(ids["v2"]), str(ids["other"])]  # by name, version
    assert choices[2][0] == "keys v1 · tiny-b"
    assert default_pair(choices, live, ids["v2"]) == (str(ids["v2"]), str(ids["v1"]))  # the one before it
    assert default_pair(choices, live, ids["v1"]) == (str(ids["v1"]), str(ids["v2"]))  # else another version
    assert default_pair(choices, live, None)[0] == choices[0][1]
    assert default_pair([], [], None) == (None, None)


def test_opening_the_comparison_lists_every_version(seeded, make_module_ctx):
    ctx, ids = seeded
    a, b, hint = compare_choices(ctx, ids["v2"])
    assert (a.value, b.value, hint) == (str(ids["v2"]), str(ids["v1"]), "")
    assert len(a.choices) == 3 and a.choices == b.choices
    empty = make_module_ctx()
    a, b, hint = compare_choices(empty, None)
    assert (a.value, b.value, a.choices) == (None, None, []) and "Register two versions" in hint
