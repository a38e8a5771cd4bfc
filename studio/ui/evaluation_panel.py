"""The Settings tab's "Evaluation" section: which evaluation model scores clips (or how to get one), and a button that
downloads (with progress) or builds the one chosen and puts it in use."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.context import AppContext
from studio.errors import StudioError
from studio.ui.common import fmt_gb, md_escape


@dataclass
class EvaluationPanel:
    state: gr.Markdown
    model: gr.Dropdown
    use_btn: gr.Button
    status: gr.Markdown


def evaluation_state(ctx: AppContext) -> str:
    """Markdown: the evaluation model in use and why, or that there is none and how to get one."""
    models = ctx.evaluation.models()
    icon = "✅" if models.current else "⚠️"
    return f"{icon} {md_escape(models.note)}"


def model_choices(ctx: AppContext) -> list[tuple[str, str]]:
    out = []
    for m in ctx.evaluation.models().models:
        where = "built on this machine" if m.builtin else (
            "downloaded" if m.available else f"download about {fmt_gb(m.download_gb)}")
        out.append((f"{m.display_name} ({where})" + (" · in use" if m.in_use else ""), m.id))
    return out


def build_evaluation_panel(ctx: AppContext) -> EvaluationPanel:
    models = ctx.evaluation.models()
    default = models.current or ctx.registry.default_evaluation_model or (
        models.models[0].id if models.models else None)
    with gr.Group(elem_id="evaluation-section", elem_classes=["studio-section"]):
        gr.Markdown("### Evaluation\nAutomatic scores: how well a clip fits its prompt (CLAP text-audio agreement, "
                    "-1 to 1), for a job on request and for evaluation runs of a model or adapter.")
        state = gr.Markdown(evaluation_state(ctx), elem_id="evaluation-state")
        with gr.Row():
            model = gr.Dropdown(model_choices(ctx), value=default, label="Evaluation model",
                                elem_id="evaluation-model", scale=3)
            use_btn = gr.Button("Download and use", elem_id="evaluation-use", variant="primary", scale=1)
        status = gr.Markdown(elem_id="evaluation-status")
    return EvaluationPanel(state, model, use_btn, status)


def use_model_events(ctx: AppContext, model_id: str | None, progress=gr.Progress()):
    """Generator: (status, state, dropdown) while the chosen evaluation model downloads or builds, then its outcome.
    A failure is said in the status (never a traceback)."""
    if not model_id:
        yield "⚠️ Choose an evaluation model first.", gr.skip(), gr.skip()
        return
    try:
        events = ctx.evaluation.use_model(model_id)
    except StudioError as exc:
        yield f"❌ {md_escape(exc.message)}", gr.skip(), gr.skip()
        return
    final = None
    for final in events:
        if final.terminal:
            break
        progress(final.fraction, desc=final.message)
        yield f"⏳ {md_escape(final.message)}", gr.skip(), gr.skip()
    icon = "✅" if final.stage == "ready" else "❌"
    yield (f"{icon} {md_escape(final.message)}", evaluation_state(ctx),
           gr.Dropdown(choices=model_choices(ctx), value=model_id))


def wire_evaluation_panel(ctx: AppContext, panel: EvaluationPanel) -> None:
    def use_evaluation_model(model_id: str | None, progress=gr.Progress()):
        yield from use_model_events(ctx, model_id, progress)

    panel.use_btn.click(use_evaluation_model, panel.model, [panel.status, panel.state, panel.model],
                        api_name="use_evaluation_model", concurrency_limit=1, concurrency_id="evaluation-model")
