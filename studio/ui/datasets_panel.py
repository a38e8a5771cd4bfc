"""The Training tab's datasets panel: create a dataset from a folder or an archive (with progress), read its report,
go through its clips in a grid (listen, edit captions in place, exclude or include), edit captions in bulk, see its
version and content hash, delete it.

Every action goes through ctx.datasets (studio.services.datasets.DatasetService); its errors become a message in
the action's status line (or gr.Error for scripts). The pure helpers below turn service results into widget values
and widget values into service requests (tests/ui/test_datasets_panel.py)."""
from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from gradio.context import Context
import pandas as pd
import soundfile as sf
from pydantic import ValidationError

from studio.context import AppContext
from studio.errors import StudioError
from studio.services.datasets import (ClipCaption, ClipInfo, ClipsEdit, CreateDatasetRequest, DatasetInfo,
                                      DatasetReport, DatasetSummary)
from studio.ui.common import failed_status, md_escape, notify_text, page_user, plain_status, user_errors
from studio.ui.access import is_admin_page

SOURCES = {"Folder on the server": "folder", "Upload archive": "upload"}
NEXT_MODEL = ""  # the model dropdown's value for "the model the next job runs on"
GRID_HEADERS = ["ID", "#", "File", "Start (s)", "Length (s)", "Use", "Caption"]
GRID_TYPES = ["number", "number", "str", "number", "number", "bool", "str"]
BULK_ACTIONS = {"Leave as they are": None, "Exclude them": True, "Include them": False}
MAX_PROBLEMS_SHOWN = 50
PLAYER_LABEL = "Clip (click a row of the grid)"


def empty_player() -> gr.Audio:
    return gr.Audio(value=None, label=PLAYER_LABEL)


@dataclass
class DatasetsPanel:
    root: gr.Column
    dataset: gr.Dropdown  # the dataset shown (its id); the runs form may read it
    refresh_btn: gr.Button
    summary: gr.Markdown
    report: gr.Markdown
    grid: gr.Dataframe
    save_btn: gr.Button
    revert_btn: gr.Button
    edit_status: gr.Markdown
    player: gr.Audio
    bulk_clips: gr.Textbox
    bulk_caption: gr.Textbox
    bulk_find: gr.Textbox
    bulk_replace: gr.Textbox
    bulk_prefix: gr.Textbox
    bulk_suffix: gr.Textbox
    bulk_action: gr.Radio
    bulk_btn: gr.Button
    delete_sure: gr.Checkbox
    delete_btn: gr.Button
    source: gr.Radio
    path: gr.Textbox
    archive: gr.File
    name: gr.Textbox
    model: gr.Dropdown
    max_clip: gr.Number
    overlap: gr.Number
    min_clip: gr.Number
    create_btn: gr.Button
    create_status: gr.Markdown


# ---- pure helpers --------------------------------------------------------------------------------------------
def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def dataset_label(d: DatasetSummary) -> str:
    return f"{d.name} v{d.version} · {d.clips} clips · {d.total_minutes:.1f} min"


def dataset_choices(datasets: list[DatasetSummary]) -> list[tuple[str, int]]:
    return [(dataset_label(d), d.id) for d in datasets]


def short_hash(content_hash: str) -> str:
    return f"sha256 {content_hash[:12]}…"


def summary_markdown(d: DatasetInfo | None) -> str:
    if d is None:
        return "No dataset yet: create one below from a folder of audio files with captions."
    excluded = f" ({d.excluded} excluded)" if d.excluded else ""
    return "\n".join([
        f"**{md_escape(d.name)}** · version {d.version} · `{short_hash(d.content_hash)}`",
        "",
        f"{d.clips} clips{excluded} · {d.total_minutes:.2f} min · for {md_escape(d.model_id)} "
        f"({d.sample_rate / 1000:g} kHz, {'mono' if d.channels == 1 else 'stereo'}) · clips up to "
        f"{d.max_clip_s:g} s, overlap {d.overlap_s:g} s  ",
        f"<small>From {md_escape(d.source)} · created by {md_escape(d.created_by)} · updated "
        f"{d.updated_at:%Y-%m-%d %H:%M} UTC</small>",
    ])


def report_markdown(r: DatasetReport) -> str:
    """The report of a creation: counts, then every problem (file, what, message)."""
    lines = [f"{r.files_found} audio files found, {r.files_used} used → **{r.clips} clips**, "
             f"{r.total_minutes:.2f} min · {r.sliced_files} sliced · {r.resampled_files} resampled · captions from "
             f"{md_escape(r.caption_source)}"]
    if not r.problems:
        return lines[0] + "  \nNo problems."
    lines += ["", f"**{plural(len(r.problems), 'problem')}:**", "",
              "| File | Problem | Details |", "|---|---|---|"]
    for p in r.problems[:MAX_PROBLEMS_SHOWN]:
        lines.append(f"| {md_escape(p.file)} | {p.code.replace('_', ' ')} | {md_escape(p.message)} |")
    if len(r.problems) > MAX_PROBLEMS_SHOWN:
        lines.append(f"| … | | {len(r.problems) - MAX_PROBLEMS_SHOWN} more (GET /api/datasets/{{id}} lists all) |")
    return "\n".join(lines)


def clip_rows(clips: list[ClipInfo]) -> pd.DataFrame:
    """The grid: one row per clip; 'Use' and 'Caption' are the editable columns."""
    rows = [[c.id, c.position + 1, c.source_file, round(c.start_s, 2), round(c.duration_s, 2), not c.excluded,
             c.caption] for c in clips]
    return pd.DataFrame(rows, columns=GRID_HEADERS)


def _truthy(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "✓")
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def grid_edit(clips: list[ClipInfo], frame: pd.DataFrame | None) -> ClipsEdit | None:
    """The grid's changes (captions typed, 'Use' ticked or unticked) as one edit; None when nothing changed. Rows
    are matched by their ID column; rows a person added or whose ID was changed are ignored."""
    if frame is None or len(frame) == 0:
        return None
    by_id = {c.id: c for c in clips}
    items = []
    for row in frame.itertuples(index=False):
        try:
            clip = by_id.get(int(row[0]))
        except (TypeError, ValueError):
            continue
        if clip is None:
            continue
        caption = "" if row[6] is None or (isinstance(row[6], float) and math.isnan(row[6])) else str(row[6])
        excluded = not _truthy(row[5])
        new_caption = caption if " ".join(caption.split()) != clip.caption else None
        new_excluded = excluded if excluded != clip.excluded else None
        if new_caption is not None or new_excluded is not None:
            items.append(ClipCaption(id=clip.id, caption=new_caption, excluded=new_excluded))
    return ClipsEdit(captions=items) if items else None


def parse_selection(text: str | None, clips: list[ClipInfo]) -> list[int] | None:
    """'all' (or nothing) -> None (every clip); '1-5, 8' -> the ids of the clips numbered so in the grid (#).
    ValueError saying what is wrong."""
    text = (text or "").strip().lower()
    if text in ("", "all", "*"):
        return None
    by_number = {c.position + 1: c.id for c in clips}
    chosen: list[int] = []
    for part in re.split(r"[,\s]+", text):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"{part!r} is not a clip number or a range like 3-7.")
        first, last = int(match[1]), int(match[2] or match[1])
        if first > last:
            raise ValueError(f"{part}: the range goes backwards.")
        missing = [n for n in (first, last) if n not in by_number]
        if missing:
            raise ValueError(f"There is no clip #{missing[0]} (the clips are #1 to #{len(clips)}).")
        chosen += [by_number[n] for n in range(first, last + 1) if n in by_number]
    return list(dict.fromkeys(chosen))


def bulk_edit(selection: list[int] | None, caption: str | None, find: str | None, replace: str | None,
              prefix: str | None, suffix: str | None, action: str | None) -> ClipsEdit:
    """The bulk form as one edit (blank fields do nothing); ValueError when it would do nothing at all."""
    excluded = BULK_ACTIONS.get(action or "", None)
    fields = dict(clip_ids=selection, caption=caption or None, find=find or None, replace=replace or "",
                  prefix=prefix or None, suffix=suffix or None, excluded=excluded)
    if not any(fields[k] is not None for k in ("caption", "find", "prefix", "suffix", "excluded")):
        raise ValueError("Fill in what to change: a caption, find and replace, a prefix or suffix, or exclude / "
                         "include.")
    return ClipsEdit(**fields)


def create_request(source_label: str, path: str | None, name: str | None, model: str | None,
                   max_clip: float | None, overlap: float | None, min_clip: float | None) -> CreateDatasetRequest:
    """The creation form as a service request; ValueError naming what the form gets wrong."""
    source = SOURCES.get(source_label, source_label)  # scripts may send folder / upload
    fields: dict = dict(source=source, name=(name or "").strip() or None, model_id=model or None)
    if source == "folder":
        fields["path"] = (path or "").strip() or None
    for key, value in (("max_clip_s", max_clip), ("overlap_s", overlap), ("min_clip_s", min_clip)):
        if value not in (None, ""):
            fields[key] = float(value)
    if fields.get("max_clip_s") == 0:
        fields.pop("max_clip_s")  # 0: the model's window
    try:
        return CreateDatasetRequest(**fields)
    except ValidationError as exc:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None


def refusal_markdown(message: str, report: dict | None) -> str:
    """A refused creation: why, and the report when the files were read."""
    text = f"❌ **Not created.** {md_escape(message)}"
    if report:
        text += "\n\n" + report_markdown(DatasetReport.model_validate(report))
    return text


# ---- layout ----------------------------------------------------------------------------------------------------
def build_datasets_panel(ctx: AppContext) -> DatasetsPanel:
    with gr.Column(elem_id="datasets-panel") as root:
        gr.Markdown("### Datasets")
        with gr.Row(equal_height=True):
            dataset = gr.Dropdown([], value=None, label="Dataset", elem_id="dataset-choice", scale=4)
            refresh_btn = gr.Button("↻ Refresh", size="sm", scale=0, min_width=100, elem_id="datasets-refresh")
        summary = gr.Markdown(summary_markdown(None), elem_id="dataset-summary")
        with gr.Accordion("Report", open=False, elem_id="dataset-report-accordion"):
            report = gr.Markdown(elem_id="dataset-report")
        grid = gr.Dataframe(clip_rows([]), headers=GRID_HEADERS, datatype=GRID_TYPES, interactive=True,
                            static_columns=[0, 1, 2, 3, 4], label="Clips: click a row to listen; edit captions and "
                            "tick 'Use' in place, then Save", max_height=420, wrap=True, elem_id="dataset-clips",
                            column_widths=["6%", "5%", "18%", "8%", "8%", "6%", "49%"])
        with gr.Row(equal_height=True):
            save_btn = gr.Button("Save edits", variant="primary", scale=0, min_width=140, elem_id="dataset-save")
            revert_btn = gr.Button("Undo unsaved edits", scale=0, min_width=160, elem_id="dataset-revert")
            edit_status = gr.Markdown(elem_id="dataset-edit-status")
        player = gr.Audio(label=PLAYER_LABEL, type="numpy", interactive=False, elem_id="dataset-player")
        with gr.Accordion("Edit many clips", open=False, elem_id="dataset-bulk"):
            bulk_clips = gr.Textbox(label="Clips", value="all", max_lines=1, elem_id="bulk-clips",
                                    info="'all', or numbers (#) and ranges: 1-5, 8")
            with gr.Row():
                bulk_caption = gr.Textbox(label="Replace the whole caption by", max_lines=1, elem_id="bulk-caption")
                bulk_find = gr.Textbox(label="Find", max_lines=1, elem_id="bulk-find")
                bulk_replace = gr.Textbox(label="Replace by", max_lines=1, elem_id="bulk-replace")
            with gr.Row():
                bulk_prefix = gr.Textbox(label="Add before", max_lines=1, elem_id="bulk-prefix")
                bulk_suffix = gr.Textbox(label="Add after", max_lines=1, elem_id="bulk-suffix")
                bulk_action = gr.Radio(list(BULK_ACTIONS), value="Leave as they are", label="Training use",
                                       elem_id="bulk-action")
            bulk_btn = gr.Button("Apply to these clips", elem_id="bulk-apply")
        with gr.Row(equal_height=True):
            delete_sure = gr.Checkbox(label="Delete this dataset (its clips' audio too)", value=False, scale=3,
                                      elem_id="dataset-delete-sure")
            delete_btn = gr.Button("Delete dataset", variant="stop", scale=0, min_width=140, interactive=False,
                                   elem_id="dataset-delete")
        with gr.Accordion("New dataset", open=True, elem_id="dataset-create"):
            roots = ", ".join(str(r) for r in ctx.settings.allowed_import_roots)
            source = gr.Radio(list(SOURCES), value="Folder on the server", label="Source", elem_id="dataset-source")
            path = gr.Textbox(label="Folder on the server", max_lines=1, elem_id="dataset-path",
                              placeholder="my-songs  (or an absolute path)",
                              info=f"Audio files (wav, flac, ogg, mp3) with a .txt caption each, or a metadata.jsonl "
                                   f"/ metadata.csv (file_name, text), inside: {roots}")
            archive = gr.File(label="Archive of the dataset folder (.zip or .tar.gz)", visible=False,
                              file_types=[".zip", ".gz", ".tgz", ".tar"], elem_id="dataset-file")
            with gr.Row():
                name = gr.Textbox(label="Name (optional)", max_lines=1, elem_id="dataset-name",
                                  info="Default: the folder's or archive's name")
                model = gr.Dropdown([("The model the next job runs on", NEXT_MODEL)]
                                    + [(m.display_name, m.id) for m in ctx.registry.models], value=NEXT_MODEL,
                                    label="Prepare for", elem_id="dataset-model",
                                    info="Its sample rate, channels and window")
            with gr.Row():
                max_clip = gr.Number(label="Longest clip (s)", value=0, elem_id="dataset-max-clip",
                                     info="0: the model's window; longer files are sliced")
                overlap = gr.Number(label="Overlap (s)", value=0, elem_id="dataset-overlap",
                                    info="between consecutive slices of a long file")
                min_clip = gr.Number(label="Shortest clip (s)", value=1, elem_id="dataset-min-clip",
                                     info="shorter files and last slices are left out")
            create_btn = gr.Button("Create dataset", variant="primary", elem_id="dataset-create-btn")
            create_status = gr.Markdown(elem_id="dataset-create-status")
    return DatasetsPanel(root, dataset, refresh_btn, summary, report, grid, save_btn, revert_btn, edit_status, player,
                         bulk_clips, bulk_caption, bulk_find, bulk_replace, bulk_prefix, bulk_suffix, bulk_action,
                         bulk_btn, delete_sure, delete_btn, source, path, archive, name, model, max_clip, overlap,
                         min_clip, create_btn, create_status)


# ---- events ----------------------------------------------------------------------------------------------------
def wire_datasets_panel(ctx: AppContext, panel: DatasetsPanel, tab_item: gr.Tab | None = None) -> None:
    private = dict(api_visibility="private", show_progress="hidden")

    def view(dataset_id: int | None) -> list:
        """[dropdown, summary, report, grid, player, delete checkbox] for a dataset (None: the newest, if any)."""
        datasets = ctx.datasets.list()
        ids = [d.id for d in datasets]
        if dataset_id not in ids:
            dataset_id = ids[0] if ids else None
        if dataset_id is None:
            return [gr.Dropdown(choices=[], value=None), summary_markdown(None), "", clip_rows([]), empty_player(),
                    False]
        with user_errors():
            info = ctx.datasets.get(dataset_id)
            clips = ctx.datasets.clips(dataset_id)
        return [gr.Dropdown(choices=dataset_choices(datasets), value=dataset_id), summary_markdown(info),
                report_markdown(info.report), clip_rows(clips), empty_player(), False]

    view_outputs = [panel.dataset, panel.summary, panel.report, panel.grid, panel.player, panel.delete_sure]

    def show(dataset_id) -> list:
        return view(int(dataset_id) if dataset_id not in (None, "") else None)

    panel.dataset.input(show, panel.dataset, view_outputs, **private)
    panel.refresh_btn.click(show, panel.dataset, view_outputs, **private)
    panel.revert_btn.click(lambda d: [*show(d), plain_status()], panel.dataset, [*view_outputs, panel.edit_status],
                           **private)
    # The datasets as they are when the page opens (the page may open on the Training tab, from a run's link),
    # and again whenever the tab is chosen (datasets made by scripts meanwhile).
    def show_admin(dataset_id, request: gr.Request) -> list:
        # an admin area: on a member's page its summary's change event (the training form) would be refused
        return show(dataset_id) if is_admin_page(request) else [gr.skip()] * len(view_outputs)

    page = Context.root_block
    if page is not None:
        page.load(show_admin, panel.dataset, view_outputs, **private)
    if tab_item is not None:
        tab_item.select(show, panel.dataset, view_outputs, **private)

    # Listen: a row's clip in the player (read here: the clips' folder is not one Gradio serves).
    def listen(dataset_id, evt: gr.SelectData):
        row = evt.row_value or []
        try:
            clip_id = int(float(row[0]))
        except (IndexError, TypeError, ValueError):
            return gr.skip()
        with user_errors():
            path = ctx.datasets.clip_audio(int(dataset_id), clip_id)
        data, rate = sf.read(str(path), dtype="int16")  # what the player plays; Gradio would convert floats
        return gr.Audio(value=(rate, data), label=f"Clip #{row[1]} · {html.escape(str(row[2]))} from {row[3]} s")

    panel.grid.select(listen, panel.dataset, panel.player, **private)

    # Edits: the grid's, then the bulk form's.
    def saved(info: DatasetInfo, before: int) -> str:
        if info.version == before:
            return "Nothing changed."
        return f"✅ Saved as version {info.version} · `{short_hash(info.content_hash)}`."

    def save_grid(dataset_id, frame, request: gr.Request | None = None) -> list:
        """Save the grid's caption and 'Use' changes as one new version of the dataset."""
        if dataset_id in (None, ""):
            return [*[gr.skip()] * len(view_outputs), failed_status("❌ Choose a dataset first.")]
        dataset_id = int(dataset_id)
        try:
            clips = ctx.datasets.clips(dataset_id)
            edit = grid_edit(clips, frame)
            if edit is None:
                return [*[gr.skip()] * len(view_outputs), plain_status("Nothing changed.")]
            before = ctx.datasets.get(dataset_id).version
            info = ctx.datasets.edit_clips(dataset_id, edit, page_user(request))
        except (StudioError, ValueError) as exc:  # ValueError: a ValidationError too; said in the status line
            return [*[gr.skip()] * len(view_outputs), failed_status(f"❌ **Not saved.** {md_escape(_message(exc))}")]
        return [*view(dataset_id), plain_status(saved(info, before))]

    panel.save_btn.click(save_grid, [panel.dataset, panel.grid], [*view_outputs, panel.edit_status],
                         api_name="save_dataset_grid", show_progress="hidden")

    def apply_bulk(dataset_id, clips_text, caption, find, replace, prefix, suffix, action,
                   request: gr.Request | None = None) -> list:
        """Edit many clips at once: clips 'all' or '1-5, 8' (# in the grid); replace the caption, find and replace,
        add a prefix or suffix, exclude or include."""
        if dataset_id in (None, ""):
            return [*[gr.skip()] * len(view_outputs), failed_status("❌ Choose a dataset first.")]
        dataset_id = int(dataset_id)
        try:
            clips = ctx.datasets.clips(dataset_id)
            edit = bulk_edit(parse_selection(clips_text, clips), caption, find, replace, prefix, suffix, action)
            before = ctx.datasets.get(dataset_id).version
            info = ctx.datasets.edit_clips(dataset_id, edit, page_user(request))
        except (StudioError, ValueError) as exc:  # said in the status line
            return [*[gr.skip()] * len(view_outputs), failed_status(f"❌ **Not applied.** {md_escape(_message(exc))}")]
        return [*view(dataset_id), plain_status(saved(info, before))]

    panel.bulk_btn.click(apply_bulk, [panel.dataset, panel.bulk_clips, panel.bulk_caption, panel.bulk_find,
                                      panel.bulk_replace, panel.bulk_prefix, panel.bulk_suffix, panel.bulk_action],
                         [*view_outputs, panel.edit_status], api_name="edit_dataset_clips", show_progress="hidden")

    # Delete, behind its checkbox.
    panel.delete_sure.change(lambda sure: gr.Button(interactive=bool(sure)), panel.delete_sure, panel.delete_btn,
                             queue=False, **private)

    def delete(dataset_id, sure) -> list:
        """Delete a dataset and its clips' audio (refused while a queued or running training run uses it)."""
        if dataset_id in (None, "") or not sure:
            return [*[gr.skip()] * len(view_outputs), gr.skip()]
        try:
            info = ctx.datasets.delete(int(dataset_id))
        except StudioError as exc:
            return [*[gr.skip()] * (len(view_outputs) - 1), False,
                    failed_status(f"❌ **Not deleted.** {md_escape(_message(exc))}")]
        gr.Info(notify_text(f"Deleted dataset {info.name}."))
        return [*view(None), plain_status(f"Deleted {md_escape(info.name)} v{info.version}.")]

    panel.delete_btn.click(delete, [panel.dataset, panel.delete_sure], [*view_outputs, panel.edit_status],
                           api_name="delete_dataset", show_progress="hidden")

    # Create.
    def show_source(label: str) -> list:
        source = SOURCES.get(label, "folder")
        return [gr.Textbox(visible=source == "folder"), gr.File(visible=source == "upload")]

    panel.source.change(show_source, panel.source, [panel.path, panel.archive], queue=False, **private)

    def create(source, path, archive, name, model, max_clip, overlap, min_clip, request: gr.Request | None = None,
               progress=gr.Progress()) -> list:
        """Create a dataset: source 'Folder on the server' (path inside an import root) or 'Upload archive' (a .zip
        / .tar.gz); name (default: the folder's), model (default: the one the next job runs on), longest clip
        (0: the model's window), overlap and shortest clip in seconds."""
        try:
            req = create_request(source, path, name, model, max_clip, overlap, min_clip)
        except ValueError as exc:
            return [*[gr.skip()] * len(view_outputs), failed_status(f"❌ **Check the form:** {md_escape(str(exc))}"),
                    gr.skip()]
        upload = Path(archive) if req.source == "upload" and archive else None
        progress(0, desc="Starting")
        try:
            info = ctx.datasets.create(req, upload=upload, upload_name=upload.name if upload else None,
                                       user=page_user(request),
                                       on_progress=lambda fraction, message: progress(fraction, desc=message))
        except StudioError as exc:  # refusals (with the report when the files were read)
            report = getattr(exc, "extra", {}).get("report")
            return [*[gr.skip()] * len(view_outputs), failed_status(refusal_markdown(_message(exc), report)),
                    gr.skip()]
        status = (f"✅ Created **{md_escape(info.name)}**: {info.clips} clips, {info.total_minutes:.2f} min"
                  + (f", {plural(len(info.report.problems), 'problem')} (see the report)" if info.report.problems
                     else "")
                  + ".")
        return [*view(info.id), plain_status(status), None]

    panel.create_btn.click(lambda: plain_status(), None, panel.create_status, queue=False, **private)
    panel.create_btn.click(create, [panel.source, panel.path, panel.archive, panel.name, panel.model, panel.max_clip,
                                    panel.overlap, panel.min_clip],
                           [*view_outputs, panel.create_status, panel.archive], api_name="create_dataset",
                           show_progress_on=[panel.create_status])


def _message(exc: Exception) -> str:
    if isinstance(exc, gr.Error):
        return html.unescape(str(exc.message))
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return str(getattr(exc, "message", None) or exc)
