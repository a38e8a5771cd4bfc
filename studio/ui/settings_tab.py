"""Settings tab: choose the model (with a capability card and every model's capabilities) and switch; each
model's saved generation settings (gen_config_panel)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.context import AppContext
from studio.ui.gen_config_panel import ConfigPanel, build_config_panel
from studio.ui.common import (fmt_channels, fmt_params, model_card, model_choice_label, user_errors,
                              weights_state)


@dataclass
class SettingsTab:
    model: gr.Dropdown
    card: gr.Markdown
    status: gr.Markdown
    table: gr.Dataframe
    config: ConfigPanel


TABLE_HEADERS = ["Model", "Parameters", "Max duration (s)", "Memory (GB, fp32)", "Sample rate", "Weights", "Loaded"]


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
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(model_choices(ctx), value=current.id if current else None, label="Model",
                                elem_id="model-dropdown",
                                info="Choosing a model unloads the current one, downloads the new one if needed "
                                     "and loads it.")
            status = gr.Markdown(elem_id="switch-status")
        with gr.Column(scale=3):
            card = gr.Markdown(model_card(current), elem_id="model-card")
    table = gr.Dataframe(models_table(ctx), headers=TABLE_HEADERS, label="All models", interactive=False,
                         elem_id="models-table")
    config = build_config_panel(ctx, current.id if current else ctx.registry.default_model)
    return SettingsTab(model, card, status, table, config)


def switch_events(ctx: AppContext, model_id: str, progress: gr.Progress):
    """Generator: stream a switch's progress as (status, card) pairs; raise gr.Error if it fails."""
    with user_errors():
        events = ctx.models.switch(model_id)
        spec_card = model_card(ctx.models.get(model_id))
    final = None
    for event in events:
        final = event
        if event.terminal:
            break
        progress(event.fraction, desc=event.message)
        yield f"**{event.stage.capitalize()}** · {event.message}", spec_card
    if final is not None and final.stage == "error":
        yield f"❌ {final.message}", model_card(ctx.models.get(model_id))
        raise gr.Error(final.message, print_exception=False)
    yield f"✅ {final.message}", model_card(ctx.models.get(model_id))
