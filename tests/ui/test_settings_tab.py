"""The Settings tab's handlers called as Gradio calls them (no browser, no server): a failed switch ends as a
message in the switch status and leaves the header's note alone; one save gives one notice; user text in
notifications is escaped. tests/ui/test_browser.py and tests/ui/test_browser_gen_config.py drive the same in Chromium."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from studio.errors import NotFound
from studio.ui.app import build_ui
from studio.ui.common import notify_text, status_line, user_errors
from studio.ui.settings_tab import switch_events
from tests.conftest import registry_dict

EVIL = '<img src="https://evil.example/x.png"><a href="https://evil.example">click</a>'


# ---- notifications: user text shows as written ---------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    (EVIL, '&lt;img src="https://evil.example/x.png"&gt;&lt;a href="https://evil.example"&gt;click&lt;/a&gt;'),
    ("<form action=x><input></form>", "&lt;form action=x&gt;&lt;input&gt;&lt;/form&gt;"),
    ("lofi & chill", "lofi &amp; chill"),
    ("&lt;already&gt;", "&amp;lt;already&amp;gt;"),  # shown as typed, not decoded
    ("Unknown adapter 'it's'", "Unknown adapter 'it's'"),  # quotes are harmless in text: kept readable
    ("plain name v2", "plain name v2"),
    (42, "42"),
])
def test_notify_text_escapes_html(text, expected):
    assert notify_text(text) == expected


def test_domain_errors_reach_the_page_escaped():
    with pytest.raises(gr.Error) as info, user_errors():
        raise NotFound(f"Unknown adapter '{EVIL}'")
    assert "<img" not in info.value.message and "&lt;img" in info.value.message


# ---- a failed switch ----------------------------------------------------------------------------------------------
FAILED = [  # (model id, what the message says)
    ("huge", "needs about"),  # does not fit in memory
    ("tiny-hub", "Could not download Tiny Hub"),  # no hub to download it from
    ("nope", "Unknown model 'nope'"),  # refused before anything starts
]


@pytest.mark.parametrize("model_id, reason", FAILED, ids=[m for m, _ in FAILED])
def test_failed_switch_ends_as_a_status_message_and_the_note_stays(ctx, model_id, reason):
    before = ctx.models.current()
    assert before.model.id == "studio-tiny" and before.note
    updates = []
    with pytest.raises(gr.Error) as info:
        for status, _card in switch_events(ctx, model_id, lambda *a, **k: None):
            updates.append(status)
    last = updates[-1]
    assert "The model was not switched." in last and reason in last
    # Scripts (gradio_client) still get an error; the page shows no second notice over the status.
    assert info.value.visible is False and reason in info.value.message
    after = ctx.models.current()
    assert after.model.id == "studio-tiny" and after.note == before.note  # the header's "why this model"
    assert reason not in status_line(after)


def test_a_failure_that_leaves_no_model_is_the_note(make_ctx):
    """With nothing loaded, the header's note says why nothing is: the failed switch."""
    ctx = make_ctx()
    final = ctx.manager.switch_and_wait("huge")
    assert final.stage == "error" and ctx.models.current().model is None
    assert ctx.models.current().note == final.message
    assert "needs about" in status_line(ctx.models.current())


def test_a_switch_streams_plain_text_and_the_header_says_why_the_model_is_loaded(make_ctx):
    ctx = make_ctx(registry_dict(**{"tiny-b": {"display_name": "Tiny B"}}))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    updates = [status for status, _ in switch_events(ctx, "tiny-b", lambda *a, **k: None)]
    assert all(isinstance(u, str) and "not switched" not in u for u in updates)  # scripts get text
    assert any("Loading Tiny B" in u for u in updates) and updates[-1] == "✅ Tiny B is ready."
    cur = ctx.models.current()
    assert cur.model.id == "tiny-b" and cur.note.startswith("Tiny B was chosen on the page (")
    assert "Tiny B was chosen on the page" in status_line(cur)


# ---- one notice per save --------------------------------------------------------------------------------------------
def _fn(demo: gr.Blocks, name: str):
    fns = [f for f in demo.fns.values() if getattr(f.fn, "__name__", None) == name]
    assert fns, name
    return fns[0]


@pytest.fixture
def page(make_ctx, monkeypatch):
    """A page's handlers (built by build_ui) over a studio whose loaded model's name is HTML, and the notices
    they give."""
    ctx = make_ctx(registry_dict(**{"evil": {"display_name": EVIL}}))
    assert ctx.manager.switch_and_wait("evil").stage == "ready"
    notices: list[str] = []
    monkeypatch.setattr(gr, "Info", notices.append)
    demo = build_ui(ctx)
    return SimpleNamespace(ctx=ctx, demo=demo, notices=notices, refresh=_fn(demo, "refresh"), save=_fn(demo, "save"))


def _refresh(page, seen, saved_here):
    args = [getattr(c, "value", None) for c in page.refresh.inputs]
    out = page.refresh.fn(seen, saved_here, *args[2:])
    return out[1]  # the page's key: (model id, when its settings were saved)


def _save_top_k(page, value: int):
    data = {c: getattr(c, "value", None) for c in page.save.inputs}
    panel_model = next(c for c in page.save.inputs if c.elem_id == "config-model")
    top_k = next(c for c in page.save.inputs if c.elem_id == "cfg-top_k")
    data[panel_model], data[top_k] = "evil", value
    data[next(c for c in page.save.inputs if isinstance(c, gr.State))] = page.ctx.gen_config.get("evil").values
    out = page.save.fn(data, SimpleNamespace(username=None))
    return out[-1]  # the page's mark of its own save


def test_one_save_gives_one_notice_and_user_text_in_it_is_escaped(page):
    seen = _refresh(page, None, None)  # the page opens
    assert page.notices == []
    mark = _save_top_k(page, 100)
    assert page.ctx.gen_config.get("evil").values["top_k"] == 100
    assert len(page.notices) == 1 and page.notices[0].startswith("Saved the settings of &lt;img")
    assert "<img" not in page.notices[0] and "The Generate tab starts from them now." in page.notices[0]
    # The page's 2 s refresh sees the new settings, follows them, and says nothing more.
    new_seen = _refresh(page, seen, mark)
    assert new_seen != seen and len(page.notices) == 1


def test_settings_saved_elsewhere_are_announced_once_by_the_refresh(page):
    seen = _refresh(page, None, None)
    page.ctx.gen_config.update("evil", {"top_k": 64}, by="script")  # the REST API, another page
    seen = _refresh(page, seen, None)
    assert len(page.notices) == 1 and "were saved" in page.notices[0] and "&lt;img" in page.notices[0]
    _refresh(page, seen, None)
    assert len(page.notices) == 1  # once


# ---- the header: which model is loaded and why ----------------------------------------------------------------------
def _current(ctx, state="idle", loaded=True, note="Studio Tiny was asked for (--model).", progress=None):
    from studio.runtime.progress import ProgressEvent
    from studio.services.models import CurrentModel

    return CurrentModel(model=ctx.models.get("studio-tiny") if loaded else None, state=state,
                        activity="generating job 3" if state == "generating" else None, note=note,
                        progress=ProgressEvent(stage="downloading", message=progress) if progress else None)


@pytest.mark.parametrize("state, loaded, progress, says, not_says", [
    ("idle", True, None, ["Model: Studio Tiny", "up to 30 s", "Studio Tiny was asked for (--model)."],
     ["Switching", "Busy"]),
    ("generating", True, None, ["Model: Studio Tiny", "generating job 3", "was asked for"], ["Switching", "Busy"]),
    ("idle", False, None, ["No model loaded.", "was asked for"], ["Model: Studio Tiny"]),
    ("switching", True, "Downloading Tiny Hub (40%)",
     ["Switching model:", "Downloading Tiny Hub (40%)", "Jobs submitted now wait for it",
      "Loaded until then: Studio Tiny."], ["was asked for", "Busy"]),
    ("switching", False, "Loading Tiny Hub", ["Switching model:", "Loading Tiny Hub"], ["Loaded until then", "Busy"]),
])
def test_header_says_which_model_is_loaded_and_why(ctx, state, loaded, progress, says, not_says):
    import html

    # as read on the page: Markdown's escapes (user and registry text is escaped, md_escape) resolved
    line = html.unescape(status_line(_current(ctx, state, loaded, progress=progress)).replace("\\", ""))
    for text in says:
        assert text in line, (text, line)
    for text in not_says:
        assert text not in line, (text, line)


def test_a_model_from_a_folder_is_not_said_to_download():
    """A custom model from a local folder has nothing to download: its card says the weights' size on disk and
    that they load from the folder; a hub repo's still says Download."""
    from studio.services.custom_models import CustomModelPreview
    from studio.ui.custom_models_panel import preview_text

    fields = dict(id="mymodel", display_name="My Model", architecture="MusicgenForConditionalGeneration",
                  channels=1, codebooks=4, conditioning=["text"], sample_rate=32000, frame_rate=50.0,
                  parameters=741_000, max_duration_s=30.0, max_extended_duration_s=180.0, memory_gb=1.0,
                  download_gb=0.01)
    folder = preview_text(CustomModelPreview(source="folder:/data/imports/mymodel", **fields), added=True)
    assert "| Weights on disk |" in folder and "| Download |" not in folder and "load from the folder" in folder
    hub = preview_text(CustomModelPreview(source="hub:org/name", **fields), added=True)
    assert "| Download |" in hub and "download then" in hub
