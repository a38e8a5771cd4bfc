"""Settings tab, in two sections that read differently: "Loaded model" switches the model the studio runs (with a
capability card and every model's capabilities), "Generation settings" edits any model's saved settings
(gen_config_panel) without loading it."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import gradio as gr

from studio.context import AppContext
from studio.ui.custom_models_panel import CustomModelsPanel, build_custom_models_panel
from studio.ui.gen_config_panel import ConfigPanel, build_config_panel
from studio.ui.model_import_panel import ModelImportPanel, build_model_import_panel
from studio.errors import StudioError
from studio.ui.common import (fmt_channels, fmt_params, model_card, model_choice_label, notify_text,
                              weights_state)


@dataclass
class SettingsTab:
    model: gr.Dropdown
    card: gr.Markdown
    status: gr.Markdown
    table: gr.Dataframe
    config: ConfigPanel
    custom: CustomModelsPanel  # add a model from the hub or a folder; remove one added here
    model_import: ModelImportPanel  # import an audiocraft checkpoint (converted into a model added here)


TABLE_HEADERS = ["Model", "Parameters", "Max duration (s)", "Memory needed (GB)", "Sample rate", "Weights", "Loaded"]


def model_choices(ctx: AppContext) -> list[tuple[str, str]]:
    return [(model_choice_label(m), m.id) for m in ctx.models.list_models()]


def models_table(ctx: AppContext) -> list[list]:
    rows = []
    for m in ctx.models.list_models():
        memory = f"{m.memory_gb:g}" + ("" if m.fits_memory else " (too much)")
        rows.append([m.display_name, fmt_params(m.parameters), m.max_duration_s, memory,
                     f"{m.sample_rate / 1000:g} kHz {fmt_channels(m.channels)}", weights_state(m),
                     "yes" if m.loaded else ""])
    return rows


def build_settings_tab(ctx: AppContext) -> SettingsTab:
    current = ctx.models.current().model
    with gr.Group(elem_id="loaded-model-section", elem_classes=["studio-section"]):
        gr.Markdown("### Loaded model\nThe studio runs one model at a time, for everyone using it.")
        with gr.Row():
            with gr.Column(scale=2):
                model = gr.Dropdown(model_choices(ctx), value=current.id if current else None,
                                    label="Switch model", elem_id="model-dropdown",
                                    # a model added or imported since the page was built: a script's session
                                    # only knows the choices of then (the studio refuses unknown ids itself)
                                    allow_custom_value=True,
                                    info="Choosing another model loads it in place of this one (downloading it "
                                         "first if needed), after the jobs already waiting; jobs "
                                         "submitted after it run on the new model.")
                status = gr.Markdown(elem_id="switch-status")
            with gr.Column(scale=3):
                card = gr.Markdown(model_card(current), elem_id="model-card")
        with gr.Accordion("Compare all models", open=False, elem_id="models-table-box"):
            table = gr.Dataframe(models_table(ctx), headers=TABLE_HEADERS, show_label=False, interactive=False,
                                 elem_id="models-table")
        custom = build_custom_models_panel(ctx)
        model_import = build_model_import_panel(ctx)
    config = build_config_panel(ctx, current.id if current else ctx.registry.default_model)
    return SettingsTab(model, card, status, table, config, custom, model_import)


def wire_settings_tab(tab: SettingsTab) -> None:
    """The last switch's outcome stays in the status area until the person's next action in the tab (a switch
    replaces it with its own progress): then it is old news."""
    panel = tab.config
    for event in (panel.model.input, panel.save_btn.click, panel.reset_btn.click):  # the person's own actions
        event(lambda: gr.Markdown("", elem_classes=[]), None, tab.status, queue=False, show_progress="hidden",
              api_visibility="private")


def status_style(failed: bool) -> gr.Markdown:
    """The switch status area styled as a failure or not (set by the page's events around a switch, so that the
    switch endpoint streams plain text to scripts)."""
    return gr.Markdown(elem_classes=["switch-failed"] if failed else [])


def switch_status(stage: str, message: str) -> str:
    """The switch status text: progress, then the outcome. A failure is a message here (styled as one by
    status_style), never Gradio's error badge, which hid the text and stayed; the next switch replaces it."""
    text = notify_text(message)  # stays readable for scripts; no markup from an error's text reaches the page
    if stage == "error":
        return f"❌ **The model was not switched.** {text}"
    if stage == "ready":
        return f"✅ {text}"
    return f"⏳ **{stage.capitalize()}** · {text}"


def switch_events(ctx: AppContext, model_id: str, progress: gr.Progress):
    """Generator: stream a switch's progress as (status, card) texts. A failure ends with its message in the
    status, then a gr.Error that scripts (gradio_client) receive and the page does not show (no second notice)."""
    try:
        name = ctx.models.get(model_id).display_name
        events = ctx.models.switch(model_id, note=f"{name} was chosen on the page "
                                                  f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC).")
        spec_card = model_card(ctx.models.get(model_id))
    except StudioError as exc:  # an unknown model: nothing started
        yield switch_status("error", exc.message), gr.skip()
        raise gr.Error(notify_text(exc.message), visible=False, print_exception=False) from None
    final = None
    for event in events:
        final = event
        if event.terminal:
            break
        progress(event.fraction, desc=event.message)
        yield switch_status(event.stage, event.message), spec_card
    yield switch_status(final.stage, final.message), model_card(ctx.models.get(model_id))
    if final.stage == "error":
        raise gr.Error(notify_text(final.message), visible=False, print_exception=False)
