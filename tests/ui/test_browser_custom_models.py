"""Settings tab, "Add or remove a model", driven as a person would (real app under uvicorn, Debian's Chromium):
a folder is checked (its capabilities shown), added (in the model lists at once), switched to, then removed; an
audiocraft checkpoint is imported from a folder (its report shown, the model in Switch model at once).
Screenshots land in /tmp/custom-models-*.png and /tmp/model-import-*.png."""
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


def open_folder_form(page) -> None:
    """Settings -> "Add or remove a model", its source set to a folder on the server."""
    page.get_by_role("tab", name="Settings").click()
    page.locator("#custom-models-box").get_by_text("Add or remove a model").click()
    page.locator("#custom-source").get_by_text("Folder on this server").click()


def test_add_check_switch_and_remove_a_folder_model(studio, browser):
    ctx, base = studio
    with studio_page(browser, base) as page:
        open_folder_form(page)
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
        open_folder_form(page)
        page.locator("#custom-path textarea, #custom-path input").first.fill("/etc")
        page.locator("#custom-add").click()
        expect(page.locator("#custom-status")).to_contain_text("outside the folders models may be added from",
                                                               timeout=BROWSER_TIMEOUT_MS)
        assert [m for m in ctx.registry.ids() if ctx.registry.is_custom(m)] == []


@pytest.fixture(scope="module")
def reference_hub(tmp_path_factory, tiny_folder):
    """The text encoder and codec an audiocraft checkpoint names, served by the fake hub."""
    from tests.audiocraft_support import CODEC_REPO, T5_REPO, write_reference_repos
    from tests.fakehub import serve_repos

    repos = write_reference_repos(tiny_folder, tmp_path_factory.mktemp("refs"))
    with serve_repos({T5_REPO: repos[T5_REPO], CODEC_REPO: repos[CODEC_REPO]}) as hub:
        yield hub


def test_import_an_audiocraft_checkpoint_from_a_folder(make_ctx, reference_hub, browser):
    from tests.audiocraft_support import FIXTURES

    ctx = make_ctx(hf_endpoint=reference_hub.url)
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    imports = ctx.settings.data_dir / "imports"
    imports.mkdir(exist_ok=True)
    shutil.copytree(FIXTURES / "mono", imports / "my-finetune", ignore=shutil.ignore_patterns("expected*"))
    with serve(ctx) as base, studio_page(browser, base) as page:
        page.get_by_role("tab", name="Settings").click()
        page.locator("#model-import-box").get_by_text("Import an audiocraft checkpoint").click()
        box = page.locator("#model-import-box")
        expect(box).to_contain_text(str(imports))  # which folders it may import from
        expect(page.locator("#import-repo")).to_be_hidden()
        page.locator("#import-path input, #import-path textarea").first.fill("my-finetune")
        page.locator("#import-name input, #import-name textarea").first.fill("<i>My</i> fine-tune")
        page.locator("#import-btn").click()
        status = page.locator("#import-status")
        expect(status).to_contain_text("was added", timeout=BROWSER_TIMEOUT_MS)
        for text in ("Converted from", "exported (state_dict.bin)", "1.3.0", "t5-base", "facebook/encodec_32khz",
                     "do not apply to the converted model", "<i>My</i> fine-tune"):
            expect(status).to_contain_text(text)
        assert ctx.registry.is_custom("my-finetune")
        screenshot(page, "model-import-report")
        # in the Switch model list at once
        page.locator("#model-dropdown input[role=combobox]").click()
        option = page.get_by_role("option", name="<i>My</i> fine-tune", exact=False).first
        expect(option).to_be_visible()
        screenshot(page, "model-import-switch-list")
        option.click()
        expect(page.locator("#switch-status")).to_contain_text("ready", timeout=BROWSER_TIMEOUT_MS)
        assert ctx.models.current().model.id == "my-finetune"
        # the Generation settings' list has it at once, on this page and on one opened later (the page is built
        # once, at start: its lists were the models of then), and so has the Remove list
        page.locator("#config-model input[role=combobox]").click()
        expect(page.get_by_role("option", name="<i>My</i> fine-tune", exact=True)).to_be_visible()
        page.keyboard.press("Escape")
        with studio_page(browser, base, model_name="<i>My</i> fine-tune") as later:
            later.get_by_role("tab", name="Settings").click()
            expect(later.locator("#config-model input").first).to_have_value("<i>My</i> fine-tune")
            later.locator("#custom-models-box").get_by_text("Add or remove a model").first.click()
            later.locator("#custom-remove-choice input[role=combobox]").click()
            expect(later.get_by_role("option", name="<i>My</i> fine-tune (my-finetune)")).to_be_visible()
