"""The datasets panel driven as a person would: create a dataset from a folder of tones, read the report, listen to
a clip, edit a caption in the grid, exclude clips in bulk, see it again on a new page, delete it, then create one
from an uploaded archive. Screenshots: /tmp/datasets-*.png."""
from __future__ import annotations

import re
import zipfile

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import expect  # noqa: E402

from tests.live import screenshot, serve, studio_page  # noqa: E402
from tests.tone_dataset import write_tone_folder  # noqa: E402


@pytest.fixture
def studio(make_ctx, tmp_path):
    imports = tmp_path / "imports"
    write_tone_folder(imports / "tones", n=4, seconds=2.0)
    (imports / "tones" / "orphan.txt").write_text("a caption <b>alone</b>")
    ctx = make_ctx(import_roots=(imports,))
    with serve(ctx) as base:
        yield ctx, base


def test_build_listen_edit_exclude_delete_upload(studio, browser, tmp_path):
    ctx, base = studio
    archive = tmp_path / "my-tones.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted((tmp_path / "imports" / "tones").iterdir()):
            zf.write(p, f"my-tones/{p.name}")
    with studio_page(browser, base, model_name="No model loaded") as page:
        page.get_by_role("tab", name="Training").click()
        expect(page.locator("#dataset-summary")).to_contain_text("No dataset yet")
        page.locator("#dataset-path textarea, #dataset-path input").first.fill("tones")
        page.locator("#dataset-max-clip input").fill("1.5")
        page.locator("#dataset-overlap input").fill("0.5")
        page.locator("#dataset-create-btn").click()
        expect(page.locator("#dataset-create-status")).to_contain_text("Created tones: 8 clips", timeout=60_000)
        expect(page.locator("#dataset-create-status")).to_contain_text("1 problem (see the report)")
        expect(page.locator("#dataset-summary")).to_contain_text("version 1")
        page.locator("#dataset-report-accordion").get_by_text("Report").first.click()
        expect(page.locator("#dataset-report")).to_contain_text("caption without audio")
        expect(page.locator("#dataset-report")).to_contain_text("orphan.txt")
        [dataset] = ctx.datasets.list()
        first_hash = dataset.content_hash
        expect(page.locator("#dataset-summary")).to_contain_text(first_hash[:12])
        grid = page.locator("#dataset-clips")
        expect(grid).to_contain_text("clip_003.wav")
        screenshot(page, "datasets-created")

        # listen: a row's file cell puts its clip in the player
        grid.get_by_text("clip_001.wav").first.click()
        expect(page.locator("#dataset-player")).to_contain_text("Clip #3")
        expect(page.locator("#dataset-player audio").first).to_be_attached()

        # edit a caption in the grid, then save: a new version
        cell = grid.get_by_role("gridcell").filter(has_text=re.compile(r"^\s*calm bass\s*$")).first
        cell.dblclick()
        editor = grid.locator("textarea, input[type=text]").first
        editor.fill("deep calm bass")
        editor.press("Enter")
        page.locator("#dataset-save").click()
        expect(page.locator("#dataset-edit-status")).to_contain_text("Saved as version 2")
        assert ctx.datasets.clips(dataset.id)[0].caption == "deep calm bass"

        # bulk: exclude clips #2 to #3
        page.locator("#dataset-bulk").get_by_text("Edit many clips").first.click()
        clips_box = page.locator("#bulk-clips textarea, #bulk-clips input").first
        expect(clips_box).to_have_value("all")  # the opened form is in place before typing over its default
        clips_box.fill("2-3")
        expect(clips_box).to_have_value("2-3")
        page.locator("#bulk-action").get_by_text("Exclude them").click()
        page.locator("#bulk-apply").click()
        expect(page.locator("#dataset-edit-status")).to_contain_text("Saved as version 3")
        expect(page.locator("#dataset-summary")).to_contain_text("(2 excluded)")
        info = ctx.datasets.get(dataset.id)
        assert (info.clips, info.excluded) == (6, 2) and info.content_hash != first_hash
        screenshot(page, "datasets-edited")

        # a bad selection is a message in the status line
        page.locator("#bulk-clips textarea, #bulk-clips input").first.fill("40")
        page.locator("#bulk-apply").click()
        expect(page.locator("#dataset-edit-status")).to_contain_text("There is no clip #40")

        # a page opened later shows the dataset as it is now
        page.reload()
        page.get_by_role("tab", name="Training").click()
        expect(page.locator("#dataset-summary")).to_contain_text("version 3")
        expect(page.locator("#dataset-choice input")).to_have_value(re.compile(r"tones v3 · 6 clips"))

        # delete, behind its checkbox
        page.locator("#dataset-delete-sure input").check()
        page.locator("#dataset-delete").click()
        expect(page.locator("#dataset-summary")).to_contain_text("No dataset yet")
        assert ctx.datasets.list() == []

        # from an uploaded archive
        page.locator("#dataset-source").get_by_text("Upload archive").click()
        page.locator("#dataset-file input[type=file]").set_input_files(str(archive))
        page.locator("#dataset-max-clip input").fill("0")
        page.locator("#dataset-overlap input").fill("0")
        page.locator("#dataset-create-btn").click()
        expect(page.locator("#dataset-create-status")).to_contain_text("Created my-tones: 4 clips", timeout=60_000)
        expect(page.locator("#dataset-summary")).to_contain_text("version 1")
        assert [d.source for d in ctx.datasets.list()] == ["upload:my-tones.zip"]
