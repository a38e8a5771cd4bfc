"""The A/B tests tab's helpers as plain functions: the blind players, user text escaped wherever rendered, and the
form's refusals as messages (never a traceback)."""
from __future__ import annotations

import gradio as gr
import pytest

from studio.services.abtests import ABResults, ABSideInfo, BlindPair, ListenerResult, NextPair
from studio.services.stats import sign_test
from studio.ui.abtests_tab import BASE, create_request, players_html, results_markdown

EVIL = "<img src=x onerror=alert(1)>"


def test_players_are_labelled_first_and_second_with_escaped_urls():
    pair = BlindPair(pair=3, index=1, total=4, prompt="p", duration_s=1.0,
                     first_url="/api/abtests/1/pairs/3/first?listener=a'b", second_url="/api/abtests/1/pairs/3/second")
    html = players_html(NextPair(test_id=1, listener="a'b", voted=0, total=4, done=False, pair=pair, message=""))
    assert "<b>First</b>" in html and "<b>Second</b>" in html and html.count("<audio") == 2
    assert "listener=a&#x27;b" in html and "a'b" not in html


def test_results_escape_names_and_show_the_verdict():
    side = dict(overrides={}, mean_scores={}, scored_clips={}, adapter_id=None)
    res = ABResults(side_a=ABSideInfo(side="A", label=EVIL, **side), side_b=ABSideInfo(side="B", label="v2", **side),
                    overall=sign_test(1, 9), verdict="B is better", listeners=[
                        ListenerResult(listener=EVIL, votes=10, test=sign_test(1, 9))], votes=[])
    text = results_markdown(res)
    assert "### B is better" in text
    assert text.count("\\<img") == 2 and "<img" not in text.replace("\\<img", "")  # md_escape'd: shown as written
    assert "p = 0.0215" in text and "95 % interval 55%–100%" in text


@pytest.mark.parametrize("fields, problem", [
    (dict(over_a="{temperature: 1}"), "Side A overrides: not valid JSON"),
    (dict(over_b="[1, 2]"), "Side B overrides: write an object"),
    (dict(seeds=1.5), "Seeds per prompt is a whole number (1 or more), not 1.5."),
    (dict(seeds=None), "Seeds per prompt is a whole number (1 or more)."),
    (dict(seeds=0), "seeds_per_prompt"),
])
def test_form_problems_are_messages(fields, problem):
    values = dict(name="t", side_a=BASE, over_a="", side_b=BASE, over_b="", prompts="a\nb", seeds=1, duration=1)
    with pytest.raises(gr.Error) as refused:
        create_request(**{**values, **fields})
    assert problem in refused.value.message


def test_form_makes_the_request():
    req = create_request("t", BASE, "", "7", '{"top_k": 50}', " a \n\n b ", 2, 1.5)
    assert req.prompts == ["a", "b"] and req.seeds_per_prompt == 2 and req.duration_s == 1.5
    assert req.side_a.adapter_id is None and req.side_b.adapter_id == 7 and req.side_b.overrides == {"top_k": 50}
