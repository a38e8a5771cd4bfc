"""The Settings tab's generation-settings panel: a form built from the chosen model's settings schema, inline
validation, unsaved-edit marks and differs-from-default hints, Save, Reset to defaults (confirmed), and the history
of changes. One notice per action: a save or reset made here says so once (the page's refresh stays quiet about it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from studio.context import AppContext
from studio.errors import InvalidValues, StudioError
from studio.services.gen_config import ConfigChange, ConfigView
from studio.ui.common import md_escape, notify_text, page_user, user_errors
from studio.ui.access import is_admin_page
from studio.users import SYSTEM_USER
from studio.ui.settings_form import FieldSpec, coerce, field_specs, fmt_value, make_widget, widget_update

HISTORY_HEADERS = ["When (UTC)", "Who", "Action", "Changes"]
HISTORY_ROWS = 50
# How each recorded action reads on the page ("seed" is the record's word for the first stored values: on a music
# page it reads as the random seed).
ACTION_LABELS = {"seed": "first start", "update": "saved", "reset": "reset"}


@dataclass
class ConfigPanel:
    model: gr.Dropdown
    fields: dict[str, Any]  # every setting of every model's schema, in order; a model's own are visible
    summary: gr.Markdown
    save_btn: gr.Button
    reset_btn: gr.Button
    confirm_row: gr.Row
    confirm_text: gr.Markdown
    confirm_btn: gr.Button
    confirm_cancel: gr.Button
    history: gr.Dataframe
    shown: gr.State  # the saved values the form was last filled with: Save sends only what the person changed
    saved_here: gr.State  # (model id, when) of this page's last save or reset: the page's refresh, seeing the
    #                       settings change, knows this page already said so

    @property
    def form(self) -> list:
        """Outputs of every form refresh."""
        return [*self.fields.values(), self.summary, self.save_btn]


def specs_of(ctx: AppContext, model_id: str) -> dict[str, FieldSpec]:
    return {f.name: f for f in field_specs(ctx.gen_config.schema(model_id))}


def all_fields(ctx: AppContext) -> dict[str, FieldSpec]:
    """The union of the registry's settings schemas (one widget per name; each model shows its own)."""
    out: dict[str, FieldSpec] = {}
    for spec in ctx.registry.models:
        for name, f in specs_of(ctx, spec.id).items():
            out.setdefault(name, f)
    return out


def history_rows(changes: list[ConfigChange]) -> list[list[str]]:
    rows = []
    for c in changes:
        if c.action == "seed":
            what = "started from the studio's defaults"
        else:
            what = "; ".join(f"{k}: {fmt_value(c.old_values.get(k))} → {fmt_value(v)}" for k, v in c.new_values.items())
            what = what or "nothing differed from the defaults"
        rows.append([c.changed_at.strftime("%Y-%m-%d %H:%M:%S"), c.changed_by, ACTION_LABELS.get(c.action, c.action),
                     what])
    return rows or [["", "", "", "no changes yet"]]


def summary_text(view: ConfigView, values: dict, errors: dict[str, str], specs: dict[str, FieldSpec]) -> str:
    name = lambda k: specs[k].label if k in specs else k  # noqa: E731
    if errors:
        return "⚠️ **Not valid:** " + "; ".join(f"{name(k)}: {v}" for k, v in errors.items()) + ". Fix the marked " \
               "settings to save."
    unsaved = [k for k in specs if values.get(k) != view.values.get(k)]
    changed = [k for k in specs if values.get(k) != view.defaults.get(k)]
    parts = [f"**Unsaved changes:** {', '.join(name(k) for k in unsaved)}." if unsaved else "All changes saved."]
    parts.append(f"{len(changed)} setting(s) differ from the defaults: {', '.join(name(k) for k in changed)}."
                 if changed else "Every setting has its default value.")
    if values.get("seed_policy") == "random" and values.get("seed") != view.defaults.get("seed"):
        parts.append("ℹ️ The fixed seed is used only when the seed policy is 'fixed'.")
    if view.updated_by == SYSTEM_USER:
        parts.append("<small>The studio's defaults, never changed.</small>")
    elif view.updated_by and view.updated_at:
        parts.append(f"<small>Last saved {view.updated_at:%Y-%m-%d %H:%M} UTC by {view.updated_by}.</small>")
    if view.ignored:
        parts.append("⚠️ Saved values no longer valid, defaults used: "
                     + "; ".join(f"{name(k)} ({v})" for k, v in view.ignored.items()) + ".")
    return "  \n".join(parts)


def form_updates(ctx: AppContext, panel_fields: list[str], model_id: str, values: dict | None = None,
                 errors: dict[str, str] | None = None) -> list:
    """Updates for [*fields, summary, save button]. values None: show the saved values."""
    specs, view = specs_of(ctx, model_id), ctx.gen_config.get(model_id)
    shown = dict(view.values) if values is None else values
    errors = errors or {}
    updates = []
    for name in panel_fields:
        f = specs.get(name)
        value = view.values[name] if values is None and f is not None else None
        kw = dict(error=errors.get(name), unsaved=f is not None and shown.get(name) != view.values.get(name),
                  non_default=f is not None and shown.get(name) != view.defaults.get(name))
        updates.append(widget_update(f, value=value, **kw) if values is None and f is not None
                       else widget_update(f, **kw))
    dirty = any(shown.get(k) != view.values.get(k) for k in specs)
    return [*updates, summary_text(view, shown, errors, specs), gr.Button(interactive=dirty and not errors)]


def config_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """Every model, those added or imported since the page was built included."""
    return [(m.display_name, m.id) for m in ctx.registry.models]


def build_config_panel(ctx: AppContext, model_id: str) -> ConfigPanel:
    fields_spec = all_fields(ctx)
    view, own = ctx.gen_config.get(model_id), specs_of(ctx, model_id)
    with gr.Group(elem_id="gen-config"):
        gr.Markdown("### Generation settings\nEach model keeps its own settings: every piece made with it starts "
                    "from them (on the Generate tab and from scripts). Hover a setting for its description.")
        with gr.Row():
            model = gr.Dropdown(config_choices(ctx), value=model_id,
                                label="Generation settings for", elem_id="config-model", scale=2,
                                info="Whose settings to edit: any model, loaded or not. Choosing one here does not "
                                     "load it.")
        with gr.Row(elem_id="config-form", equal_height=False):  # wraps: as many columns as the page fits
            fields = {}
            for name, f in fields_spec.items():
                mine = own.get(name)
                value = view.values.get(name, f.default)
                fields[name] = make_widget(mine or f, value, f"cfg-{name}", visible=mine is not None,
                                           non_default=mine is not None and value != view.defaults.get(name),
                                           min_width=340)
        summary = gr.Markdown(summary_text(view, view.values, {}, own), elem_id="config-summary")
        with gr.Row():
            save_btn = gr.Button("Save", variant="primary", interactive=False, elem_id="config-save", scale=0,
                                 min_width=160)
            # Quieter than Save: a secondary button (styled as one inside the group), asking before it resets.
            reset_btn = gr.Button("Reset to defaults…", variant="secondary", size="md", elem_id="config-reset",
                                  scale=0, min_width=200)
        with gr.Row(visible=False, elem_id="config-reset-confirm", equal_height=True) as confirm_row:
            confirm_text = gr.Markdown(elem_id="config-reset-text")
            confirm_btn = gr.Button("Reset", variant="stop", scale=0, min_width=110, elem_id="config-reset-yes")
            confirm_cancel = gr.Button("Cancel", scale=0, min_width=110, elem_id="config-reset-no")
        with gr.Accordion("History of changes", open=False, elem_id="config-history-box"):
            history = gr.Dataframe(history_rows(ctx.gen_config.history(model_id, limit=HISTORY_ROWS).changes),
                                   headers=HISTORY_HEADERS, interactive=False, wrap=True, elem_id="config-history")
    return ConfigPanel(model, fields, summary, save_btn, reset_btn, confirm_row, confirm_text, confirm_btn,
                       confirm_cancel, history, gr.State(view.values), gr.State(None))


def wire_config_panel(ctx: AppContext, panel: ConfigPanel, demo: gr.Blocks) -> None:
    names = list(panel.fields)
    widgets = list(panel.fields.values())

    def read(data: dict) -> tuple[str, dict]:
        """(model id, {setting: value}) from the form's widgets (events pass them as a dict by component)."""
        model_id = data[panel.model]
        specs = specs_of(ctx, model_id)
        return model_id, {n: coerce(specs[n], data[w]) for n, w in panel.fields.items() if n in specs}

    def saved(model_id: str) -> dict:
        return ctx.gen_config.get(model_id).values

    def history(model_id: str) -> list[list[str]]:
        return history_rows(ctx.gen_config.history(model_id, limit=HISTORY_ROWS).changes)

    def done_here(model_id: str, notice: str) -> tuple[str, str]:
        """One notice for a save or reset made on this page ("{name}" in `notice`: the model's name), and the mark
        that tells the page's refresh it was said."""
        view, cur = ctx.gen_config.get(model_id), ctx.models.current().model
        follows = " The Generate tab starts from them now." if cur is not None and cur.id == model_id else ""
        gr.Info(notify_text(notice.format(name=ctx.registry.get(model_id).display_name) + follows))
        return model_id, str(view.updated_at)

    def show(model_id):
        """The chosen model's saved settings, its form and history."""
        with user_errors():
            return [*form_updates(ctx, names, model_id), history(model_id), gr.Row(visible=False), saved(model_id)]

    def check(data: dict):
        """Inline validation as the person edits: marks, per-field errors, whether Save is possible."""
        model_id, values = read(data)
        try:
            ctx.gen_config.validate_changes(model_id, values)
            errors = {}
        except InvalidValues as exc:
            errors = {e["field"]: e["message"] for e in exc.extra.get("errors", [])}
        return form_updates(ctx, names, model_id, values, errors)

    def save(data: dict, request: gr.Request):
        model_id, values = read(data)
        # Only the person's edits: a value saved meanwhile by someone else (another page, the API) is kept.
        shown = data[panel.shown] or {}
        edits = {k: v for k, v in values.items() if k not in shown or v != shown[k]}
        try:
            ctx.gen_config.update(model_id, edits, by=page_user(request))
        except InvalidValues as exc:  # shown at the fields; nothing was stored
            gr.Warning(f"Not saved: {len(exc.extra.get('errors', []))} setting(s) need fixing.")
            errors = {e["field"]: e["message"] for e in exc.extra.get("errors", [])}
            return [*form_updates(ctx, names, model_id, values, errors), gr.skip(), gr.skip(), gr.skip()]
        except StudioError as exc:  # any other refusal (the disk full, ...): its notice, never a traceback
            raise gr.Error(notify_text(exc.message), print_exception=False) from None
        mark = done_here(model_id, "Saved the settings of {name}.")
        return [*form_updates(ctx, names, model_id), history(model_id), saved(model_id), mark]

    def ask_reset(model_id):
        spec, view = ctx.registry.get(model_id), ctx.gen_config.get(model_id)
        n = len(view.changed)
        what = f"{n} setting(s) differ from the defaults and will go back" if n else "Every setting already " \
               "has its default value"
        name = md_escape(spec.display_name)  # the user's text (an added or imported model's name)
        return gr.Row(visible=True), f"**Reset every setting of {name} to the studio's defaults?** " \
                                     f"{what}. Unsaved edits are lost too."

    def reset(model_id, request: gr.Request):
        with user_errors():
            ctx.gen_config.reset(model_id, by=page_user(request))
        mark = done_here(model_id, "{name}: settings reset to the studio's defaults.")
        return [*form_updates(ctx, names, model_id), history(model_id), gr.Row(visible=False), saved(model_id),
                mark]

    def show_loaded(request: gr.Request):
        """A page opens on the loaded model's settings (the default model's while none is loaded), with every model
        in the list: the page is built once, at start, and a model added or imported since was missing (the loaded
        one then showed as an empty choice). Not on a member's page (an admin area: its model's change event would
        be refused)."""
        if not is_admin_page(request):
            return [gr.skip()] * (1 + len(shown_io))
        cur = ctx.models.current().model
        model_id = cur.id if cur else ctx.registry.default_model
        return [gr.Dropdown(choices=config_choices(ctx), value=model_id), *show(model_id)]

    private = dict(api_visibility="private", show_progress="hidden")
    shown_io = [*panel.form, panel.history, panel.confirm_row, panel.shown]
    demo.load(show_loaded, None, [panel.model, *shown_io], queue=False, **private)
    panel.model.change(show, panel.model, shown_io, queue=False, **private)
    # The person's edits only. always_last: keystrokes typed while a check runs are checked after it (Gradio's
    # default for input events, "once", dropped them: the last value went unchecked). preprocess=False: what was
    # typed reaches the validation as typed, which names a bad value at the field.
    for widget in widgets:
        widget.input(check, {panel.model, *widgets}, panel.form, queue=False, trigger_mode="always_last",
                     preprocess=False, **private)
    panel.save_btn.click(save, {panel.model, panel.shown, *widgets},
                         [*panel.form, panel.history, panel.shown, panel.saved_here], **private)
    panel.reset_btn.click(ask_reset, panel.model, [panel.confirm_row, panel.confirm_text], queue=False, **private)
    panel.confirm_cancel.click(lambda: gr.Row(visible=False), None, panel.confirm_row, queue=False, **private)
    panel.confirm_btn.click(reset, panel.model, [*shown_io, panel.saved_here], **private)

    # Scripts (gradio_client) get the same actions with JSON in and out.
    def generation_settings(model_id: str) -> dict:
        """A model's saved generation settings, the defaults, and which differ from them."""
        with user_errors():
            return ctx.gen_config.get(model_id).model_dump(mode="json")

    def save_generation_settings(model_id: str, values: dict, request: gr.Request) -> dict:
        """Change some of a model's settings (the others keep their values); nothing is saved if one is invalid."""
        with user_errors():
            return ctx.gen_config.update(model_id, values, by=page_user(request)
                                         ).model_dump(mode="json")

    def reset_generation_settings(model_id: str, request: gr.Request) -> dict:
        """Put a model's settings back to registry.yaml's defaults."""
        with user_errors():
            return ctx.gen_config.reset(model_id, by=page_user(request)
                                        ).model_dump(mode="json")

    gr.api(generation_settings, api_name="generation_settings")
    gr.api(save_generation_settings, api_name="save_generation_settings")
    gr.api(reset_generation_settings, api_name="reset_generation_settings")
