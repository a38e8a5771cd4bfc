"""The Settings tab's Evaluation section, its handler called as Gradio calls it: the state says which evaluation model
scores clips or how to get one; the button builds (or downloads) the one chosen and puts it in use."""
from __future__ import annotations

from studio.ui.evaluation_panel import evaluation_state, model_choices, use_model_events


class _NoProgress:
    def __call__(self, *args, **kwargs):
        pass


def test_the_section_says_there_is_no_evaluation_model_then_builds_and_uses_the_tiny_one(make_ctx):
    ctx = make_ctx()
    assert evaluation_state(ctx).startswith("⚠️") and "studio-tiny-clap" in evaluation_state(ctx)
    labels = dict((v, k) for k, v in model_choices(ctx))
    assert "built on this machine" in labels["studio-tiny-clap"] and "download about 1 MB" in labels["tiny-clap-hub"]
    outputs = list(use_model_events(ctx, "studio-tiny-clap", _NoProgress()))
    status, state, dropdown = outputs[-1]
    assert status.startswith("✅") and state.startswith("✅") and "Studio Tiny CLAP scores clips" in state
    assert dropdown.value == "studio-tiny-clap"
    assert ctx.evaluation.models().current == "studio-tiny-clap"


def test_an_unknown_or_missing_choice_is_said_in_the_status(make_ctx):
    ctx = make_ctx()
    assert list(use_model_events(ctx, None, _NoProgress()))[-1][0].startswith("⚠️")
    status = list(use_model_events(ctx, "<img src=x>", _NoProgress()))[-1][0]
    assert status.startswith("❌") and "'\\<img src=x\\>'" in status  # shown as typed, never as markup
    assert ctx.evaluation.models().current is None
