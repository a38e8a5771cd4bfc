"""build_ui(ctx): the Blocks page, its tabs, and the events that connect them."""
from __future__ import annotations

import gradio as gr

from studio.context import AppContext
from studio.ui.access import admin_only, hide_admin_areas
from studio.ui.account_tab import build_account_tab, wire_account_tab
from studio.space import storage_warning
from studio.ui.abtests_tab import build_abtests_tab, wire_abtests_tab, wire_quick_ab
from studio.ui.adapters_tab import (ACTIVE_ONLY_KEY, BROWSER_SECRET, build_adapters_tab, filter_view,
                                    view_inputs, view_outputs, view_updates, wire_adapters_tab)
from studio.ui.custom_models_panel import wire_custom_models_panel
from studio.ui.common import JS_SWITCH_END, JS_SWITCH_START, model_card, notify_text, page_actor, status_line
from studio.ui.evaluation_panel import build_evaluation_panel, wire_evaluation_panel
from studio.ui.gen_config_panel import wire_config_panel
from studio.ui.generate_tab import build_generate_tab, buttons, model_updates, next_model, wire_generate_tab
from studio.ui.model_import_panel import wire_model_import_panel
from studio.ui.history_tab import build_history_tab, wire_history_tab
from studio.ui.training_tab import build_training_tab, wire_run_link, wire_tab_timer, wire_training_tab
from studio.ui.settings_tab import (build_settings_tab, model_choices, models_table, status_style, switch_events,
                                   wire_settings_tab)

STATUS_EVERY_S = 2.0


def build_ui(ctx: AppContext) -> gr.Blocks:
    with gr.Blocks(title="Text2Song Studio") as demo:
        # The Adapters tab's "Active only" filter, kept by the browser across tabs and reloads. At the top level
        # (not inside a tab) with a fixed secret, or Gradio does not restore it.
        active_pref = gr.BrowserState(False, storage_key=ACTIVE_ONLY_KEY, secret=BROWSER_SECRET)
        with gr.Row():
            gr.Markdown("## 🎵 Text2Song Studio")
            header = gr.Markdown(status_line(ctx.models.current()), elem_id="current-model")
            signed_in = gr.Markdown(elem_id="signed-in")  # "Signed in as NAME · role" (empty without login)
        lost_at_restart = storage_warning(ctx.settings)  # a Space without persistent storage
        if lost_at_restart:  # told to admins (an admin area), who can add the storage; members cannot act on it
            gr.Markdown(f"⚠️ {lost_at_restart}", elem_id="storage-warning", elem_classes=admin_only())
        seen_model = gr.State(None)  # per page: the model (and its saved settings) the widgets were set up for
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate") as generate_tab:
                gen = build_generate_tab(ctx)
            with gr.Tab("History", id="history", elem_id="history-tab") as history_tab:
                history = build_history_tab(ctx)
            with gr.Tab("Adapters", id="adapters") as adapters_item:
                adapters = build_adapters_tab(ctx)
            with gr.Tab("A/B tests", id="abtests") as abtests_item:
                abtests = build_abtests_tab(ctx)
            # Admin areas (studio/ui/access.py): hidden from members, their functions refused to them.
            with gr.Tab("Training", id="training", elem_id="training-tab", elem_classes=admin_only()) as training_item:
                training = build_training_tab(ctx)
            with gr.Tab("Settings", id="settings", elem_classes=admin_only()) as settings_item:
                settings = build_settings_tab(ctx)
                evaluation = build_evaluation_panel(ctx)
            with gr.Tab("Account", id="account", elem_id="account-tab") as account_item:
                account = build_account_tab(ctx)
        wire_generate_tab(ctx, gen)
        wire_history_tab(ctx, history, gen, tabs, history_tab, generate_tab)
        wire_adapters_tab(ctx, adapters, gen, active_pref)
        wire_config_panel(ctx, settings.config, demo)
        wire_settings_tab(settings)
        wire_custom_models_panel(ctx, settings.custom, [settings.model, gen.model], settings.table,
                                 settings.config.model, demo)
        wire_model_import_panel(ctx, settings.model_import, [settings.model, gen.model], settings.table,
                                settings.custom.remove_choice, settings.config.model)
        wire_evaluation_panel(ctx, evaluation)
        wire_abtests_tab(ctx, abtests, abtests_item)
        wire_training_tab(ctx, training, training_item)
        wire_run_link(ctx, training, tabs, "training", demo)
        wire_tab_timer(training, [generate_tab, history_tab, adapters_item, abtests_item, settings_item,
                                  account_item])
        wire_quick_ab(ctx, adapters.quick_ab, adapters.selected, abtests, tabs, "abtests")
        wire_account_tab(ctx, account, account_item, signed_in, demo)

        # Outputs of every status refresh: the header, the page's model, the Generate tab's model-dependent widgets
        # (they follow the model the next job runs on), the model dropdowns a switch locks, Generate and Cancel,
        # and what depends on the adapters and the loaded model (the adapter dropdown and its hint, the Adapters
        # tab's list and detail).
        limits = [gen.duration, gen.duration_hint, *gen.settings]
        # the model dropdowns (Settings and Generate tabs), the card, the table, Generate and Cancel
        controls = [settings.model, gen.model, settings.card, settings.table, gen.generate_btn, gen.cancel_btn]
        v_in, v_out = view_inputs(adapters, gen, active_pref), view_outputs(adapters, gen)
        outputs = [header, seen_model, *limits, *controls, *v_out]
        # what Generate's readiness depends on (fields_ok: the seed and settings boxes; jobs: this page's own)
        typed = [gen.prompt, gen.duration, gen.fields_ok, gen.jobs]

        def locked() -> list:
            """During a switch: the model dropdowns (the switch's progress shows beside them). Generate stays
            usable: a job submitted now waits in the queue and runs on the new model."""
            return [gr.Dropdown(interactive=False), gr.Dropdown(interactive=False), gr.skip(), gr.skip(),
                    gr.skip(), gr.skip()]

        def page_key(model) -> tuple[str, str] | None:
            """What the Generate tab's widgets depend on: the model the next job runs on and when its settings
            were saved."""
            if model is None:
                return None
            return model.id, str(ctx.gen_config.get(model.id).updated_at)

        def follow(cur, model, prompt, duration, fields_ok, jobs, *view_args) -> list:
            """Bring every widget in line with the model the next job runs on and its saved settings."""
            config = ctx.gen_config.get(model.id) if model else None
            if config is not None:
                duration = min(config.values["default_duration_s"], model.max_duration_s)  # as model_updates
                fields_ok = True  # the seed and settings boxes get the saved values (rechecked as they change)
            models = gr.Dropdown(choices=model_choices(ctx), value=model.id if model else None,
                                 interactive=cur.state != "switching")
            return [status_line(cur), page_key(model), *model_updates(model, config), models, models,
                    model_card(model), models_table(ctx),
                    *buttons(bool(jobs), prompt, duration, model, fields_ok),
                    *view_updates(ctx, *view_args, force=True)]

        def refresh(seen, saved_here, prompt, duration, fields_ok, jobs, *view_args):
            """Status line for every page; the widgets follow the model the next job runs on when it changed (the
            start-up load, or a switch asked for here or elsewhere) and its settings when they were saved (here or
            elsewhere). The model dropdowns are locked during any switch, whoever asked for it, and unlocked
            outside one, so a page whose own switch stream broke recovers. Adapter widgets follow changes made
            elsewhere (another page, the REST API, a generation's usage count). Settings saved on this page were
            announced by its Save: no second notice."""
            cur = ctx.models.current()
            model = next_model(ctx)
            keep = [status_line(cur), seen, *[gr.skip()] * len(limits)]
            key = page_key(model)
            if key == seen:
                dropdowns = (locked()[:4] if cur.state == "switching" else
                             [gr.Dropdown(interactive=True), gr.Dropdown(interactive=True), gr.skip(), gr.skip()])
                return [*keep, *dropdowns, *buttons(bool(jobs), prompt, duration, model, fields_ok),
                        *view_updates(ctx, *view_args)]
            if seen and key and seen[0] == key[0] and tuple(saved_here or ()) != key:  # saved elsewhere
                gr.Info(notify_text(f"The settings of {model.display_name} were saved: the Generate tab starts "
                                    "from them again."))
            return follow(cur, model, prompt, duration, fields_ok, jobs, *view_args)

        refresh_io = dict(inputs=[seen_model, settings.config.saved_here, *typed, *v_in], outputs=outputs,
                          show_progress="hidden",
                          api_visibility="private")
        demo.load(refresh, queue=False, **refresh_io)
        demo.load(lambda pref: filter_view(ctx, pref), active_pref,
                  [adapters.active_only, adapters.table, adapters.empty], queue=False, show_progress="hidden",
                  api_visibility="private")
        gr.Timer(STATUS_EVERY_S).tick(refresh, **refresh_io)

        # Switching: lock the model dropdowns (and warn before the tab closes), stream progress, then unlock and
        # bring every widget in line with the model now loaded, whether the switch worked or not. Generate is not
        # locked: a job submitted meanwhile waits in the queue behind the switch and runs on the new model.
        def switch_model(model_id, progress=gr.Progress()):
            """Switch to model_id: streams download and load progress; the last update says ready or error."""
            yield from switch_events(ctx, model_id, progress)

        def unlock(seen, prompt, duration, fields_ok, jobs, *view_args) -> list:
            """After a switch, whether it worked or not: dropdowns unlocked and on the model the next job runs on.
            When that is still the model the widgets were set up for (the switch failed, or changed nothing),
            what the person typed stays; otherwise every widget follows the new model."""
            cur = ctx.models.current()
            model = next_model(ctx)
            if page_key(model) != seen:
                return follow(cur, model, prompt, duration, fields_ok, jobs, *view_args)
            models = gr.Dropdown(choices=model_choices(ctx), value=model.id if model else None,
                                 interactive=cur.state != "switching")
            return [status_line(cur), seen, *[gr.skip()] * len(limits), models, models, model_card(model),
                    models_table(ctx), *buttons(bool(jobs), prompt, duration, model, fields_ok),
                    *view_updates(ctx, *view_args, force=True)]

        unlock_io = dict(fn=unlock, inputs=[seen_model, *typed, *v_in], outputs=outputs, js=JS_SWITCH_END,
                         api_visibility="private")
        # The Settings tab's dropdown (the /switch_model endpoint) and the Generate tab's: the same switch, the same
        # locking; each shows the progress beside itself. show_progress hidden: the status streams its own
        # progress, and a failure is a message there (styled by status_style), not Gradio's error badge over it.
        for dropdown, status, api in ((settings.model, settings.status, dict(api_name="switch_model")),
                                      (gen.model, gen.model_status, dict(api_visibility="private"))):
            start = dropdown.input(lambda: [*locked(), status_style(failed=False)], None, [*controls, status],
                                   js=JS_SWITCH_START, queue=False, api_visibility="private")
            # concurrency_limit=None: the job queue orders switches and jobs; Gradio's own queue would only hide a
            # switch waiting behind another page's, without its 'queued' progress.
            switching = start.then(switch_model, dropdown, [status, settings.card], concurrency_limit=None,
                                   show_progress="hidden", **api)
            switching.then(**unlock_io)
            switching.failure(**unlock_io)
            switching.failure(lambda: status_style(failed=True), None, status, queue=False, show_progress="hidden",
                              api_visibility="private")
        hide_admin_areas(demo)  # last: every admin area is built
    return demo
