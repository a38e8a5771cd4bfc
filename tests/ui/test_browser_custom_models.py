"""Settings tab, "Add or remove a model", driven as a person would (real app under uvicorn, Debian's Chromium):
a folder is checked (its capabilities shown), added (in the model lists at once), switched to, then removed.
Screenshots land in /tmp/custom-models-*.png."""
from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import expect  # noqa: E402

from tests.live import BROWSER_TIMEOUT_MS, screenshot, serve, studio_page  # noqa: E402


@pytest.fixture
def studio(make_ctx, tiny_folder):
    from studio.runtime.tiny import build_tiny_stereo_model

    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    imports = ctx.settings.data_dir / "imports"
    imports.mkdir(exist_ok=True)
    build_tiny_stereo_model(imports / "my-stereo")
    shutil.copytree(tiny_folder, imports / "evil")
    with serve(ctx) as base:
        yield ctx, base


def test_add_check_switch_and_remove_a_folder_model(studio, browser):
    ctx, base = studio
    with studio_page(browser, base) as page:
        page.get_by_role("tab", name="Settings").click()
        page.locator("#custom-models-box").get_by_text("Add or remove a model").click()
        page.locator("#custom-source").get_by_text("Folder on this server").click()
        expect(page.locator("#custom-path textarea, #custom-path input").first).to_be_visible()
        expect(page.locator("#custom-repo")).to_be_hidden()
        page.locator("#custom-path textarea, #custom-path input").first.fill("my-stereo")
        page.locator("#custom-name textarea, #custom-name input").first.fill("<b>My</b> stereo")
        page.locator("#custom-check").click()
        status = page.locator("#custom-status")
        expect(status).to_contain_text("can be added as", timeout=BROWSER_TIMEOUT_MS)
        expect(status).to_contain_text("stereo, 8 codebooks")
        expect(status).to_contain_text("<b>My</b> stereo")  # the name shows as typed, never as markup
        assert "my-stereo" not in ctx.registry.ids()  # checking stores nothing
        screenshot(page, "custom-models-checked")
        page.locator("#custom-add").click()
        expect(status).to_contain_text("was added", timeout=BROWSER_TIMEOUT_MS)
        assert ctx.registry.is_custom("my-stereo")
        # in the switch dropdown at once; switching to it loads it
        dropdown = page.locator("#model-dropdown input[role=combobox]")
        dropdown.click()
        page.get_by_role("option", name="<b>My</b> stereo", exact=False).first.click()
        expect(page.locator("#switch-status")).to_contain_text("ready", timeout=BROWSER_TIMEOUT_MS)
        assert ctx.models.current().model.id == "my-stereo"
        # refused while loaded: said beside the button
        choice = page.locator("#custom-remove-choice input[role=combobox]")
        choice.click()
        page.get_by_role("option", name="my-stereo", exact=False).first.click()
        page.locator("#custom-remove").click()
        expect(page.locator("#custom-remove-status")).to_contain_text("switch to another model first",
                                                                      timeout=BROWSER_TIMEOUT_MS)
        assert list(ctx.models.switch("studio-tiny"))[-1].stage == "ready"  # as another page would
        page.locator("#custom-remove").click()
        expect(page.locator("#custom-remove-status")).to_contain_text("was removed", timeout=BROWSER_TIMEOUT_MS)
        assert "my-stereo" not in ctx.registry.ids()
        assert (ctx.settings.data_dir / "imports" / "my-stereo" / "config.json").is_file()  # a folder is never deleted
        screenshot(page, "custom-models-removed")


def test_a_refused_folder_says_why_beside_the_form(studio, browser):
    ctx, base = studio
    with studio_page(browser, base) as page:
        page.get_by_role("tab", name="Settings").click()
        page.locator("#custom-models-box").get_by_text("Add or remove a model").click()
        page.locator("#custom-source").get_by_text("Folder on this server").click()
        page.locator("#custom-path textarea, #custom-path input").first.fill("/etc")
        page.locator("#custom-add").click()
        expect(page.locator("#custom-status")).to_contain_text("outside the folders models may be added from",
                                                               timeout=BROWSER_TIMEOUT_MS)
        assert [m for m in ctx.registry.ids() if ctx.registry.is_custom(m)] == []
