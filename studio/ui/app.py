"""build_ui(ctx): the Blocks page, its two tabs, and the events that connect them."""
from __future__ import annotations

import gradio as gr

from studio.context import AppContext
from studio.ui.common import JS_SWITCH_END, JS_SWITCH_START, model_card, status_line
from studio.ui.generate_tab import build_generate_tab, model_updates, wire_generate_tab
from studio.ui.settings_tab import build_settings_tab, model_choices, models_table, switch_events

STATUS_EVERY_S = 2.0


def build_ui(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title="Text2Song Studio") as demo:
        with gr.Row():
            gr.Markdown("## 🎵 Text2Song Studio")
            header = gr.Markdown(status_line(ctx.models.current()), elem_id="current-model")
        seen_model = gr.State(None)  # per page: the model the widgets were last set up for
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                gen = build_generate_tab(ctx)
            with gr.Tab("Settings", id="settings"):
                settings = build_settings_tab(ctx)
        wire_generate_tab(ctx, gen)

        model_outputs = [gen.duration, gen.duration_hint, *gen.settings, settings.model, settings.card, settings.table]

        def follow(cur, duration, **dropdown) -> list:
            """Updates that bring every model-dependent widget in line with the loaded model."""
            model_id = cur.model.id if cur.model else None
            return [status_line(cur), model_id, *model_updates(cur.model, duration),
                    gr.Dropdown(choices=model_choices(ctx), value=model_id, **dropdown), model_card(cur.model),
                    models_table(ctx)]

        def refresh(seen, duration):
            """Status line for every page; the widgets follow the loaded model when it changed (the start-up load,
            or a switch made elsewhere), never in the middle of a switch."""
            cur = ctx.models.current()
            if (cur.model.id if cur.model else None) == seen or cur.state == "switching":
                return [status_line(cur), seen, *[gr.skip()] * len(model_outputs)]
            return follow(cur, duration)

        refresh_io = dict(inputs=[seen_model, gen.duration], outputs=[header, seen_model, *model_outputs],
                          show_progress="hidden", api_visibility="private")
        demo.load(refresh, queue=False, **refresh_io)
        gr.Timer(STATUS_EVERY_S).tick(refresh, **refresh_io)

        # Switching: lock the controls (and warn before the tab closes), stream progress, then unlock and
        # bring every widget in line with the model now loaded, whether the switch worked or not.
        lock = [settings.model, gen.generate_btn]

        def locked():
            return gr.Dropdown(interactive=False), gr.Button(interactive=False, value="Switching model…")

        def unlocked(duration):
            return [gr.Button(interactive=True, value="Generate"),
                    *follow(ctx.models.current(), duration, interactive=True)]

        def switch_model(model_id, progress=gr.Progress()):
            """Switch to model_id: streams download and load progress; the last update says ready or error."""
            yield from switch_events(ctx, model_id, progress)

        start = settings.model.input(locked, None, lock, js=JS_SWITCH_START, queue=False, api_visibility="private")
        switching = start.then(switch_model, settings.model, [settings.status, settings.card],
                               api_name="switch_model", concurrency_id="gpu", concurrency_limit=1)
        unlock_io = dict(fn=unlocked, inputs=[gen.duration],
                         outputs=[gen.generate_btn, header, seen_model, *model_outputs],
                         js=JS_SWITCH_END, api_visibility="private")
        switching.then(**unlock_io)
        switching.failure(**unlock_io)
    return demo
