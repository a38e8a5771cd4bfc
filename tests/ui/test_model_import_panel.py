"""The Settings tab's "Import an audiocraft checkpoint" handlers called as Gradio calls them (no browser, no server):
the committed audiocraft fixture `mono` imported from a folder in the import root (its text encoder and codec served
by the fake hub), with progress and a report card whose user and file texts are escaped; a refused upload; a locked
studio. tests/ui/test_browser_custom_models.py drives the same in Chromium."""
from __future__ import annotations

import html
import re
import shutil
import zipfile

import gradio as gr
import pytest

from studio.errors import InvalidRequest
from studio.server import gradio_temp_dir
from studio.ui.app import build_ui
from studio.ui.common import notify_text
from studio.ui.model_import_panel import FOLDER, HUB, UPLOAD, import_request, report_text
from tests.audiocraft_support import CODEC_REPO, FIXTURES, T5_REPO, write_reference_repos
from tests.fakehub import serve_repos

HOSTILE = '<img src=x onerror=alert(1)> **bold** [link](https://evil.example) | cell'


def _fn(demo: gr.Blocks, api_name: str):
    found = [f.fn for f in demo.fns.values() if f.api_name == api_name]
    assert found, api_name
    return found[0]


class Progress:
    def __init__(self):
        self.calls: list[tuple[float | None, str]] = []

    def __call__(self, fraction, desc=None, **_kw):
        self.calls.append((fraction, desc or ""))


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_folder):
    repos = write_reference_repos(tiny_folder, tmp_path_factory.mktemp("refs"))
    checkpoint = {n: (FIXTURES / "mono" / n).read_bytes() for n in ("state_dict.bin", "compression_state_dict.bin")}
    with serve_repos({T5_REPO: repos[T5_REPO], CODEC_REPO: repos[CODEC_REPO], "alice/mono-ft": checkpoint}) as fake:
        yield fake


@pytest.fixture(scope="module")
def studio(make_module_ctx, hub):
    """A studio (the fake hub as its hub) with the mono fixture in its import root, and its page's handlers."""
    ctx = make_module_ctx(hf_endpoint=hub.url)
    imports = ctx.settings.data_dir / "imports"
    imports.mkdir(exist_ok=True)
    shutil.copytree(FIXTURES / "mono", imports / "mono", ignore=shutil.ignore_patterns("expected*"))
    return ctx, build_ui(ctx)


@pytest.fixture(scope="module")
def imported(studio):
    """The page's Import, once for the module: the mono folder, with a hostile name."""
    ctx, demo = studio
    notices: list[str] = []
    real_info, gr.Info = gr.Info, notices.append
    progress = Progress()
    try:
        steps = list(_fn(demo, "import_audiocraft_on_page")(FOLDER, "mono", "", "", None, "", HOSTILE,
                                                            request=None, progress=progress))
    finally:
        gr.Info = real_info
    return steps[-1], progress.calls, notices, [s[0] for s in steps[:-1]]


def test_a_folder_import_shows_progress_and_a_report(studio, imported):
    ctx, _ = studio
    out, progress, notices, lines = imported
    status, report = out[0], out[1]
    card = status.value
    assert "Not imported" not in card and status.elem_classes == []
    model_id = report["model"]["id"]
    assert model_id == "mono" and ctx.registry.is_custom("mono")
    plain = html.unescape(card.replace("\\", ""))
    for text in ("was added", "Converted from", "exported (state_dict.bin)", "1.3.0", "t5-base",
                 "facebook/encodec_32khz", "codebooks", "text conditioning", "Notes",
                 "do not apply to the converted model"):
        assert text in plain, text
    from studio.services.model_import import ADAPTER_NOTE  # the adapter note, whole
    assert ADAPTER_NOTE in plain
    # progress: stages with their messages, the downloads of the text encoder and codec with their bytes
    descs = [d for _, d in progress]
    assert descs[0] == "Starting the import"
    assert any(d.startswith("Checking: Importing folder:mono") for d in descs)
    assert any(d.startswith("Downloading t5-base") and " of " in d for d in descs), descs
    assert any(d.startswith("Downloading facebook/encodec_32khz") for d in descs)
    assert any(d.startswith("Converting: ") for d in descs) and any(d.startswith("Registering: ") for d in descs)
    assert all(f is None or 0 <= f <= 1 for f, _ in progress)
    # the status first makes room for the progress bar (an empty status was no line high: no bar showed)
    [first] = lines
    assert first.value == "" and first.min_height > 0 and status.min_height == 0
    # the model lists: both Switch model dropdowns, the table, the remove list
    for dropdown in out[2:4]:
        assert "mono" in [value for _, value in dropdown.constructor_args["choices"]]
    assert any("<img" in row[0] for row in out[4])  # the table's cells are text, not markup
    assert "mono" in [value for _, value in out[5].constructor_args["choices"]]
    assert notices == [notify_text(f"{HOSTILE} was imported.")]


def test_a_hub_import_through_the_scripts_endpoint(studio, imported):
    """'hub' by name (as a script gives it), its checkpoint downloaded with byte progress; the report as JSON."""
    ctx, demo = studio
    progress = Progress()
    real_info, gr.Info = gr.Info, lambda *_: None
    try:
        card, report = _fn(demo, "import_audiocraft")("hub", "", "alice/mono-ft", "", None, "from-hub", "",
                                                      request=None, progress=progress)
    finally:
        gr.Info = real_info
    assert report["model"]["id"] == "from-hub" and report["checkpoint"] == "hub:alice/mono-ft@main/state_dict.bin"
    assert ctx.registry.is_custom("from-hub") and "was added" in card
    assert any(d.startswith("Downloading alice/mono-ft's checkpoint (") and " of " in d for _, d in progress.calls)
    with pytest.raises(gr.Error, match="Give the hub repo as org/name"):
        _fn(demo, "import_audiocraft")("hub", "", "not a repo", "", None, "", "", request=None, progress=progress)


def test_the_report_escapes_the_hostile_name_and_file_texts(imported):
    out = imported[0]
    card = out[0].value
    assert not re.search(r"(?<!\\)[<>]", card)  # every < and > escaped: shown, never HTML
    assert "](https" not in card and "**bold**" not in card
    assert "\\<img src=x onerror=alert\\(1\\)\\> \\*\\*bold\\*\\*" in card
    assert "\\| cell" in card  # no extra table cell
    # every text from the file is escaped too: a checkpoint's version, notes and configuration
    from studio.services.model_import import ImportReport

    report = ImportReport.model_validate({**_report_fields(out), "audiocraft_version": "<b>1</b>",
                                                     "notes": ["[x](javascript:alert(1))"],
                                                     "configuration": {"dim": "<i>", "channels": 1}})
    text = report_text(report)
    assert not re.search(r"(?<!\\)[<>]", text) and "](javascript" not in text and "\\<b\\>1" in text


def _report_fields(out) -> dict:
    return {"model": out[1]["model"], "checkpoint": "folder:/x/<y>", "layout": "exported", "audiocraft_version": None,
            "sha256": "0" * 64, "configuration": {}, "text_encoder": "t5-base", "codec": "facebook/encodec_32khz",
            "tensors": 1, "weights_bytes": 1, "seconds": 0.1, "notes": []}


def test_an_upload_that_is_no_checkpoint_is_refused_and_nothing_is_kept(studio, imported):
    ctx, demo = studio
    before = list(ctx.registry.ids())
    folder = gradio_temp_dir(ctx) / "abc123"
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "notes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes/readme.txt", "not a checkpoint")
    *_, out = _fn(demo, "import_audiocraft_on_page")(UPLOAD, "", "", "", str(archive), "", "", request=None,
                                                     progress=Progress())
    status = out[0]
    assert status.elem_classes == ["studio-failed"]
    text = status.value.replace("\\", "")
    assert "Not imported" in text and "holds no audiocraft checkpoint" in text
    assert "Import the folder holding state_dict.bin" in text  # what to do
    assert len(out) == 7  # the status alone changes: the lists (and the Generation settings list) are skipped
    assert list(ctx.registry.ids()) == before
    assert not list(ctx.settings.tmp_dir.glob("import-upload-*"))  # the copy is gone
    assert archive.is_file()  # Gradio's own file stays Gradio's
    # a path the page did not upload is never read
    with pytest.raises(gr.Error, match="uploaded in this page"):
        _fn(demo, "import_audiocraft")(UPLOAD, "", "", "", "/etc/passwd", "", "", request=None, progress=Progress())


def test_a_folder_outside_the_import_roots_says_which_roots(studio):
    ctx, demo = studio
    *_, out = _fn(demo, "import_audiocraft_on_page")(FOLDER, "/etc", "", "", None, "", "", request=None,
                                                     progress=Progress())
    text = out[0].value.replace("\\", "")
    assert "outside the folders checkpoints may be imported from" in text
    assert str(ctx.settings.data_dir / "imports") in text
    *_, out = _fn(demo, "import_audiocraft_on_page")(FOLDER, "nowhere", "", "", None, "", "", request=None,
                                                     progress=Progress())
    text = out[0].value.replace("\\", "")
    assert "There is no folder or file nowhere." in text and "inside one of the import folders listed above" in text


@pytest.mark.parametrize("source, fields", [
    (FOLDER, dict(source="folder", path="a")), ("folder", dict(source="folder", path="a")),
    (HUB, dict(source="hub", repo_id="org/x", revision="v1")), (" hub ", dict(source="hub", repo_id="org/x",
                                                                              revision="v1")),
    (UPLOAD, dict(source="upload")), ("upload", dict(source="upload")),
])
def test_sources_by_label_or_name_keep_only_their_fields(source, fields):
    req = import_request(source, " a ", " org/x ", "v1", "", "")
    assert req.model_dump(exclude_none=True) == fields


@pytest.mark.parametrize("field, value, said", [
    ("display_name", "n" * 81, "name: String should have at most 80 characters"),
    ("model_id", "m" * 65, "model id: String should have at most 64 characters"),
    ("path", "p" * 4097, "path: String should have at most 4096 characters"),
])
def test_too_long_fields_are_refused_by_name(field, value, said):
    form = dict(source="folder", path="a", repo_id="", revision="", model_id="", display_name="")
    with pytest.raises(InvalidRequest, match=said):
        import_request(**{**form, field: value})


def test_an_unknown_source_is_refused():
    with pytest.raises(InvalidRequest, match="Choose where the checkpoint comes from"):
        import_request("ftp", "a", "", "", "", "")


def test_a_locked_studio_says_so_and_refuses(make_module_ctx):
    ctx = make_module_ctx(custom_models=False)
    demo = build_ui(ctx)
    config = demo.get_config_file()
    by_id = {c.get("props", {}).get("elem_id"): c["props"] for c in config["components"]}
    assert "model-import-locked" in by_id
    assert by_id["import-btn"]["interactive"] is False
    with pytest.raises(gr.Error, match="locked"):
        _fn(demo, "import_audiocraft")("folder", "mono", "", "", None, "", "", request=None, progress=Progress())


@pytest.mark.parametrize("message, code, expected", [
    ("repository alice/x was not found on the hub", "repo_not_found",
     "Repository alice/x was not found on the hub. Check the repo id and revision"),
    ("A model with id 'x' already exists: give this one another id.", "model_exists",
     "A model with id 'x' already exists: give this one another id."),
    ("x.bin is not a readable PyTorch checkpoint (torch.save's format).", "unreadable_checkpoint",
     "x.bin is not a readable PyTorch checkpoint (torch.save's format). Check that the file"),
])
def test_a_refusal_says_what_to_do_once(message, code, expected):
    from studio.ui.model_import_panel import failure_text

    text = failure_text(message, code)
    assert text.startswith(expected) and text.count(expected) == 1
