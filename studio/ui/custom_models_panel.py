"""Settings tab: "Add or remove a model". A MusicGen from the hub (repo id + revision) or from a folder on the server
(inside an import root) is checked (its config.json alone: the capabilities it derives are shown), then added beside
registry.yaml's models; models added here can be removed, their downloaded files kept or deleted. Every action goes
through ctx.custom_models (studio.services.custom_models)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.context import AppContext
from studio.services.custom_models import AddModelRequest, CustomModelPreview
from studio.ui.access import is_admin_page
from studio.ui.common import (failed_status, failures_as_status, fmt_channels, fmt_gb, fmt_params, md_escape,
                              notify_text, page_user, plain_status, user_errors)

HUB, FOLDER = "Hugging Face Hub", "Folder on this server"


@dataclass
class CustomModelsPanel:
    source: gr.Radio
    repo_id: gr.Textbox
    revision: gr.Textbox
    path: gr.Textbox
    model_id: gr.Textbox
    display_name: gr.Textbox
    check_btn: gr.Button
    add_btn: gr.Button
    status: gr.Markdown
    remove_choice: gr.Dropdown
    delete_files: gr.Checkbox
    remove_btn: gr.Button
    remove_status: gr.Markdown


def custom_choices(ctx: AppContext) -> list[tuple[str, str]]:
    return [(f"{m.display_name} ({m.id})", m.id) for m in ctx.models.list_models() if m.custom]


def preview_text(p: CustomModelPreview, added: bool) -> str:
    """The derived capabilities as a card (user-given names and sources escaped)."""
    extended = (f", up to {p.max_extended_duration_s:g} s in windows" if p.max_extended_duration_s else "")
    local = p.source.startswith("folder:")  # nothing to download: its weights load from the folder
    head = (f"✅ **{md_escape(p.display_name)} was added** as `{md_escape(p.id)}`: choose it in *Switch model* "
            f"above (its weights {'load from the folder' if local else 'download'} then)." if added else
            f"**{md_escape(p.display_name)}** can be added as `{md_escape(p.id)}`: what its config.json says:")
    return "\n".join([
        head, "",
        "| Capability | Value |", "|---|---|",
        f"| Source | {md_escape(p.source)} |",
        f"| Architecture | {md_escape(p.architecture)} |",
        f"| Audio | {p.sample_rate / 1000:g} kHz, {fmt_channels(p.channels)}, {p.codebooks} codebooks at "
        f"{p.frame_rate:g} frames/s |",
        f"| Conditioning | {', '.join(p.conditioning)} |",
        f"| Parameters | {fmt_params(p.parameters)} |",
        f"| Max duration | {p.max_duration_s:g} s per window{extended} |",
        f"| Memory needed | about {fmt_gb(p.memory_gb)} (float32) |",
        f"| {'Weights on disk' if local else 'Download'} | {fmt_gb(p.download_gb)} |",
    ])


def _request(source: str, repo_id: str, revision: str, path: str, model_id: str,
             display_name: str) -> AddModelRequest:
    if source == FOLDER:
        return AddModelRequest(source="folder", path=(path or "").strip() or None, id=(model_id or "").strip() or None,
                               display_name=(display_name or "").strip() or None)
    return AddModelRequest(source="hub", repo_id=(repo_id or "").strip() or None,
                           revision=(revision or "").strip() or None, id=(model_id or "").strip() or None,
                           display_name=(display_name or "").strip() or None)


def build_custom_models_panel(ctx: AppContext) -> CustomModelsPanel:
    locked = not ctx.custom_models.allowed
    with gr.Accordion("Add or remove a model", open=False, elem_id="custom-models-box"):
        if locked:
            gr.Markdown("This studio's model list is locked (`--no-custom-models`): models cannot be added or removed "
                        "here.", elem_id="custom-models-locked")
        gr.Markdown("Add a MusicGen fine-tune (a `MusicgenForConditionalGeneration` or MusicGen Melody checkpoint "
                    "with safetensors weights). Only its `config.json` is read now; the weights download when you "
                    "first switch to it.")
        with gr.Row():
            source = gr.Radio([HUB, FOLDER], value=HUB, label="From", elem_id="custom-source", interactive=not locked)
        with gr.Row():
            repo_id = gr.Textbox(label="Hub repo", placeholder="org/name", elem_id="custom-repo", scale=2,
                                 interactive=not locked)
            revision = gr.Textbox(label="Revision (optional)", placeholder="main, a tag or a commit",
                                  elem_id="custom-revision", interactive=not locked)
            path = gr.Textbox(label="Folder", placeholder="a folder inside an import root", visible=False,
                              elem_id="custom-path", scale=2, interactive=not locked)
        with gr.Row():
            model_id = gr.Textbox(label="Id (optional)", placeholder="from the repo or folder name",
                                  elem_id="custom-id", interactive=not locked)
            display_name = gr.Textbox(label="Name (optional)", elem_id="custom-name", interactive=not locked)
        with gr.Row():
            check_btn = gr.Button("Check", elem_id="custom-check", interactive=not locked)
            add_btn = gr.Button("Add model", variant="primary", elem_id="custom-add", interactive=not locked)
        status = gr.Markdown(elem_id="custom-status")
        gr.Markdown("**Remove a model added here** (registry.yaml's models stay).")
        with gr.Row():
            remove_choice = gr.Dropdown(custom_choices(ctx), value=None, label="Model", elem_id="custom-remove-choice",
                                        scale=2, interactive=not locked, allow_custom_value=True)
            delete_files = gr.Checkbox(False, label="Also delete its downloaded files", elem_id="custom-delete-files",
                                       interactive=not locked)
            remove_btn = gr.Button("Remove", variant="stop", elem_id="custom-remove", interactive=not locked)
        remove_status = gr.Markdown(elem_id="custom-remove-status")
    return CustomModelsPanel(source, repo_id, revision, path, model_id, display_name, check_btn, add_btn, status,
                             remove_choice, delete_files, remove_btn, remove_status)


def wire_custom_models_panel(ctx: AppContext, panel: CustomModelsPanel, model_dropdowns: list[gr.Dropdown],
                             table: gr.Dataframe, config_model: gr.Dropdown | None = None,
                             demo: gr.Blocks | None = None) -> None:
    """model_dropdowns / table: the page's model lists (Settings and Generate), which gain or lose the model;
    config_model: the Generation settings' model list (by name). demo: its load refreshes the Remove list (the
    page is built once, at start: a page opened later lists the models added since)."""
    from studio.ui.gen_config_panel import config_choices
    from studio.ui.settings_tab import model_choices, models_table

    form = [panel.source, panel.repo_id, panel.revision, panel.path, panel.model_id, panel.display_name]
    panel.source.change(lambda s: (gr.Textbox(visible=s == HUB), gr.Textbox(visible=s == HUB),
                                   gr.Textbox(visible=s == FOLDER)),
                        panel.source, [panel.repo_id, panel.revision, panel.path], queue=False,
                        show_progress="hidden", api_visibility="private")

    def lists() -> list:
        choices = model_choices(ctx)
        return [*[gr.Dropdown(choices=choices) for _ in model_dropdowns], models_table(ctx),
                gr.Dropdown(choices=custom_choices(ctx), value=None),
                *([gr.Dropdown(choices=config_choices(ctx))] if config_model is not None else [])]

    def inspect_model(source, repo_id, revision, path, model_id, display_name) -> gr.Markdown:
        """What adding this model would add (its capabilities from config.json); nothing is stored."""
        with user_errors():
            return plain_status(preview_text(ctx.custom_models.inspect(
                _request(source, repo_id, revision, path, model_id, display_name)), added=False))

    def add_model(source, repo_id, revision, path, model_id, display_name, request: gr.Request = None) -> list:
        """Add the model (hub repo or server folder); it is then in every model list."""
        with user_errors():
            added = ctx.custom_models.add(_request(source, repo_id, revision, path, model_id, display_name),
                                          user=page_user(request))
        gr.Info(notify_text(f"{added.display_name} was added."))
        return [plain_status(preview_text(added, added=True)), *lists()]

    def remove_model(model_id, delete_files) -> list:
        """Remove a model added in the studio (delete_files: its downloaded files too)."""
        if not model_id:
            raise gr.Error("Choose a model to remove first.", print_exception=False)
        with user_errors():
            removed = ctx.custom_models.remove(model_id, delete_files=bool(delete_files))
        files = (f" Its files were deleted ({fmt_gb(removed.bytes_freed / 1e9)})."  # downloaded, or converted
                 if removed.files_deleted else " Its files were kept.")
        return [plain_status(f"✅ {md_escape(removed.display_name)} was removed.{files}"), *lists()]

    list_outputs = [*model_dropdowns, table, panel.remove_choice, *([config_model] if config_model else [])]
    if demo is not None:
        def removable(request: gr.Request):  # an admin area: a member's page is not sent the list
            return gr.Dropdown(choices=custom_choices(ctx)) if is_admin_page(request) else gr.skip()

        demo.load(removable, None, panel.remove_choice, queue=False,
                  show_progress="hidden", api_visibility="private")
    fail = lambda n: lambda text: [failed_status(f"❌ {md_escape(text)}"), *[gr.skip()] * n]  # noqa: E731
    panel.check_btn.click(failures_as_status(inspect_model, lambda text: failed_status(f"❌ {md_escape(text)}")),
                          form, panel.status, api_name="inspect_model_on_page")
    panel.add_btn.click(failures_as_status(add_model, fail(len(list_outputs))), form, [panel.status, *list_outputs],
                        api_name="add_model_on_page")
    panel.remove_btn.click(failures_as_status(remove_model, fail(len(list_outputs))),
                           [panel.remove_choice, panel.delete_files], [panel.remove_status, *list_outputs],
                           api_name="remove_model_on_page")
