"""The Generate tab's logic, without a browser: a choice is never changed behind the person's back, the duration
is checked by the studio (its words, no Gradio bounds), and only what can be done now is enabled."""
from __future__ import annotations

import gradio as gr
import pytest

from studio.services.models import ModelInfo
from studio.ui.common import NO_ADAPTER
from studio.ui.generate_tab import adapter_id_from, adapter_widgets, buttons, duration_hint
from tests.ui.test_adapters_tab import TINY, adapter

GONE = [
    # (case, the adapters listed now, the person's choice, what the hint must say)
    ("deactivated elsewhere", [adapter(1, "lofi", active=False)], "1", "lofi v1, was deactivated"),
    ("deleted elsewhere", [], "7", "adapter 7, was deleted"),
    ("needs another model after a switch", [adapter(2, "keys", base="tiny-b")], "2", "keys v1, needs Tiny B"),
    ("other weights", [adapter(1, "lofi", compatible=False, compatibility_note="Trained on other weights")], "1",
     "lofi v1, Trained on other weights"),
]


@pytest.mark.parametrize("adapters,chosen,said", [g[1:] for g in GONE], ids=[g[0] for g in GONE])
def test_an_unusable_choice_stays_selected_marked_and_explained(adapters, chosen, said):
    dropdown, hint = adapter_widgets([*adapters, adapter(9, "ok")], TINY, chosen)
    assert isinstance(dropdown, gr.Dropdown) and dropdown.value == chosen  # never "None (base model)" silently
    label = dict((v, lab) for lab, v in dropdown.choices)[chosen]
    assert " — " in label  # greyed by the page's CSS like other unusable choices
    assert hint.startswith("⚠️ Your choice, ") and said in hint.replace("\\", "")
    assert "Generate will refuse it" in hint
    assert adapter_id_from(dropdown.value) == int(chosen)  # Generate sends it: the server refuses it, with why


def test_the_base_model_stays_the_base_model():
    dropdown, _ = adapter_widgets([adapter(1, "lofi")], TINY, NO_ADAPTER)
    assert dropdown.value == NO_ADAPTER


DURATIONS = [
    # (case, value, hint contains, Generate enabled with a prompt)
    ("within", 10.0, "", True),
    ("near the limit", 28.0, "28 s is near Studio Tiny's limit of 30 s", True),
    ("at the limit", 30.0, "30 s is at Studio Tiny's limit of 30 s", True),
    ("just over", 31.0, "31 s is over Studio Tiny's limit of 30 s.", False),
    ("far over", 45.0, "45 s is over Studio Tiny's limit of 30 s.", False),
    ("zero", 0.0, "more than 0 s", False),
    ("negative", -3.0, "more than 0 s", False),
    ("empty", None, "Enter a duration", False),
]


@pytest.mark.parametrize("value,said,ready", [d[1:] for d in DURATIONS], ids=[d[0] for d in DURATIONS])
def test_duration_is_checked_by_the_studio_in_its_own_words(value, said, ready):
    model = ModelInfo.model_construct(id="studio-tiny", display_name="Studio Tiny", max_duration_s=30.0)
    hint = duration_hint(value, model)
    assert said in hint and (hint == "") == (said == "")
    generate, cancel = buttons(False, "lofi piano", value, model)
    assert generate.interactive is ready and cancel.interactive is False


BUTTONS = [
    # (case, this page's job waiting or running, prompt, Generate enabled, Generate's label, Cancel enabled).
    # Other pages' jobs and model switches lock nothing: a job waits its turn in the queue.
    ("nothing of this page's, a prompt", False, "lofi", True, "Generate", False),
    ("empty prompt", False, "", False, "Generate", False),
    ("blank prompt", False, "  \n", False, "Generate", False),
    ("this page's job waits or runs", True, "lofi", False, "Generating…", True),
]


@pytest.mark.parametrize("running,prompt,gen_on,label,cancel_on", [b[1:] for b in BUTTONS],
                         ids=[b[0] for b in BUTTONS])
def test_only_what_can_be_done_now_is_enabled(running, prompt, gen_on, label, cancel_on):
    generate, cancel = buttons(running, prompt, 5.0, TINY)
    assert (generate.interactive, generate.value, cancel.interactive) == (gen_on, label, cancel_on)


def test_no_model_loaded_disables_generate():
    assert buttons(False, "lofi", 5.0, None)[0].interactive is False


def test_generate_tab_widgets_have_no_gradio_bounds_to_trip_over(ctx):
    """Gradio's own bound checks raised a traceback per keystroke (and its slider clamped silently): the studio's
    number boxes leave bounds to the studio."""
    from studio.ui.app import build_ui

    demo = build_ui(ctx)
    comps = {c.elem_id: c for c in demo.blocks.values() if getattr(c, "elem_id", None)}
    for elem_id in ("duration", "seed"):
        assert isinstance(comps[elem_id], gr.Number), elem_id
    # Every numeric input on the page (Generate's settings, the Settings tab's form): a number box that keeps what
    # was typed. No slider (Gradio's clamps a typed value silently), no Gradio bounds or rounding (their checks
    # failed events with a traceback and changed 2.5 into 2).
    numeric = [c for c in demo.blocks.values() if isinstance(c, (gr.Number, gr.Slider))]
    assert len(numeric) >= 2 + 4 + 6, [c.elem_id for c in numeric]
    for c in numeric:
        assert isinstance(c, gr.Number), c.elem_id
        assert c.minimum is None and c.maximum is None and c.precision is None, c.elem_id
    assert comps["gen-model"].value == "studio-tiny"
    assert comps["generate-btn"].variant == "primary" and comps["cancel-btn"].variant == "secondary"


SEEDS = [
    # (case, value typed, message at the field or None)
    ("empty: the seed policy", None, None),
    ("random", -1, None),
    ("largest", 2**32 - 1, None),
    ("whole float from the box", 7.0, None),
    ("too large", 2**32, "out of range: use -1 (random) or 0 to 4294967295"),
    ("below -1", -2, "out of range"),
    ("not whole", 2.5, "whole number, not 2.5"),
    ("text from a script", "7", "whole number"),
]


@pytest.mark.parametrize("value,said", [s[1:] for s in SEEDS], ids=[s[0] for s in SEEDS])
def test_the_seed_is_checked_by_the_studio_at_the_field(value, said):
    from studio.ui.generate_tab import seed_problem

    problem = seed_problem(value)
    assert (problem is None) if said is None else (said in problem)


SAMPLING = [
    # (case, values typed, {field: words of the message at it}); fields not named must show no message
    ("defaults", {}, {}),
    ("top_p over 1", {"top_p": 2}, {"top_p": "1"}),
    ("temperature 0", {"temperature": 0}, {"temperature": "0"}),
    ("negative guidance", {"guidance_scale": -1}, {"guidance_scale": "0"}),
    ("top_k not whole", {"top_k": 2.5}, {"top_k": "whole number"}),
    ("top_k negative", {"top_k": -5}, {"top_k": "0"}),
    ("empty box", {"top_p": None}, {"top_p": ""}),
    ("two at once", {"top_p": 1.5, "top_k": -1}, {"top_p": "1", "top_k": "0"}),
]


@pytest.mark.parametrize("typed,said", [s[1:] for s in SAMPLING], ids=[s[0] for s in SAMPLING])
def test_sampling_values_are_checked_by_the_studio_at_their_fields_and_gate_generate(ctx, typed, said):
    """Typing 2 in Top-p: the value stays 2, the studio names it at the field, and Generate is disabled."""
    from studio.ui.app import build_ui

    demo = build_ui(ctx)
    fn = next(f for f in demo.fns.values() if f.name == "generate_readiness")
    comps = {c.elem_id: c for c in fn.inputs}
    values = {c: c.value for c in fn.inputs}
    values[comps["prompt"]], values[comps["duration"]] = "lofi", 10
    for name, value in typed.items():
        values[comps[f"gen-{name}"]] = value
    out = fn.fn(*[values[c] for c in fn.inputs])
    fields = dict(zip([c.elem_id for c in fn.inputs[3:]], out[2:-2]))
    for elem_id, update in fields.items():
        name = elem_id.removeprefix("gen-")
        assert "value" not in update  # nothing changed behind the person's back
        if name in said:
            assert update["info"].startswith("⚠️ ") and said[name] in update["info"].split(" · ")[0], update
        else:
            assert not update["info"].startswith("⚠️"), (name, update)
    ok, generate = out[-2], out[-1]
    assert ok is (not said) and generate.interactive is (not said)


VERSIONS = [
    # (case, value typed in the Adapters tab's Version box, message or None)
    ("empty", None, None), ("zero: next free", 0, None), ("three", 3, None), ("whole float", 3.0, None),
    ("negative", -3, "0 or more, not -3"), ("not whole", 2.5, "not 2.5"), ("text", "2", "whole number"),
]


@pytest.mark.parametrize("value,said", [v[1:] for v in VERSIONS], ids=[v[0] for v in VERSIONS])
def test_the_register_version_is_checked_never_silently_replaced(value, said):
    from studio.ui.adapters_tab import register_request, version_problem

    problem = version_problem(value)
    assert (problem is None) if said is None else (said in problem)
    if said is None:
        req = register_request("folder", "/x", None, None, None, value, "", None)
        assert req.version == (int(value) if value else None)
    else:  # refused with the reason, never "the next free version" for -3 nor v2 for 2.5
        with pytest.raises(gr.Error, match="Check the form"):
            register_request("folder", "/x", None, None, None, value, "", None)


@pytest.mark.parametrize("ffmpeg", [True, False])
def test_the_live_player_is_there_only_where_gradio_can_stream(ctx, monkeypatch, ffmpeg):
    """Gradio encodes streamed audio with ffmpeg: without it a stream would fail the whole generation, so the
    live player is left out (the result still comes at the end)."""
    from studio.ui import generate_tab
    from studio.ui.app import build_ui

    monkeypatch.setattr(generate_tab.shutil, "which", lambda name: "/usr/bin/ffmpeg" if ffmpeg else None)
    comps = {c.elem_id: c for c in build_ui(ctx).blocks.values() if getattr(c, "elem_id", None)}
    stream = comps["audio-stream"]
    assert stream.streaming and stream.autoplay and stream.visible is ffmpeg
    assert [comps[f"take-{i}"].visible for i in range(1, 5)] == [False] * 4  # takes show once used
