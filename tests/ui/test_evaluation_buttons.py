"""The page's ways to the automatic score: History's "Score (CLAP)" on a job, and the Adapters tab's "Evaluate with
CLAP", which evaluates a version and the base model on the same prompts and seeds and then shows the scores in the
version's performance. Handlers are called as the page calls them (from the built Blocks), with Studio Tiny and the
tiny CLAP."""
from __future__ import annotations

import pytest

from studio.services.adapters import RegisterAdapterRequest
from studio.services.generation import GenerateRequest
from studio.ui.app import build_ui
from tests import adapters_factory as factory
from tests.services.test_evaluation import TWO


def text(update) -> str:
    """What a Markdown update shows (handlers send plain strings or gr.Markdown updates)."""
    return str(getattr(update, "value", update))


def handler(blocks, name: str):
    found = [f.fn for f in blocks.fns.values() if getattr(f.fn, "__name__", "") == name]
    assert len(found) == 1, f"{len(found)} handlers named {name}"
    return found[0]


@pytest.fixture(scope="module")
def studio(make_module_ctx, tiny_folder):
    ctx = make_module_ctx(eval_model="studio-tiny-clap")
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    ctx.evaluation.prompt_set = TWO
    lora = factory.make_lora(tiny_folder, ctx.settings.data_dir / "imports" / "lora", seed=1)
    adapter = ctx.adapters.register(RegisterAdapterRequest(source="folder", path=str(lora), name="lofi"))
    return ctx, build_ui(ctx), adapter


def test_score_in_history_stores_and_shows_the_jobs_score(studio):
    ctx, blocks, _ = studio
    job_id = ctx.generation.generate(GenerateRequest(prompt="calm <b>piano</b>", duration_s=1.0, seed=4)).job_id
    filters = ["", "any", "any", "any", "any", "", "person", "newest"]
    out = handler(blocks, "score")(job_id, None, *filters, 0, None)  # the request before the widgets
    status, info = text(out[5]), text(out[2])
    stored = ctx.evaluation.scores([job_id])[job_id]
    assert len(stored) == 1 and -1.0 <= stored[0].value <= 1.0
    assert f"{stored[0].value:.3f}" in status and "studio-tiny-clap" in status
    assert f"{stored[0].value:.3f}" in info  # the details show it beside the rating


def test_evaluate_runs_the_version_and_the_base_then_shows_both_scores(studio):
    ctx, blocks, adapter = studio
    steps = [[text(x) for x in step] for step in handler(blocks, "evaluate")(adapter.id)]
    final_status, performance = steps[-1]
    assert "Evaluated" in final_status and final_status.count("mean score") == 2, final_status
    base = ctx.evaluation.latest("studio-tiny")
    tuned = ctx.evaluation.latest("studio-tiny", adapter.id)
    assert base is not None and tuned is not None and base.n == tuned.n == 2
    assert f"{tuned.mean_score:.3f}" in performance and f"{base.mean_score:.3f}" in performance
    # a second evaluation reuses the base model's run on the same prompts and seeds
    steps = [text(step[0]) for step in handler(blocks, "evaluate")(adapter.id)]
    assert steps[-1].count("mean score") == 1
    assert len(ctx.evaluation.list_evaluations(base_only=True)) == 1


def test_evaluate_without_a_version_says_why(studio):
    _, blocks, _ = studio
    assert "Select a version" in text(list(handler(blocks, "evaluate")(None))[-1][0])
    assert "999" in text(list(handler(blocks, "evaluate")(999))[-1][0])  # a version deleted meanwhile: said
