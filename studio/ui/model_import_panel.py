"""Settings tab: "Import an audiocraft checkpoint". A MusicGen fine-tune in audiocraft's format (an exported
state_dict.bin + compression_state_dict.bin, or a solver checkpoint.th), from a folder inside an import root, a hub
repo or an upload, is converted into the studio's format and added to the models. Progress follows the import's
events; the end is a report card (what was read, what it became) or the refusal with what to do. Every action goes
through ctx.model_import (studio.services.model_import)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Generator

import gradio as gr
from pydantic import ValidationError

from studio.context import AppContext
from studio.errors import InvalidRequest, StudioError
from studio.services.model_import import ImportEvent, ImportReport, ImportRequest
from studio.ui.common import md_escape, notify_text, page_user
from studio.ui.custom_models_panel import custom_choices, preview_text

FOLDER, HUB, UPLOAD = "Folder on this server", "Hugging Face Hub", "Upload"
SOURCES = {FOLDER: "folder", HUB: "hub", UPLOAD: "upload"}
PROGRESS_HEIGHT = 72  # px: the status area while an import runs
STAGES = {"checking": "Checking", "downloading": "Downloading", "converting": "Converting",
          "registering": "Registering", "ready": "Ready", "error": "Failed"}

# What to do after a refusal, where the service's message does not say it already.
HINTS = {
    "unsupported_option": "The studio runs MusicGen with transformers, which cannot represent this option: this "
                          "checkpoint cannot be imported.",
    "invalid_audiocraft_config": "Import the language model's checkpoint as audiocraft wrote it (state_dict.bin or "
                                 "the solver's checkpoint.th).",
    "unreadable_checkpoint": "Check that the file is the one audiocraft wrote, whole (not a partial copy).",
    "invalid_checkpoint_tensors": "The tensors do not match the configuration saved beside them: import the "
                                  "checkpoint as audiocraft wrote it.",
    "missing_checkpoint": "Import the folder holding state_dict.bin (with compression_state_dict.bin beside it) or "
                          "a solver's checkpoint.th, or that file itself.",
    "folder_not_found": "Give a folder inside one of the import folders listed above (a relative path is looked up "
                        "in each).",
    "repo_not_found": "Check the repo id and revision (a private repo needs a token in HF_TOKEN on the server).",
    "hub_unreachable": "Check the server's connection to the hub, then import again.",
    "disk_full": "Free some space in the studio's data folder, then import again.",
    "import_failed": "The server's log has the details.",
    "invalid_archive": "Upload a .zip or .tar.gz of the checkpoint's folder, or the checkpoint file itself.",
}


@dataclass
class ModelImportPanel:
    source: gr.Radio
    path: gr.Textbox
    repo_id: gr.Textbox
    revision: gr.Textbox
    file: gr.File
    model_id: gr.Textbox
    display_name: gr.Textbox
    import_btn: gr.Button
    status: gr.Markdown
    report: gr.JSON  # hidden: the report for scripts (gradio_client)
    api_source: gr.Textbox  # hidden: the scripts' source
    api_btn: gr.Button  # hidden: the scripts' endpoint, which fails with the refusal


def source_of(label: str | None) -> str:
    """The radio's label, or 'folder' / 'hub' / 'upload' (scripts)."""
    text = (label or "").strip()
    if text in SOURCES:
        return SOURCES[text]
    if text.lower() in SOURCES.values():
        return text.lower()
    raise InvalidRequest(f"Choose where the checkpoint comes from: {', '.join(SOURCES)} (or folder, hub, upload).",
                         code="invalid_source")


def import_request(source: str, path: str | None, repo_id: str | None, revision: str | None,
                   model_id: str | None, display_name: str | None) -> ImportRequest:
    """The service's request for what the form holds (only the chosen source's fields)."""
    kind = source_of(source)
    clean = lambda text: (text or "").strip() or None  # noqa: E731
    fields = dict(source=kind, id=clean(model_id), display_name=clean(display_name))
    if kind == "folder":
        fields["path"] = clean(path)
    elif kind == "hub":
        fields.update(repo_id=clean(repo_id), revision=clean(revision))
    try:
        return ImportRequest(**fields)
    except ValidationError as exc:  # too long: said per field, never a traceback
        labels = {"id": "model id", "display_name": "name", "repo_id": "hub repo"}
        problems = "; ".join(f"{labels.get(str(e['loc'][0]), str(e['loc'][0]))}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(f"{problems}.", code="invalid_form") from None


def uploaded_file(ctx: AppContext, path: str | os.PathLike | None) -> Path:
    """The file the page received, which must be a regular file in the studio's Gradio upload folder (the request
    guard checks this too; a handler never reads another path)."""
    from studio.server import gradio_temp_dir  # the server builds the page: imported when a file arrives

    if not path:
        raise InvalidRequest("Choose the file to upload first (a .zip or .tar.gz of the checkpoint's folder, or the "
                             "state_dict.bin / checkpoint.th itself).", code="missing_archive")
    try:
        real = Path(os.path.realpath(path))
        ok = real.is_relative_to(gradio_temp_dir(ctx)) and real.is_file()
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise InvalidRequest("The checkpoint must be uploaded in this page.", code="file_not_uploaded")
    return real


def failure_text(message: str, code: str | None) -> str:
    """The refusal as plain text, with what to do when its message does not say it."""
    text = message.strip()
    if text.split(" ", 1)[0].isalpha() and text[:1].islower():  # the hub's messages are lowercase phrases
        text = text[:1].upper() + text[1:]
    if text and text[-1] not in ".!?)":
        text += "."
    hint = HINTS.get(code or "")
    return f"{text} {hint}" if hint and hint not in text else text


def fmt_bytes(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n} bytes"


def progress_text(event: ImportEvent) -> str:
    """What the progress bar says: the stage, the message, and the bytes of a download or hash."""
    stage = STAGES.get(event.stage, event.stage)
    text = event.message if event.message.startswith(stage) else f"{stage}: {event.message}"
    if event.bytes_total:
        text += f" ({fmt_bytes(event.bytes_done or 0)} of {fmt_bytes(event.bytes_total)})"
    return text


def configuration_text(config: dict) -> str:
    """The checkpoint's shape in a line (every value from the file: escaped)."""
    def get(key):
        return md_escape(str(config.get(key, "?")))

    parts = [f"dim {get('dim')}", f"{get('layers')} layers", f"{get('heads')} heads", f"{get('codebooks')} codebooks",
             {1: "mono", 2: "stereo"}.get(config.get("channels"), f"{get('channels')} channels"),
             "melody conditioning" if config.get("melody") else "text conditioning"]
    if config.get("segment_s") is not None:
        parts.append(f"trained on {get('segment_s')} s segments")
    return ", ".join(parts)


def report_text(report: ImportReport) -> str:
    """The report card: the model it became (the custom-models card), what was read and converted, the notes.
    Every text from the request or the file is escaped."""
    version = md_escape(report.audiocraft_version) if report.audiocraft_version else "not recorded"
    layout = {"exported": "exported (state_dict.bin)", "solver": "solver checkpoint"}.get(report.layout,
                                                                                          md_escape(report.layout))
    rows = [
        "",
        "| Converted from | |", "|---|---|",
        f"| Checkpoint | {md_escape(report.checkpoint)} |",
        f"| Layout | {layout} |",
        f"| audiocraft version | {version} |",
        f"| sha256 | `{md_escape(report.sha256[:16])}` |",
        f"| Configuration | {configuration_text(report.configuration)} |",
        f"| Text encoder | {md_escape(report.text_encoder)} |",
        f"| Codec | {md_escape(report.codec)} |",
        f"| Tensors | {report.tensors} |",
        f"| Size | {fmt_bytes(report.weights_bytes)} |",
        f"| Time | {report.seconds:g} s |",
    ]
    notes = ["", "**Notes**", "", *[f"- {md_escape(n)}" for n in report.notes]] if report.notes else []
    return "\n".join([preview_text(report.model, added=True), *rows, *notes])


def import_events(ctx: AppContext, source, path, repo_id, revision, file, model_id, display_name,
                  user: str) -> Generator[ImportEvent, None, ImportReport]:
    """Start the import and yield its progress events; returns its report. A refusal or failure raises
    StudioError (failure_text adds what to do)."""
    req = import_request(source, path, repo_id, revision, model_id, display_name)
    upload = upload_name = None
    if req.source == "upload":
        received = uploaded_file(ctx, file)
        upload_name = received.name
        upload = ctx.model_import.copy_upload(received)
    for event in ctx.model_import.start(req, user, upload=upload, upload_name=upload_name):
        if event.stage == "ready":
            return event.report
        if event.stage == "error":
            raise InvalidRequest(event.message, code=event.code or "import_failed")
        yield event
    raise InvalidRequest("The import ended without a result: GET /api/models/import says how it ended.",
                         code="import_failed")


def run_import(ctx: AppContext, source, path, repo_id, revision, file, model_id, display_name, user: str,
               progress=None) -> ImportReport:
    """The import to its end: its report, with progress(fraction, desc=...) for each event on the way."""
    steps = import_events(ctx, source, path, repo_id, revision, file, model_id, display_name, user)
    while True:
        try:
            event = next(steps)
        except StopIteration as done:
            return done.value
        if progress is not None:
            progress(event.fraction, desc=progress_text(event))


def build_model_import_panel(ctx: AppContext) -> ModelImportPanel:
    locked = not ctx.custom_models.allowed
    roots = ", ".join(str(r) for r in ctx.settings.allowed_import_roots)
    with gr.Accordion("Import an audiocraft checkpoint", open=False, elem_id="model-import-box"):
        if locked:
            gr.Markdown("This studio's model list is locked (`--no-custom-models`): checkpoints cannot be imported "
                        "here.", elem_id="model-import-locked")
        gr.Markdown(
            "A MusicGen fine-tune made with audiocraft (Meta's training code): `state_dict.bin` with "
            "`compression_state_dict.bin` beside it as audiocraft exports them, or a training (solver) "
            "`checkpoint.th`. It is read without running anything from it, converted to the studio's format and "
            "added to the models. The text encoder (`t5-base`) and codec (`facebook/encodec_32khz`) it names are "
            "downloaded once when missing. LoRA adapters trained on audiocraft's modules do not apply to the "
            "converted model (merge them into the checkpoint first).")
        source = gr.Radio(list(SOURCES), value=FOLDER, label="From", elem_id="import-source", interactive=not locked)
        path = gr.Textbox(label="Folder or checkpoint file", max_lines=1, elem_id="import-path",
                          placeholder="my-finetune  (or an absolute path)", interactive=not locked,
                          info=f"Inside one of the import folders: {roots}")
        with gr.Row():
            repo_id = gr.Textbox(label="Hub repo", placeholder="org/name", max_lines=1, elem_id="import-repo",
                                 scale=2, visible=False, interactive=not locked)
            revision = gr.Textbox(label="Revision (optional)", placeholder="main, a tag or a commit", max_lines=1,
                                  elem_id="import-revision", visible=False, interactive=not locked)
        file = gr.File(label="A .zip or .tar.gz of the checkpoint's folder, or the .bin / .th file itself",
                       file_types=[".zip", ".gz", ".tgz", ".tar", ".bin", ".th", ".pt", ".pth", ".ckpt"],
                       visible=False, elem_id="import-file", interactive=not locked)
        with gr.Row():
            model_id = gr.Textbox(label="Model id (optional)", placeholder="from the folder, repo or file name",
                                  max_lines=1, elem_id="import-id", interactive=not locked)
            display_name = gr.Textbox(label="Name (optional)", max_lines=1, elem_id="import-name",
                                      interactive=not locked)
        import_btn = gr.Button("Import", variant="primary", elem_id="import-btn", interactive=not locked)
        status = gr.Markdown(elem_id="import-status")
        report = gr.JSON(visible=False, elem_id="import-report")
        # the scripts' endpoint: its own source box, which takes 'folder' / 'hub' / 'upload' as well as the labels
        api_source = gr.Textbox(visible=False, elem_id="import-api-source")
        api_btn = gr.Button(visible=False, elem_id="import-api")
    return ModelImportPanel(source, path, repo_id, revision, file, model_id, display_name, import_btn, status,
                            report, api_source, api_btn)


def wire_model_import_panel(ctx: AppContext, panel: ModelImportPanel, model_dropdowns: list[gr.Dropdown],
                            table: gr.Dataframe, remove_choice: gr.Dropdown,
                            config_model: gr.Dropdown | None = None) -> None:
    """model_dropdowns / table / remove_choice / config_model (the Generation settings' list): the page's model
    lists, which gain the imported model at once."""
    from studio.ui.gen_config_panel import config_choices
    from studio.ui.settings_tab import model_choices, models_table

    private = dict(api_visibility="private")

    def show_source(label) -> list:
        kind = SOURCES.get(label, "folder")
        return [gr.Textbox(visible=kind == "folder"), gr.Textbox(visible=kind == "hub"),
                gr.Textbox(visible=kind == "hub"), gr.File(visible=kind == "upload")]

    panel.source.change(show_source, panel.source, [panel.path, panel.repo_id, panel.revision, panel.file],
                        queue=False, show_progress="hidden", **private)

    def lists() -> list:
        choices = model_choices(ctx)
        return [*[gr.Dropdown(choices=choices) for _ in model_dropdowns], models_table(ctx),
                gr.Dropdown(choices=custom_choices(ctx), value=None),
                *([gr.Dropdown(choices=config_choices(ctx))] if config_model is not None else [])]

    def import_audiocraft(source, path, repo_id, revision, file, model_id, display_name,
                          request: gr.Request = None, progress=gr.Progress()) -> list:
        """Import an audiocraft MusicGen checkpoint and add it to the models. source: 'folder' (path: a folder or
        checkpoint file inside an import root), 'hub' (repo_id, revision) or 'upload' (file: a .zip / .tar.gz of
        the folder or the state_dict.bin / checkpoint.th itself); id and display_name optional. Returns the
        report as Markdown and as JSON (the model's id is report['model']['id'])."""
        progress(0, desc="Starting the import")
        try:
            report = run_import(ctx, source, path, repo_id, revision, file, model_id, display_name,
                                page_user(request), progress)
        except StudioError as exc:
            raise gr.Error(notify_text(failure_text(exc.message, exc.code)), print_exception=False) from None
        gr.Info(notify_text(f"{report.model.display_name} was imported."))
        return [report_text(report), report.model_dump(mode="json")]

    form = [panel.source, panel.path, panel.repo_id, panel.revision, panel.file, panel.model_id,
            panel.display_name]
    outputs = [panel.status, panel.report, *model_dropdowns, table, remove_choice,
               *([config_model] if config_model is not None else [])]

    def on_page(source, path, repo_id, revision, file, model_id, display_name, request: gr.Request = None,
                progress=gr.Progress()):
        """The page's Import: Gradio's progress bar (stage, message, bytes) in the status area, then the report
        and the model in every list at once; a refusal is a message under the button, not Gradio's error
        badge."""
        skip = [gr.skip()] * (len(outputs) - 1)
        # room for the progress bar and its text (an empty status is no line high: the bar did not show)
        yield [gr.Markdown("", elem_classes=[], min_height=PROGRESS_HEIGHT), *skip]
        progress(0, desc="Starting the import")
        try:
            report = run_import(ctx, source, path, repo_id, revision, file, model_id, display_name,
                                page_user(request), progress)
        except StudioError as exc:
            yield [gr.Markdown(f"❌ **Not imported.** {md_escape(failure_text(exc.message, exc.code))}",
                               elem_classes=["studio-failed"], min_height=0), *skip]
            return
        gr.Info(notify_text(f"{report.model.display_name} was imported."))
        yield [gr.Markdown(report_text(report), elem_classes=[], min_height=0), report.model_dump(mode="json"),
               *lists()]

    # concurrency_limit=None: the studio runs one import at a time and says so (import_running), where Gradio's
    # queue would only keep a second page waiting without a word
    panel.import_btn.click(on_page, form, outputs, show_progress_on=[panel.status], concurrency_limit=None,
                           api_name="import_audiocraft_on_page", **private)
    # scripts: the report (Markdown, JSON), or the failing event with the refusal
    panel.api_btn.click(import_audiocraft, [panel.api_source, *form[1:]], [panel.status, panel.report],
                        api_name="import_audiocraft", concurrency_limit=None)
