"""The History tab's logic, without a browser: filter widgets become the service's query, user text is escaped in
the details, a deleted adapter is said, and the Generate tab's stars show for each take that succeeded."""
from __future__ import annotations

import re

import gradio as gr
import pytest

from studio.services.jobs import JobQuery
from studio.users import Actor
from studio.ui.generate_tab import rating_updates
from studio.ui.history_tab import PAGE_SIZE, detail_markdown, history_page, history_query, table_rows
from studio.ui.queue_panel import EVERYONE, user_dropdown
from tests.conftest import job_names, seed_history

DEFAULT = ["", "any", "any", "any", "any", "", "person", "newest"]  # text, model, adapter, status, rating, who, ...


def widgets(**changed) -> list:
    names = ["text", "model", "adapter", "status", "rating", "who", "source", "sort"]
    return [changed.get(n, v) for n, v in zip(names, DEFAULT)]


@pytest.mark.parametrize("changed, expected", [
    ({}, {}),
    ({"text": "  piano "}, {"text": "piano"}),
    ({"model": "studio-tiny"}, {"model_id": "studio-tiny"}),
    ({"adapter": "none"}, {"adapter": "none"}),
    ({"adapter": "7"}, {"adapter": 7}),
    ({"status": "failed"}, {"status": "failed"}),
    ({"rating": "unrated"}, {"rated": False}),
    ({"rating": "rated"}, {"rated": True}),
    ({"rating": "4+"}, {"min_rating": 4}),
    ({"rating": "5+"}, {"min_rating": 5}),
    ({"rating": "-2"}, {"max_rating": 2}),
    ({"who": " alice "}, {"submitted_by": "alice"}),
    ({"source": "all", "sort": "best_rated"}, {"source": "all", "sort": "best_rated"}),
])
def test_filter_widgets_become_the_query(changed, expected):
    query = history_query(*widgets(**changed), 40)
    assert query == JobQuery(**{"limit": PAGE_SIZE, "offset": 40, **expected})


@pytest.mark.parametrize("changed", [{"status": "done"}, {"sort": "random"}, {"source": "mine"}, {"adapter": "x"},
                                     {"rating": "best"}])
def test_values_the_widgets_never_offer_are_refused_with_a_message(changed):
    with pytest.raises(gr.Error):
        history_query(*widgets(**changed), 0)


@pytest.fixture(scope="module")
def seeded(make_module_ctx):
    ctx = make_module_ctx()
    return ctx, seed_history(ctx)


def test_details_escape_user_text_and_say_a_deleted_adapter(seeded):
    ctx, ids = seeded
    from studio.db.engine import session_scope
    from studio.db.jobs import get_job
    with session_scope(ctx.engine) as s:
        job = get_job(s, ids["jazz"])
        job.prompt, job.submitted_by = "<img src=x onerror=alert(1)> *jazz* [link](http://x.y)", "<b>eve</b>"
        s.add(job)
        s.commit()
    info = ctx.jobs.get(ids["jazz"])
    text = detail_markdown(ctx, info)
    # every character Markdown or HTML would act on is escaped (md_escape: shown as written)
    assert not re.search(r"(?<!\\)[<*\[]", text.split("| Prompt |")[1].split("\n")[0])
    assert "\\<b\\>eve" in text
    assert "**Deleted Adapter**" in text and "playable" in text
    row = table_rows(ctx, [info])[0]
    assert row[2].startswith("<img src=x")  # the table shows text as written (a plain-text column)
    assert row[4] == "⚠ Deleted Adapter"


def test_the_generate_tabs_stars_show_for_each_succeeded_take(seeded):
    ctx, ids = seeded
    one = rating_updates(ctx, [ids["piano"]], Actor("alice", "admin"))
    assert one[0].visible is True and one[0].value == 5 and "average 4.0 ★ from 2" in one[0].label
    assert all(r.visible is False for r in one[1:])
    takes = rating_updates(ctx, [ids["piano"], ids["failed"], ids["drone"]], Actor("bob", "admin"))
    assert takes[0].visible is False  # several takes: a radio under each take instead
    assert [r.visible for r in takes[1:]] == [True, False, True, False]  # the failed take has nothing to rate
    assert takes[1].value == 3 and takes[3].value == 0
    assert rating_updates(ctx, [ids["ab"]], Actor("bob", "admin"))[0].visible is False  # never an A/B clip


@pytest.mark.parametrize("actor, who, expected", [
    (Actor("alice", "member"), EVERYONE, ["failed", "piano"]),  # a member: their own jobs
    (Actor("alice", "member"), "bob", []),  # the filter (hidden to members) cannot reach another's
    (Actor("root", "admin"), EVERYONE, ["waiting", "failed", "jazz", "drone", "piano"]),
    (Actor("root", "admin"), "bob", ["drone"]),
])
def test_the_user_filter_lists_one_persons_jobs_for_an_admin_and_a_member_sees_their_own(seeded, actor, who,
                                                                                           expected):
    ctx, ids = seeded
    _, page = history_page(ctx, actor, widgets(who=who), 0)
    assert [job_names(ids)[j.id] for j in page.items] == expected
    shown = user_dropdown(ctx, actor)
    assert shown.visible is actor.is_admin
    choices = [v for _, v in shown.choices]
    assert choices[0] == EVERYONE and ({"alice", "bob"} <= set(choices) if actor.is_admin
                                       else choices == [EVERYONE, "alice"])
