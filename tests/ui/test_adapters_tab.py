"""The UI's adapter helpers as plain functions: the Generate tab's dropdown choices and hints, the Adapters tab's
list, detail and version history, the registration form (the training-configuration view: test_adapter_config_view.py)."""
from __future__ import annotations

from datetime import datetime, timezone

import gradio as gr
import pytest

from studio.errors import Conflict
from studio.services.adapters import AdapterInfo, TimelineEntry
from studio.services.models import ModelInfo
from studio.ui.adapters_tab import (FROM_CONFIG, delete_prompt, deleted_choices, detail_markdown, empty_note,
                                    history_markdown, identical_message, notify, register_request, rename_note,
                                    signature, sort_adapters, table_rows)
from studio.ui.common import NO_ADAPTER, user_errors
from studio.ui.generate_tab import (SOME_NEED_OTHER_MODEL, adapter_choices, adapter_hint, adapter_id_from,
                                    adapter_widgets, no_adapters_hint)

NOW = datetime(2025, 3, 1, 12, 30, tzinfo=timezone.utc)
TINY = ModelInfo.model_construct(id="studio-tiny", display_name="Studio Tiny", max_duration_s=30.0)
TINY_B = ModelInfo.model_construct(id="tiny-b", display_name="Tiny B", max_duration_s=12.0)
NAMES = {"studio-tiny": ("Studio Tiny", 30.0), "tiny-b": ("Tiny B", 12.0)}


def adapter(id: int, name: str, version: int = 1, base: str = "studio-tiny", *, loaded: ModelInfo | None = TINY,
            active: bool = True, **extra) -> AdapterInfo:
    """An AdapterInfo as the service returns it, compatible when its base is the loaded model."""
    compatible = loaded is not None and base == loaded.id
    fields = dict(
        id=id, name=name, version=version, description="", base_model=base, base_model_name=NAMES[base][0],
        base_model_max_duration_s=NAMES[base][1], base_model_revision=None, active=active, deleted=False,
        compatible=compatible, compatibility_note=None if compatible else f"Requires {NAMES[base][0]}", rank=4,
        alpha=8.0, target_modules=["q_proj", "v_proj"], lora_config={"r": 4, "lora_alpha": 8}, source="folder:/x",
        size_bytes=34_000, usage_count=0, training_dataset=None, training_config=None, training_metrics=None,
        training_run_id=None, trained_at=None, created_at=NOW, updated_at=NOW, deleted_at=None,
        label=f"{name} v{version}")
    fields.update(extra)
    return AdapterInfo(**fields)


# ---- Generate tab: dropdown choices and hint ------------------------------------------------------------------------
def test_compatible_adapters_listed_by_name_then_version_with_ids_as_values():
    adapters = [adapter(3, "lofi", 2), adapter(1, "lofi", 1), adapter(2, "Ambient", 1)]
    assert adapter_choices(adapters, TINY) == [(NO_ADAPTER, NO_ADAPTER), ("Ambient v1", "2"), ("lofi v1", "1"),
                                               ("lofi v2", "3")]
    assert adapter_hint(adapters, TINY) == ""


def test_incompatible_adapters_come_last_with_the_model_they_require():
    adapters = [adapter(1, "lofi"), adapter(2, "keys", base="tiny-b")]
    choices = adapter_choices(adapters, TINY)
    assert choices == [(NO_ADAPTER, NO_ADAPTER), ("lofi v1", "1"), ("keys v1 — Requires Tiny B", "2")]
    assert adapter_hint(adapters, TINY) == "ℹ️ " + SOME_NEED_OTHER_MODEL
    assert SOME_NEED_OTHER_MODEL == "Some adapters need another model: change it in Settings."


@pytest.mark.parametrize("adapters", [
    [],
    [adapter(2, "keys", base="tiny-b")],
    [adapter(1, "lofi", active=False)],  # inactive adapters are never offered
], ids=["none registered", "only incompatible", "only inactive"])
def test_none_compatible_offers_only_the_base_model_and_says_what_to_do(adapters):
    assert adapter_choices(adapters, TINY) == [(NO_ADAPTER, NO_ADAPTER)]
    hint = adapter_hint(adapters, TINY)
    assert "No adapters available for Studio Tiny. Train or import adapters, or change model in Settings." in hint
    assert no_adapters_hint("Studio Tiny") in hint
    if any(a.active for a in adapters):
        assert hint.endswith("Your active adapters need Tiny B.")


def test_the_hint_shows_model_names_as_written():  # Markdown: a name like 'My <b>mono</b> tune' is not HTML
    model = TINY.model_copy(update={"display_name": "My <b>mono</b> *tune*"})
    hint = adapter_hint([adapter(2, "keys", base="tiny-b")], model)
    assert "My \\<b\\>mono\\</b\\> \\*tune\\*" in hint and "<b>" not in hint


def test_same_base_other_weights_is_marked_not_usable():
    a = adapter(1, "lofi", compatible=False, compatibility_note="Trained on other weights than the Studio Tiny "
                                                                "loaded here")
    choices = adapter_choices([a, adapter(2, "ok")], TINY)
    assert ("lofi v1 — Not usable: Trained on other weights than the Studio Tiny loaded here", "1") in choices


def test_no_model_loaded():
    assert adapter_choices([adapter(1, "lofi", loaded=None)], None) == [(NO_ADAPTER, NO_ADAPTER)]
    assert "No model is loaded" in adapter_hint([], None)


def test_the_choice_is_kept_while_offered():  # when it is no longer usable: tests/ui/test_generate_tab.py
    adapters = [adapter(1, "lofi"), adapter(2, "keys", base="tiny-b")]
    dropdown, hint = adapter_widgets(adapters, TINY, "1")
    assert isinstance(dropdown, gr.Dropdown) and dropdown.value == "1"
    assert hint == "ℹ️ " + SOME_NEED_OTHER_MODEL


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), (NO_ADAPTER, None), ("3", 3), (" 12 ", 12), (5, 5),
    ("lofi v1", 1), ("keys v1 — Requires Tiny B", 2),  # a script may send a label too
])
def test_adapter_id_from_page_or_script_values(value, expected):
    assert adapter_id_from(value, [adapter(1, "lofi"), adapter(2, "keys", base="tiny-b")]) == expected


def test_unknown_adapter_value_is_refused():
    with pytest.raises(gr.Error, match="Unknown adapter 'nope'"):
        adapter_id_from("nope", [adapter(1, "lofi")])


# ---- Adapters tab: list, detail, history -----------------------------------------------------------------------------
def test_list_groups_versions_of_a_name_and_says_why_not_compatible():
    adapters = [adapter(4, "lofi", 2), adapter(2, "keys", base="tiny-b", active=False, usage_count=3),
                adapter(1, "lofi", 1), adapter(5, "Ambient")]
    assert [(a.name, a.version) for a in sort_adapters(adapters)] == [("Ambient", 1), ("keys", 1), ("lofi", 1),
                                                                      ("lofi", 2)]
    assert table_rows(adapters) == [
        [5, "Ambient", 1, "Studio Tiny", "Yes", "Yes", 0],
        [2, "keys", 1, "Tiny B", "No", "No: Requires Tiny B", 3],
        [1, "lofi", 1, "Studio Tiny", "Yes", "Yes", 0],
        [4, "lofi", 2, "Studio Tiny", "Yes", "Yes", 0],
    ]


def test_empty_notes():
    assert "No adapters registered yet" in empty_note([], False)
    assert "untick **Active only** to see the 1 inactive one." in empty_note([adapter(1, "a", active=False)], True)
    assert "Click a row" in empty_note([adapter(1, "a")], True)


def test_detail_view_compatible():
    a = adapter(1, "lofi", description="Warm piano", usage_count=2, training_dataset="loops")
    text = detail_markdown(a, TINY)
    for expected in ("### lofi v1", "Warm piano", "Studio Tiny (`studio-tiny`) · up to 30 s per clip",
                     "✓ Compatible with the loaded Studio Tiny", "2 generations", "rank 4, alpha 8",
                     "folder&#58;/x",  # shown as "folder:/x" (":" an entity: "https://..." never an autolink)
                     "Training data | loops", "2025-03-01 12:30 UTC", "Active: offered in the Generate tab"):
        assert expected in text, (expected, text)


def test_detail_view_incompatible_says_why_and_what_to_do():
    text = detail_markdown(adapter(2, "keys", base="tiny-b", active=False), TINY)
    assert "✗ Not usable with the loaded Studio Tiny: Requires Tiny B. Change the model in Settings" in text
    assert "Tiny B (`tiny-b`) · up to 12 s per clip" in text
    assert "Inactive: not offered for generation" in text
    assert "*No description.*" in text


def test_user_text_cannot_break_the_markdown():
    text = detail_markdown(adapter(1, "a|b*c", description="line1\n| x | y |"), TINY)
    assert "a\\|b\\*c" in text and "\\| x \\| y \\|" in text


def test_history_marks_the_version_shown():
    entries = [TimelineEntry(id=1, version=1, trained_at=None, created_at=NOW, final_loss=1.23456, loss=None,
                             status="deleted", training_run_id=None, training_run_url=None),
               TimelineEntry(id=2, version=2, trained_at=NOW, created_at=NOW, final_loss=None, loss=None,
                             status="active", training_run_id="run-7", training_run_url=None)]
    text = history_markdown("lofi", entries, 2)
    assert "#### Versions of lofi" in text
    assert "| v1 | deleted |" in text and "1.235" in text
    # the run is named without a link: there are no training-run pages yet (a link would answer 404)
    assert "**v2 (shown)** | active" in text and "| run-7 |" in text and "](" not in text


def test_delete_prompt():
    assert delete_prompt(adapter(1, "lofi", 3)) == ("**Delete lofi v3?** It will be hidden and refused for new "
                                                    "generations; past jobs keep it. **Deleted adapters** (below) "
                                                    "can restore it.")


def test_signature_changes_with_what_the_page_shows():
    a = adapter(1, "lofi")
    base = signature(TINY, [a])
    assert signature(TINY, [a]) == base
    assert signature(TINY_B, [a]) != base
    assert signature(TINY, [adapter(1, "lofi", usage_count=1)]) != base
    assert signature(TINY, [adapter(1, "lofi", active=False)]) != base


@pytest.mark.parametrize("args, expected", [
    (("Folder on the server", " my-lora ", None, None, "", 0, "", FROM_CONFIG),
     dict(source="folder", path="my-lora", name=None, version=None, base_model=None)),
    (("Hub repo", "ignored", "org/lora", "main", "Mine", 3, " about ", "tiny-b"),
     dict(source="hub", path=None, repo_id="org/lora", revision="main", name="Mine", version=3,
          description="about", base_model="tiny-b")),
    (("Upload archive", None, None, None, None, None, None, None),
     dict(source="upload", path=None, repo_id=None, version=None)),
])
def test_register_form_to_request(args, expected):
    req = register_request(*args)
    for key, value in expected.items():
        assert getattr(req, key) == value, key


def test_register_anyway_is_sent_as_allow_duplicate():
    assert register_request("Folder on the server", "x", None, None, None, None, None, None).allow_duplicate is False
    assert register_request("Folder on the server", "x", None, None, None, None, None, None, True).allow_duplicate


HOSTILE = '<img src="https://example.com/x.png"><a href="https://example.com">link</a>'


def test_notifications_escape_user_text(monkeypatch):
    """gr.Info / gr.Error render HTML: an adapter named like a tag must show as text, never load an image."""
    shown = []
    monkeypatch.setattr(gr, "Info", shown.append)
    notify(f"Registered {HOSTILE} v1.")
    [text] = shown
    assert "<" not in text and ">" not in text
    assert text.startswith("Registered &lt;img src=") and "&lt;/a&gt; v1." in text
    with pytest.raises(gr.Error) as err:
        with user_errors():
            raise Conflict(f"Adapter {HOSTILE} v1 is not deleted.")
    assert "<img" not in err.value.message and "&lt;img src=" in err.value.message


def test_rename_and_restore_texts():
    assert "every version" in rename_note("lofi") and "keeps its number" in rename_note("lofi")
    assert rename_note("a|b").count("a\\|b") == 1
    older = adapter(1, "lofi", 1, deleted=True, deleted_at=NOW)
    newer = adapter(2, "keys", 2, deleted=True, deleted_at=NOW.replace(hour=13))
    assert deleted_choices([older, newer]) == [("keys v2 (deleted 2025-03-01 13:30 UTC)", "2"),
                                               ("lofi v1 (deleted 2025-03-01 12:30 UTC)", "1")]
    assert "Register even if identical" in identical_message("lofi v1", 7) and "id 7" in identical_message("x", 7)


def test_register_form_refuses_an_unknown_source():
    with pytest.raises(gr.Error, match="Check the form"):
        register_request("Floppy disk", None, None, None, None, None, None, None)
