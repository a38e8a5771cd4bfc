"""Adapters tab: the list (versions of a name together), a detail view with the training configuration and the
version history, activation, rename (inline: Enter saves, Escape cancels; or through a dialog from the list; renaming
moves every version of the name), delete with confirmation and restore, and registration from a server folder, an
uploaded archive or a hub repo, with progress ("register anyway" for an adapter identical to a registered one).
A version's performance beside the base model, its rating and score in the version history, and "Compare versions"
come from adapter_metrics_view.

Every action goes through ctx.adapters (studio.services.adapters.AdapterService); its errors become gr.Error. After
each change, the list, the detail and the Generate tab's adapter dropdown are brought up to date (`view_updates`).
"""
from __future__ import annotations

import functools
import hashlib
import html
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from studio.context import AppContext
from studio.errors import Conflict, NotFound
from studio.services.adapters import (AdapterChangeInfo, AdapterInfo, AdapterSummary, AdapterUpdate,
                                      RegisterAdapterRequest, TimelineEntry)
from studio.services.models import ModelInfo
from studio.ui.abtests_tab import QuickAB, build_quick_ab
from studio.ui.access import admin_only
from studio.ui.adapter_config_view import config_view_html, fmt_value
from studio.ui.adapter_metrics_view import (CompareView, EvaluateRow, build_compare_view, build_evaluate_row,
                                            build_performance_panel, performance_or_note, timeline_cells,
                                            wire_compare_view, wire_evaluate)
from studio.ui.common import (failed_status, failures_as_status, fmt_gb, md_escape, page_user, plain_status,
                              user_errors)
from studio.ui.generate_tab import GenerateTab, adapter_label, adapter_widgets
from studio.ui.queue_panel import shorten

TABLE_HEADERS = ["ID", "Name", "Version", "Base model", "Active", "Compatible", "Usage"]
TABLE_TYPES = ["number", "str", "number", "str", "str", "str", "number"]
SOURCES = {"Folder on the server": "folder", "Upload archive": "upload", "Hub repo": "hub"}
FROM_CONFIG = "From adapter_config.json"
ACTIVE_ONLY_KEY = "text2song-adapters-active-only"  # the browser's localStorage key of the "Active only" filter
BROWSER_SECRET = "text2song-studio-browser-state"  # fixed: a stored filter must survive server restarts


@dataclass
class AdaptersTab:
    active_only: gr.Checkbox
    refresh_btn: gr.Button
    rename_open: gr.Button
    empty: gr.Markdown
    table: gr.Dataframe
    dialog: gr.Column
    dialog_title: gr.Markdown
    dialog_name: gr.Textbox
    dialog_save: gr.Button
    dialog_cancel: gr.Button
    detail: gr.Column
    name_edit: gr.Textbox
    name_reset: gr.Button
    active_toggle: gr.Checkbox
    delete_btn: gr.Button
    confirm_row: gr.Row
    confirm_text: gr.Markdown
    confirm_btn: gr.Button
    confirm_cancel: gr.Button
    info: gr.Markdown
    config: gr.HTML
    history: gr.Markdown
    source: gr.Radio
    path: gr.Textbox
    archive: gr.File
    hub_row: gr.Row
    repo: gr.Textbox
    revision: gr.Textbox
    reg_name: gr.Textbox
    reg_version: gr.Number
    reg_base: gr.Dropdown
    reg_description: gr.Textbox
    reg_anyway: gr.Checkbox
    register_btn: gr.Button
    register_status: gr.Markdown
    deleted_acc: gr.Accordion
    deleted_choice: gr.Dropdown
    restore_btn: gr.Button
    selected: gr.State  # the adapter id shown in the detail view
    seen: gr.State  # signature of what the page shows (the tick refreshes only when it changed)
    performance: gr.Markdown | None = None  # the detail view's performance beside the base model
    compare: CompareView | None = None  # "Compare versions"
    evaluate: EvaluateRow | None = None  # "Evaluate with CLAP" under the performance
    quick_ab: QuickAB | None = None  # two versions -> a new A/B test (studio/ui/abtests_tab.py wires it)


# ---- pure helpers --------------------------------------------------------------------------------------------------
def notify(message: str) -> None:
    """gr.Info renders its text as HTML: names and other user text are escaped (an <img> name stays text)."""
    gr.Info(html.escape(message, quote=False))  # quotes are safe in text


def rename_note(name: str) -> str:
    return (f"Renaming renames **{md_escape(name)}**: every version of it (deleted ones too) moves to the new name "
            "and keeps its number.")


def identical_message(existing_label: str, existing_id: int) -> str:
    return (f"This adapter is identical to {existing_label} (id {existing_id}): same weights and configuration. "
            "Use that one, or tick “Register even if identical” and register again.")


def deleted_choices(deleted: list[AdapterSummary]) -> list[tuple[str, str]]:
    """(label, id) of the deleted adapters, most recently deleted first."""
    ordered = sorted(deleted, key=lambda a: a.deleted_at or a.updated_at, reverse=True)
    return [(f"{a.label} (deleted {fmt_time(a.deleted_at)})", str(a.id)) for a in ordered]


def sort_adapters(adapters: list[AdapterInfo]) -> list[AdapterInfo]:
    """Versions of the same name together: by name (case-insensitive), then version."""
    return sorted(adapters, key=lambda a: (a.name.casefold(), a.name, a.version))


def table_rows(adapters: list[AdapterInfo]) -> list[list]:
    rows = []
    for a in sort_adapters(adapters):
        compatible = "Yes" if a.compatible else f"No: {a.compatibility_note or 'incompatible'}"
        rows.append([a.id, a.name, a.version, a.base_model_name, "Yes" if a.active else "No", compatible,
                     a.usage_count])
    return rows


def table_frame(adapters: list[AdapterInfo]) -> pd.DataFrame:
    return pd.DataFrame(table_rows(adapters), columns=TABLE_HEADERS)


def empty_note(all_adapters: list[AdapterInfo], active_only: bool) -> str:
    if not all_adapters:
        # members see no Register area: the note points at none
        return ("No adapters registered yet: admins register them under **Register an adapter** (a folder on the "
                "server, an archive or a hub repo).")
    if active_only and not any(a.active for a in all_adapters):
        return (f"No active adapters: untick **Active only** to see the {len(all_adapters)} inactive "
                f"one{'s' if len(all_adapters) != 1 else ''}.")
    return "Click a row for its details, configuration and version history."


def fmt_time(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def fmt_bytes(n: int) -> str:
    if n >= 2**30:
        return fmt_gb(n / 2**30)
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB"
    return f"{max(1, round(n / 1024))} KB"


def compatibility_text(a: AdapterInfo, model: ModelInfo | None) -> str:
    if a.compatible:
        return f"✓ Compatible with the loaded {md_escape(model.display_name) if model else 'model'}"
    if model is None:
        return f"✗ No model is loaded: it needs {md_escape(a.base_model_name)}."
    return (f"✗ Not usable with the loaded {md_escape(model.display_name)}: {md_escape(a.compatibility_note)}. "
            f"Change the model in Settings to use it.")


def detail_markdown(a: AdapterInfo, model: ModelInfo | None) -> str:
    """The detail view: description, base model and its limit, compatibility and why not, usage, source, dates."""
    status = "Active: offered in the Generate tab" if a.active else "Inactive: not offered for generation"
    limit = (f" · up to {a.base_model_max_duration_s:g} s per clip" if a.base_model_max_duration_s else
             " · not among this studio's models")
    uses = f"{a.usage_count} generation{'s' if a.usage_count != 1 else ''}"
    lora = ", ".join(x for x in (f"rank {a.rank}" if a.rank is not None else "",
                                 f"alpha {fmt_value(a.alpha)}" if a.alpha is not None else "") if x) or "—"
    rows = [
        ("Base model", f"{md_escape(a.base_model_name)} (`{a.base_model}`){limit}"),
        ("With the loaded model", compatibility_text(a, model)),
        ("Status", status),
        ("Usage", uses),
        ("LoRA", lora),
        ("Source", md_escape(a.source)),
        ("Size", fmt_bytes(a.size_bytes)),
    ]
    if a.base_model_revision:
        rows.append(("Base model revision", f"`{md_escape(a.base_model_revision)}`"))
    if a.training_dataset:
        rows.append(("Training data", md_escape(a.training_dataset)))
    if a.trained_at:
        rows.append(("Trained", fmt_time(a.trained_at)))
    rows += [("Created", fmt_time(a.created_at)), ("Updated", fmt_time(a.updated_at)),
             ("ID", f"{a.id} (for scripts and the API)")]
    description = md_escape(a.description) if a.description.strip() else "*No description.*"
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"### {md_escape(adapter_label(a))}\n{description}\n\n| About | |\n|---|---|\n{table}"


def history_markdown(name: str, entries: list[TimelineEntry], selected_id: int | None,
                     figures: dict | None = None) -> str:
    """The version history of a name, oldest first; the version shown in the detail view in bold; each version's
    average rating (how many) and latest evaluation score (clips) from `figures` (MetricsService.timeline_figures)."""
    if not entries:
        return ""
    figures = figures or {}
    lines = [f"#### Versions of {md_escape(name)}", "",
             "| Version | Status | Registered | Trained | Final loss | Rating (n) | Eval score (n) | Training run |",
             "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        version = f"**v{e.version} (shown)**" if e.id == selected_id else f"v{e.version}"
        loss = fmt_value(e.final_loss) if e.final_loss is not None else "—"
        run = (f"[{md_escape(e.training_run_id)}]({e.training_run_url})" if e.training_run_url else
               md_escape(e.training_run_id) if e.training_run_id else "—")  # no link until run pages exist
        rating, score = timeline_cells(figures.get(e.id))
        lines.append(f"| {version} | {e.status} | {fmt_time(e.created_at)} | {fmt_time(e.trained_at)} | {loss} | "
                     f"{rating} | {score} | {run} |")
    return "\n".join(lines)


def change_text(c: AdapterChangeInfo) -> str:
    """What a change did, for a person (user text escaped): 'renamed lofi → chill', 'registered from hub:...'."""
    d = c.details or {}
    old_new = next((d[k] for k in ("name", "description", "active") if isinstance(d.get(k), list)
                    and len(d[k]) == 2), None)
    if c.action == "registered":
        what = f"registered as {md_escape(str(d.get('label', '')))} from {md_escape(str(d.get('source', '')))}"
        if d.get("step") is not None:
            what += f" (checkpoint at step {int(d['step'])})"
        return what
    if c.action in ("renamed", "described") and old_new is not None:
        old, new = (md_escape(shorten(str(v), 80)) if str(v).strip() else "*(empty)*" for v in old_new)
        return f"{c.action}: {old} → {new}"
    return c.action


def changes_markdown(changes: list[AdapterChangeInfo], label: str) -> str:
    """The selected version's change log, newest first: when, who, what (escaped)."""
    if not changes:
        return ""
    lines = [f"#### Changes to {md_escape(label)}", "", "| When | Who | What |", "|---|---|---|"]
    lines += [f"| {fmt_time(c.changed_at)} | {md_escape(c.changed_by)} | {change_text(c)} |" for c in changes]
    return "\n".join(lines)


def delete_prompt(a: AdapterInfo) -> str:
    return (f"**Delete {md_escape(adapter_label(a))}?** It will be hidden and refused for new generations; "
            "past jobs keep it. **Deleted adapters** (below) can restore it.")


def signature(model: ModelInfo | None, adapters: list[AdapterInfo]) -> str:
    """What the page shows depends on these: the tick refreshes the widgets only when it changes."""
    parts = [model.id if model else ""]
    parts += [f"{a.id}|{a.name}|{a.version}|{a.active}|{a.compatible}|{a.compatibility_note}|{a.usage_count}|"
              f"{a.updated_at.isoformat()}" for a in sort_adapters(adapters)]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


VERSION_INFO = "0 or empty: the next free version of this name"


def version_problem(value) -> str | None:
    """Why the Version box cannot be used (said at the field, never silently replaced), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "The version must be a whole number."
    if value != int(value) or value < 0:
        return f"The version must be a whole number, 0 or more, not {value:g}."
    return None


def register_request(source_label: str, path: str | None, repo: str | None, revision: str | None,
                     name: str | None, version: float | None, description: str | None,
                     base: str | None, allow_duplicate: bool = False) -> RegisterAdapterRequest:
    """The registration form as a service request (gr.Error for what the form itself gets wrong)."""
    source = SOURCES.get(source_label, source_label)  # scripts may send folder / upload / hub
    if version_problem(version):  # never a silent "next free version" for -3, nor 2 for 2.5
        raise gr.Error(html.escape(f"Check the form: {version_problem(version)}"), print_exception=False)
    fields = dict(source=source, name=(name or "").strip() or None,
                  version=int(version) if version not in (None, "") and int(version) > 0 else None,
                  description=(description or "").strip(),
                  base_model=None if base in (None, "", FROM_CONFIG) else base,
                  allow_duplicate=bool(allow_duplicate))
    if source == "folder":
        fields["path"] = (path or "").strip() or None
    elif source == "hub":
        fields["repo_id"] = (repo or "").strip() or None
        fields["revision"] = (revision or "").strip() or None
    try:
        return RegisterAdapterRequest(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise gr.Error(html.escape(f"Check the form: {problems}."), print_exception=False) from None


# ---- layout ----------------------------------------------------------------------------------------------------
def build_adapters_tab(ctx: AppContext) -> AdaptersTab:
    with gr.Row(equal_height=True):
        active_only = gr.Checkbox(label="Active only", value=False, elem_id="adapters-active-only", scale=0,
                                  min_width=140)
        refresh_btn = gr.Button("↻ Refresh", size="sm", scale=0, min_width=100, elem_id="adapters-refresh")
        # Management (rename, activate, delete, evaluate, quick A/B, register, restore) is an admin's: admin areas
        # (studio/ui/access.py). The list, the detail, the performance and Compare versions are everyone's.
        with gr.Column(scale=0, min_width=100, elem_classes=admin_only()):
            rename_open = gr.Button("Rename…", size="sm", interactive=False, elem_id="adapter-rename-open")
    empty = gr.Markdown(elem_id="adapters-empty")
    table = gr.Dataframe(pd.DataFrame([], columns=TABLE_HEADERS), headers=TABLE_HEADERS, datatype=TABLE_TYPES,
                         label="Adapters (versions of a name together)", interactive=False, elem_id="adapters-table",
                         max_height=360, wrap=True,  # long base model names wrap instead of being cut
                         column_widths=["5%", "22%", "8%", "25%", "8%", "24%", "8%"])
    with gr.Column(visible=False, elem_id="rename-dialog", variant="panel", elem_classes=admin_only()) as dialog:
        dialog_title = gr.Markdown(elem_id="rename-dialog-title", padding=True)
        dialog_name = gr.Textbox(label="New name", max_lines=1, elem_id="rename-dialog-name",
                                 info="Enter or Save renames every version of this name; at most 100 characters.")
        with gr.Row():
            dialog_save = gr.Button("Save", variant="primary", elem_id="rename-dialog-save")
            dialog_cancel = gr.Button("Cancel", elem_id="rename-dialog-cancel")
    with gr.Column(visible=False, elem_id="adapter-detail") as detail:
        with gr.Row(elem_classes=admin_only()):
            name_edit = gr.Textbox(label="Name", max_lines=1, elem_id="adapter-name-edit", scale=3,
                                   info="Enter renames every version of this name (numbers stay) · Escape puts "
                                        "the saved name back")
            active_toggle = gr.Checkbox(label="Active", elem_id="adapter-active", scale=1,
                                        info="Inactive adapters are not offered for generation")
            with gr.Column(scale=0, min_width=120):
                delete_btn = gr.Button("Delete…", variant="stop", size="sm", elem_id="adapter-delete")
            # clicked by the Escape key listener in common.HEAD (hidden by CSS; a click() still reaches it)
            name_reset = gr.Button("Put the saved name back", elem_id="adapter-name-reset",
                                   elem_classes=["studio-hidden"])
        with gr.Row(visible=False, elem_id="delete-confirm", equal_height=True,
                    elem_classes=admin_only()) as confirm_row:
            confirm_text = gr.Markdown(elem_id="delete-confirm-text")
            confirm_btn = gr.Button("Delete", variant="stop", scale=0, min_width=110, elem_id="adapter-delete-confirm")
            confirm_cancel = gr.Button("Cancel", scale=0, min_width=110, elem_id="adapter-delete-cancel")
        info = gr.Markdown(elem_id="adapter-detail-info")
        performance = build_performance_panel()
        evaluate = build_evaluate_row()
        with gr.Accordion("Training configuration", open=True, elem_id="adapter-config-accordion"):
            config = gr.HTML(elem_id="adapter-config")
        history = gr.Markdown(elem_id="adapter-history")
        quick_ab = build_quick_ab()
    compare = build_compare_view()
    with gr.Accordion("Register an adapter", open=False, elem_id="register-accordion", elem_classes=admin_only()):
        roots = ", ".join(str(r) for r in ctx.settings.allowed_import_roots)
        source = gr.Radio(list(SOURCES), value="Folder on the server", label="Source", elem_id="register-source")
        path = gr.Textbox(label="Folder on the server", elem_id="register-path", max_lines=1,
                          placeholder="my-lora  (or an absolute path)",
                          info=f"A PEFT LoRA folder (adapter_config.json + adapter_model.safetensors) inside: {roots}")
        archive = gr.File(label="Archive of the adapter folder (.zip or .tar.gz)", visible=False,
                          file_types=[".zip", ".gz", ".tgz", ".tar"], elem_id="register-file")
        with gr.Row(visible=False) as hub_row:
            repo = gr.Textbox(label="Hub repo", placeholder="org/name", max_lines=1, elem_id="register-repo")
            revision = gr.Textbox(label="Revision (optional)", placeholder="main", max_lines=1,
                                  elem_id="register-revision")
        with gr.Row():
            reg_name = gr.Textbox(label="Name (optional)", max_lines=1, elem_id="register-name",
                                  info="Default: the folder, archive or repo name")
            # No Gradio bounds or rounding (a traceback per keystroke, 2.5 made 2): the studio checks it.
            reg_version = gr.Number(label="Version (optional)", value=0, step=1, elem_id="register-version",
                                    info=VERSION_INFO)
            reg_base = gr.Dropdown([(FROM_CONFIG, FROM_CONFIG)] + [(m.display_name, m.id) for m in ctx.registry.models],
                                   value=FROM_CONFIG, label="Base model", elem_id="register-base",
                                   info="The model the adapter was trained on")
        reg_description = gr.Textbox(label="Description (optional)", lines=2, elem_id="register-description")
        reg_anyway = gr.Checkbox(label="Register even if identical to a registered version", value=False,
                                 elem_id="register-anyway",
                                 info="An adapter with the same weights and configuration is refused otherwise")
        register_btn = gr.Button("Register", variant="primary", elem_id="register-btn")
        register_status = gr.Markdown(elem_id="register-status")
    with gr.Accordion("Deleted adapters", open=False, elem_id="deleted-accordion",
                      elem_classes=admin_only()) as deleted_acc:
        with gr.Row(equal_height=True):
            deleted_choice = gr.Dropdown([], label="Deleted adapter", elem_id="deleted-choice", scale=3,
                                         info="Restoring brings it back, active, under its name and version")
            restore_btn = gr.Button("Restore", scale=0, min_width=110, elem_id="adapter-restore")
    return AdaptersTab(active_only, refresh_btn, rename_open, empty, table, dialog, dialog_title, dialog_name,
                       dialog_save, dialog_cancel, detail, name_edit, name_reset, active_toggle, delete_btn,
                       confirm_row, confirm_text, confirm_btn, confirm_cancel, info, config, history, source, path,
                       archive, hub_row, repo, revision, reg_name, reg_version, reg_base, reg_description,
                       reg_anyway, register_btn, register_status, deleted_acc, deleted_choice, restore_btn,
                       gr.State(None), gr.State(None), performance=performance, compare=compare,
                       evaluate=evaluate, quick_ab=quick_ab)


# ---- keeping the page in line with the registry ---------------------------------------------------------------
def view_inputs(tab: AdaptersTab, gen: GenerateTab, active_pref: gr.BrowserState) -> list:
    return [tab.seen, active_pref, tab.selected, gen.adapter]


def view_outputs(tab: AdaptersTab, gen: GenerateTab) -> list:
    return [gen.adapter, gen.adapter_hint, tab.seen, tab.table, tab.empty, *detail_outputs(tab)]


def detail_outputs(tab: AdaptersTab) -> list:
    return [tab.selected, tab.detail, tab.info, tab.active_toggle, tab.config, tab.history, tab.rename_open,
            tab.performance]


DETAIL_COUNT = 8  # len(detail_outputs(tab))
VIEW_COUNT = 5 + DETAIL_COUNT  # len(view_outputs(tab, gen))


def detail_updates(ctx: AppContext, adapter_id: int | None, model: ModelInfo | None) -> list:
    """[selected, detail column, info, active checkbox, configuration, history, rename button, performance];
    hidden when the adapter is gone (deleted here or elsewhere)."""
    a = None
    if adapter_id is not None:
        try:
            a = ctx.adapters.get(int(adapter_id))
        except NotFound:
            a = None
    if a is None:
        return [None, gr.Column(visible=False), "", gr.skip(), "", "", gr.Button(interactive=False), ""]
    try:
        entries = ctx.adapters.timeline(a.name)
        history = history_markdown(a.name, entries, a.id, ctx.metrics.timeline_figures([e.id for e in entries]))
        # beside the versions: who changed the one shown, and how
        history = "\n\n".join(p for p in (history, changes_markdown(ctx.adapters.changes(a.id), adapter_label(a))) if p)
    except NotFound:
        history = ""
    known = {"base_model": f"{a.base_model_name} ({a.base_model})", "base_model_revision": a.base_model_revision,
             "dataset": a.training_dataset}
    return [a.id, gr.Column(visible=True), detail_markdown(a, model), gr.Checkbox(value=a.active),
            config_view_html(a.training_config, a.lora_config, known), history, gr.Button(interactive=True),
            performance_or_note(ctx, a.id)]


def view_updates(ctx: AppContext, seen: str | None, active_only: bool | None, selected: int | None,
                 adapter_value: str | None, force: bool = False) -> list:
    """Updates for view_outputs: the Generate tab's dropdown and hint, the list, the detail. Without `force`,
    nothing is sent unless the registry or the loaded model changed since this page last looked."""
    model = ctx.models.current().model
    listing = ctx.adapters.list()
    sig = signature(model, listing)
    if not force and sig == seen:
        return [gr.skip()] * VIEW_COUNT
    shown = [a for a in listing if a.active] if active_only else listing
    return [*adapter_widgets(listing, model, adapter_value), sig, table_frame(shown),
            empty_note(listing, bool(active_only)), *detail_updates(ctx, selected, model)]


# ---- events ----------------------------------------------------------------------------------------------------
def _need(selected) -> int:
    if selected is None:
        raise gr.Error("Select an adapter in the list first.", print_exception=False)
    return int(selected)


def wire_adapters_tab(ctx: AppContext, tab: AdaptersTab, gen: GenerateTab, active_pref: gr.BrowserState) -> None:
    v_in, v_out = view_inputs(tab, gen, active_pref), view_outputs(tab, gen)
    private = dict(api_visibility="private")
    refresh_view = dict(fn=lambda *args: view_updates(ctx, *args, force=True), inputs=v_in, outputs=v_out,
                        show_progress="hidden", **private)
    closed = [gr.Column(visible=False), gr.Row(visible=False)]  # the rename dialog and the delete confirmation

    # The "Active only" filter lives in the browser (gr.BrowserState): it survives tab changes and reloads.
    tab.active_only.input(lambda active_only: filter_view(ctx, active_only), tab.active_only,
                          [active_pref, tab.table, tab.empty], queue=False, show_progress="hidden", **private)
    tab.refresh_btn.click(**refresh_view)
    wire_compare_view(ctx, tab.compare, tab.selected)
    wire_evaluate(ctx, tab.evaluate, tab.selected, tab.performance)

    # Selecting a row opens its detail view.
    def select(evt: gr.SelectData) -> list:
        row = evt.row_value or []
        try:
            adapter_id = int(float(row[0]))
        except (IndexError, TypeError, ValueError):
            return [gr.skip()] * (DETAIL_COUNT + 1 + len(closed))
        details = detail_updates(ctx, adapter_id, ctx.models.current().model)
        name = ctx.adapters.get(adapter_id).name if details[0] is not None else ""
        return [*details, name, *closed]

    tab.table.select(select, None, [*detail_outputs(tab), tab.name_edit, tab.dialog, tab.confirm_row],
                     show_progress="hidden", **private)

    # Rename inline: Enter saves, Escape (a key listener in common.HEAD) clicks the hidden reset button.
    def rename(selected, new_name, request: gr.Request | None = None) -> str:
        adapter_id = _need(selected)
        with user_errors():
            old = ctx.adapters.get(adapter_id)
            if (new_name or "").strip() == old.name:
                return old.name
            a = ctx.adapters.update(adapter_id, AdapterUpdate(name=new_name or ""), page_user(request))
        notify(f"Renamed {old.name} to {a.name}: every version moved ({adapter_label(old)} is now "
               f"{adapter_label(a)}).")
        return a.name

    def saved_name(selected) -> str:
        if selected is None:
            return ""
        with user_errors():
            return ctx.adapters.get(int(selected)).name

    # show_progress hidden on every quick action: a refusal is its notice alone, never Gradio's error badge left
    # over the outputs (the name box, the dialog, the deleted list).
    tab.name_edit.submit(rename, [tab.selected, tab.name_edit], tab.name_edit, show_progress="hidden",
                         **private).then(**refresh_view)
    tab.name_reset.click(saved_name, tab.selected, tab.name_edit, queue=False, show_progress="hidden", **private)

    # Rename through a dialog opened from the list.
    def open_dialog(selected) -> list:
        with user_errors():
            a = ctx.adapters.get(_need(selected))
        return [gr.Column(visible=True), f"**Rename {md_escape(a.name)}**\n\n{rename_note(a.name)}", a.name,
                gr.Row(visible=False)]

    tab.rename_open.click(open_dialog, tab.selected, [tab.dialog, tab.dialog_title, tab.dialog_name, tab.confirm_row],
                          queue=False, show_progress="hidden", **private)

    def rename_from_dialog(selected, new_name, request: gr.Request | None = None) -> list:
        name = rename(selected, new_name, request)
        return [gr.Column(visible=False), name]

    for trigger in (tab.dialog_save.click, tab.dialog_name.submit):
        trigger(rename_from_dialog, [tab.selected, tab.dialog_name], [tab.dialog, tab.name_edit],
                show_progress="hidden", **private).then(**refresh_view)
    tab.dialog_cancel.click(lambda: gr.Column(visible=False), None, tab.dialog, queue=False, show_progress="hidden",
                            **private)

    # Activation toggle (the checkbox's user input only, never the page's own updates).
    def set_active(selected, active, request: gr.Request | None = None) -> None:
        adapter_id = _need(selected)
        with user_errors():
            a = ctx.adapters.update(adapter_id, AdapterUpdate(active=bool(active)), page_user(request))
        notify(f"{adapter_label(a)} is {'active: offered for generation' if a.active else 'inactive'}.")

    toggled = tab.active_toggle.input(set_active, [tab.selected, tab.active_toggle], None, show_progress="hidden",
                                      **private)
    toggled.then(**refresh_view)
    toggled.failure(**refresh_view)  # puts the checkbox back

    # Delete, after a confirmation.
    def ask_delete(selected) -> list:
        with user_errors():
            a = ctx.adapters.get(_need(selected))
        return [gr.Row(visible=True), delete_prompt(a), gr.Column(visible=False)]

    tab.delete_btn.click(ask_delete, tab.selected, [tab.confirm_row, tab.confirm_text, tab.dialog], queue=False,
                         show_progress="hidden", **private)
    tab.confirm_cancel.click(lambda: gr.Row(visible=False), None, tab.confirm_row, queue=False,
                             show_progress="hidden", **private)

    def delete(selected, request: gr.Request | None = None) -> list:
        adapter_id = _need(selected)
        with user_errors():
            a = ctx.adapters.delete(adapter_id, page_user(request))
        notify(f"Deleted {adapter_label(a)}. Past jobs keep it; restore it under Deleted adapters.")
        return [gr.Row(visible=False), None, deleted_dropdown(ctx)]

    tab.confirm_btn.click(delete, tab.selected, [tab.confirm_row, tab.selected, tab.deleted_choice],
                          show_progress="hidden", **private).then(**refresh_view)

    # Restore a deleted adapter (soft delete is recoverable).
    tab.deleted_acc.expand(lambda: deleted_dropdown(ctx), None, tab.deleted_choice, queue=False,
                           show_progress="hidden", **private)

    def restore(choice, request: gr.Request | None = None) -> list:
        if choice in (None, ""):
            raise gr.Error("Choose a deleted adapter first.", print_exception=False)
        with user_errors():
            a = ctx.adapters.restore(int(choice), page_user(request))
        notify(f"Restored {adapter_label(a)}: active again.")
        return [deleted_dropdown(ctx), a.id, a.name]

    tab.restore_btn.click(restore, tab.deleted_choice, [tab.deleted_choice, tab.selected, tab.name_edit],
                          show_progress="hidden", api_name="restore_adapter").then(**refresh_view)

    # Registration.
    def show_source(label: str) -> list:
        source = SOURCES.get(label, "folder")
        return [gr.Textbox(visible=source == "folder"), gr.File(visible=source == "upload"),
                gr.Row(visible=source == "hub")]

    tab.source.change(show_source, tab.source, [tab.path, tab.archive, tab.hub_row], queue=False,
                      show_progress="hidden", **private)

    def check_version(value) -> list:
        problem = version_problem(value)
        return [gr.update(info=f"⚠️ {problem} · {VERSION_INFO}" if problem else VERSION_INFO),
                gr.Button(interactive=problem is None)]

    tab.reg_version.change(check_version, tab.reg_version, [tab.reg_version, tab.register_btn], queue=False,
                           show_progress="hidden", preprocess=False, trigger_mode="always_last", **private)

    def register(source, path, archive, repo, revision, name, version, description, base, anyway=False,
                 request: gr.Request | None = None, progress=gr.Progress()) -> list:
        """Register a PEFT LoRA adapter. source: 'Folder on the server' (path inside an import root), 'Upload
        archive' (a .zip / .tar.gz of the folder) or 'Hub repo' (repo id + optional revision). anyway: register
        even when a registered adapter has identical weights and configuration."""
        req = register_request(source, path, repo, revision, name, version, description, base, anyway)
        upload = Path(archive) if req.source == "upload" and archive else None
        progress(0, desc="Starting")

        def on_progress(fraction: float | None, message: str) -> None:
            progress(fraction, desc=message)

        with user_errors():
            try:
                a = ctx.adapters.register(req, upload=upload, upload_name=upload.name if upload else None,
                                          on_progress=on_progress, user=page_user(request))
            except Conflict as exc:
                if exc.code != "identical_adapter":
                    raise
                raise gr.Error(html.escape(identical_message(exc.extra["existing_label"], exc.extra["existing_id"])),
                               print_exception=False) from None
        note = "" if a.compatible else f" It cannot be used with the loaded model: {a.compatibility_note}."
        notify(f"Registered {adapter_label(a)}.")
        status = (f"✅ Registered **{md_escape(adapter_label(a))}** (id {a.id}, base model "
                  f"{md_escape(a.base_model_name)}).{md_escape(note)}")
        # status, the new adapter selected (its name in the inline editor), the form cleared, dialogs closed
        return [status, a.id, a.name, "", None, "", "", "", 0, "", FROM_CONFIG, False, *closed]

    # The last registration's outcome goes at once: it would stand next to this one's refusal otherwise.
    tab.register_btn.click(lambda: plain_status(), None, tab.register_status, queue=False, show_progress="hidden",
                           **private)
    reg_inputs = [tab.source, tab.path, tab.archive, tab.repo, tab.revision, tab.reg_name, tab.reg_version,
                  tab.reg_description, tab.reg_base, tab.reg_anyway]
    reg_outputs = [tab.register_status, tab.selected, tab.name_edit, tab.path, tab.archive, tab.repo, tab.revision,
                   tab.reg_name, tab.reg_version, tab.reg_description, tab.reg_base, tab.reg_anyway, tab.dialog,
                   tab.confirm_row]

    def not_registered(message: str) -> list:  # the form stays as typed, to be corrected
        return [failed_status(f"❌ **Not registered.** {md_escape(message)}"), *[gr.skip()] * (len(reg_outputs) - 1)]

    def registered(*args, **kwargs) -> list:
        out = register(*args, **kwargs)
        return [plain_status(out[0]), *out[1:]]

    # The page's Register: a refusal is a message in the status line under the button (no error badge over it,
    # no second notice); progress shows there too. Scripts get their own endpoint (a hidden button), which fails.
    tab.register_btn.click(failures_as_status(functools.wraps(register)(registered), not_registered), reg_inputs,
                           reg_outputs, show_progress_on=[tab.register_status], api_name="register_on_page",
                           **private).then(**refresh_view)
    with gr.Column(visible=False, elem_classes=admin_only()):  # an admin's, like the page's Register
        api_btn = gr.Button(visible=False, elem_id="register-api")
    api_btn.click(register, reg_inputs, reg_outputs, api_name="register_adapter").then(**refresh_view)


def filter_view(ctx: AppContext, active_only) -> list:
    """[filter value, table, empty note] for the "Active only" filter (stored in the browser)."""
    listing = ctx.adapters.list()
    shown = [a for a in listing if a.active] if active_only else listing
    return [bool(active_only), table_frame(shown), empty_note(listing, bool(active_only))]


def deleted_dropdown(ctx: AppContext) -> gr.Dropdown:
    choices = deleted_choices(ctx.adapters.list(deleted=True))
    return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)
