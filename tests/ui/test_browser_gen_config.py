"""The Settings tab's generation-settings panel and the Generate tab's sampling widgets, driven as a person would:
the real app served by uvicorn, a real Chromium through Playwright.

Needs Debian's chromium at /usr/bin/chromium (never `playwright install`); skipped without it.
Screenshots land in /tmp/gen-config-*.png for a person to look at.
"""
from __future__ import annotations

import re

import json
import urllib.request

import pytest
import soundfile as sf

pytestmark = pytest.mark.browser

from tests.browser_support import expect  # noqa: E402

from tests.conftest import registry_dict  # noqa: E402
from tests.live import BROWSER_TIMEOUT_MS, screenshot, serve, studio_page  # noqa: E402

TIMEOUT_MS = BROWSER_TIMEOUT_MS
UNSAVED = "● unsaved"  # an edit not saved yet
MODEL = "studio-tiny"


@pytest.fixture
def studio(make_ctx):
    """A served studio with Studio Tiny loaded (a stereo model and Tiny Hub, 8 s, in the registry) and one setting
    already saved by someone else: guidance 4.5."""
    ctx = make_ctx(registry_dict(stereo={"display_name": "Tiny Stereo", "channels": 2}))
    assert ctx.manager.switch_and_wait(MODEL).stage == "ready"
    ctx.gen_config.update(MODEL, {"guidance_scale": 4.5}, by="alice")
    with serve(ctx) as base:
        yield ctx, base


@pytest.fixture
def page(studio, browser):
    with studio_page(browser, studio[1]) as pg:
        yield pg


def shot(page, name: str) -> None:
    screenshot(page, f"gen-config-{name}")


def rest_config(base: str, model_id: str = MODEL) -> dict:
    with urllib.request.urlopen(f"{base}api/models/{model_id}/config", timeout=30) as resp:
        return json.loads(resp.read())


# ---- the form's widgets, found by elem_id ---------------------------------------------------------------------------
def box(page, name: str, prefix: str = "cfg"):
    """A setting's number box (every numeric setting is one: no slider clamps what was typed)."""
    return page.locator(f"#{prefix}-{name} input[type=number]").first


def combobox(page, name: str, prefix: str = "cfg"):
    return page.locator(f"#{prefix}-{name} input[role=combobox]")


def checkbox(page, name: str, prefix: str = "cfg"):
    return page.locator(f"#{prefix}-{name} input[type=checkbox]")


def label(page, name: str, prefix: str = "cfg"):
    """The setting's label (a checkbox's is its text beside the box)."""
    return page.locator(f"#{prefix}-{name}").locator("[data-testid=block-info], .label-text").first


def info(page, name: str, prefix: str = "cfg"):
    """The help text under the setting (with the error first when there is one)."""
    return page.locator(f"#{prefix}-{name} .info-text").first


def type_into(page, name: str, value: str, leave: bool = True) -> None:
    """Type a value as a person does: select what is there, type, (leave the field)."""
    field = box(page, name)
    field.click()
    field.press("Control+a")
    field.press_sequentially(value)
    if leave:
        field.press("Tab")


def choose(page, name: str, option: str) -> None:
    combobox(page, name).click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(combobox(page, name)).to_have_value(option)


def open_settings(page) -> None:
    page.get_by_role("tab", name="Settings").click()
    expect(page.locator("#config-model input[role=combobox]")).to_have_value("Studio Tiny")


def expect_form(page, values: dict) -> None:
    for name, value in values.items():
        if isinstance(value, bool):
            expect(checkbox(page, name)).to_be_checked(checked=value)
        elif isinstance(value, str):
            expect(combobox(page, name)).to_have_value(value)
        else:
            expect(box(page, name)).to_have_value(f"{value:g}")


def history_open(page):
    """The history table, its accordion opened."""
    table = page.locator("#config-history")
    if not table.is_visible():
        page.locator("#config-history-box").get_by_text("History of changes").click()
    expect(table).to_be_visible()
    return table


def gen_sampling(page):
    """The Generate tab, its 'Generation settings' accordion opened."""
    page.get_by_role("tab", name="Generate").click()
    if not box(page, "top_k", "gen").is_visible():
        page.locator("#gen-sampling").get_by_text("Generation settings").first.click()
    expect(box(page, "top_k", "gen")).to_be_visible()


# ---- the person's path ----------------------------------------------------------------------------------------------
def test_edit_validate_save_reload_generate_history_and_reset(studio, page):
    ctx, base = studio
    save, summary = page.locator("#config-save"), page.locator("#config-summary")
    open_settings(page)

    # The loaded model's saved values; the one alice saved differs from the default, which its label names.
    expect_form(page, {"top_k": 250, "guidance_scale": 4.5, "temperature": 1, "seed": 0, "output_format": "wav",
                       "do_sample": True, "normalize_loudness": False})
    expect(label(page, "guidance_scale")).to_have_text("Guidance scale (CFG) · default: 3")
    expect(label(page, "top_k")).to_have_text("Top-k")
    expect(info(page, "top_k")).to_contain_text("(default 250; 0 to 2048)")
    page.locator("#cfg-temperature").hover()  # the description is also the field's tooltip
    expect(page.locator("#cfg-temperature")).to_have_attribute(
        "title", re.compile(r"^Below 1: more predictable.*\(default 1; 0\.05 to 5\)$"))
    expect(summary).to_contain_text("All changes saved.")
    expect(summary).to_contain_text("1 setting(s) differ from the defaults: Guidance scale (CFG).")
    expect(summary).to_contain_text("by alice")
    expect(page.locator("#cfg-downmix_to_mono")).to_be_hidden()  # a stereo model's setting
    # no slider anywhere (Gradio's clamps a typed value silently), no per-field ↺: "Reset to defaults…" resets
    expect(page.locator("#config-form input[type=range]")).to_have_count(0)
    expect(page.locator("#config-form [data-testid=reset-button]")).to_have_count(0)
    expect(save).to_be_disabled()
    shot(page, "1-saved")

    # Edit top_k (typed in its number box) and the output format: marked unsaved, Save enabled.
    type_into(page, "top_k", "100")
    expect(label(page, "top_k")).to_have_text(f"Top-k {UNSAVED} · default: 250")
    expect(save).to_be_enabled()
    choose(page, "output_format", "flac")
    expect(label(page, "output_format")).to_have_text(f"Output format {UNSAVED} · default: wav")
    expect(summary).to_contain_text("Unsaved changes: Top-k, Output format.")
    expect(save).to_be_enabled()
    assert rest_config(base)["values"]["top_k"] == 250  # nothing stored yet

    # An out-of-range seed: the error under the field, Save disabled; fixing it enables Save again.
    type_into(page, "seed", "4294967296")
    expect(info(page, "seed")).to_contain_text("⚠️ must be at most 4294967295")
    expect(summary).to_contain_text("Not valid: Fixed seed: must be at most 4294967295")
    expect(save).to_be_disabled()
    expect(info(page, "top_k")).not_to_contain_text("⚠️")  # only the bad field is marked
    shot(page, "2-invalid")
    type_into(page, "seed", "42")
    expect(info(page, "seed")).not_to_contain_text("⚠️")
    expect(info(page, "seed")).to_contain_text("(default 0; 0 to 4294967295)")
    expect(label(page, "seed")).to_have_text(f"Fixed seed {UNSAVED} · default: 0")
    expect(save).to_be_enabled()
    expect(label(page, "guidance_scale")).to_have_text("Guidance scale (CFG) · default: 3")  # saved: not unsaved

    save.click()
    expect(summary).to_contain_text("All changes saved.", timeout=60_000)
    expect(summary).to_contain_text("by local")
    expect(summary).to_contain_text("4 setting(s) differ from the defaults")
    expect(page.get_by_text("Saved the settings of Studio Tiny.")).to_be_visible()
    # Saved: no "unsaved" mark left; the values that differ from the default keep their hint.
    for name, text in (("top_k", "Top-k · default: 250"), ("seed", "Fixed seed · default: 0"),
                       ("output_format", "Output format · default: wav")):
        expect(label(page, name)).to_have_text(text)
    # One notice for one save, also after the page's 2 s refresh has seen the new settings.
    page.wait_for_timeout(3000)
    toasts = page.get_by_test_id("toast-text")
    assert toasts.count() <= 1, f"more than one notice: {toasts.all_inner_texts()}"  # what the extra one said
    expect(toasts).to_have_count(1)
    expect(page.get_by_text("were saved: the Generate tab starts from them again")).to_have_count(0)
    expect(save).to_be_disabled()
    stored = rest_config(base)
    assert (stored["values"]["top_k"], stored["values"]["seed"], stored["values"]["output_format"],
            stored["values"]["guidance_scale"]) == (100, 42, "flac", 4.5)
    assert sorted(stored["changed"]) == ["guidance_scale", "output_format", "seed", "top_k"]
    assert stored["updated_by"] == "local"
    shot(page, "3-saved")

    # The Generate tab follows the saved change without a reload (the page's 2 s refresh).
    gen_sampling(page)
    expect(box(page, "top_k", "gen")).to_have_value("100")
    expect(box(page, "guidance_scale", "gen")).to_have_value("4.5")

    # Reload: the values persist, in both tabs, and REST agrees.
    page.reload()
    expect(page.locator("#current-model")).to_contain_text("Studio Tiny")
    open_settings(page)
    expect_form(page, {"top_k": 100, "seed": 42, "output_format": "flac", "guidance_scale": 4.5, "temperature": 1})
    expect(label(page, "top_k")).to_have_text("Top-k · default: 250")
    expect(label(page, "temperature")).to_have_text("Temperature")
    expect(save).to_be_disabled()
    assert rest_config(base)["values"] == ctx.gen_config.get(MODEL).values
    gen_sampling(page)
    expect(box(page, "top_k", "gen")).to_have_value("100")
    expect(box(page, "guidance_scale", "gen")).to_have_value("4.5")
    expect(page.locator("#seed input")).to_have_value("-1")  # seed policy random: the saved seed is not used
    expect(page.locator("#duration input[type=number]")).to_have_value("10")  # the saved default duration

    # Generate a 1 s clip: saved as FLAC.
    page.locator("#prompt textarea").fill("warm lo-fi piano")
    duration = page.locator("#duration input[type=number]")
    duration.click()
    duration.press("Control+a")
    duration.press_sequentially("1")
    duration.press("Tab")
    expect(duration).to_have_value("1")
    page.locator("#generate-btn").click()
    result = page.locator("#result-info")
    expect(result).to_contain_text("FLAC", timeout=180_000)
    expect(result).to_contain_text("1 s at 32 kHz")
    # named after the prompt and job; beside it, the job's codes
    [clip] = [p for p in ctx.settings.outputs_dir.glob("warm-lo-fi-piano_job*")
              if not p.name.endswith(".codes.safetensors")]
    assert clip.suffix == ".flac" and sf.info(str(clip)).format == "FLAC"
    assert sf.info(str(clip)).duration == pytest.approx(1.0, abs=0.05)
    shot(page, "4-generated")

    # History: the change, with old and new values, and who made it.
    page.get_by_role("tab", name="Settings").click()
    table = history_open(page)
    expect(table).to_contain_text("top_k: 250 → 100")
    expect(table).to_contain_text("seed: 0 → 42")
    expect(table).to_contain_text("output_format: wav → flac")
    expect(table).to_contain_text("guidance_scale: 3 → 4.5")  # alice's
    expect(table).to_contain_text("alice")
    shot(page, "5-history")

    # Reset to defaults…: a confirmation; Cancel keeps everything.
    confirm = page.locator("#config-reset-confirm")
    page.locator("#config-reset").click()
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("Reset every setting of Studio Tiny to the studio's defaults?")
    expect(confirm).to_contain_text("4 setting(s) differ from the defaults and will go back")
    shot(page, "6-confirm")
    page.locator("#config-reset-no").click()
    expect(confirm).to_be_hidden()
    expect_form(page, {"top_k": 100, "seed": 42, "output_format": "flac", "guidance_scale": 4.5})
    assert rest_config(base)["values"]["top_k"] == 100

    # Reset again, and confirm: every value back to its default, said in the summary and the history.
    page.locator("#config-reset").click()
    expect(confirm).to_be_visible()
    page.locator("#config-reset-yes").click()
    expect(confirm).to_be_hidden(timeout=60_000)
    expect_form(page, {"top_k": 250, "seed": 0, "output_format": "wav", "guidance_scale": 3, "temperature": 1})
    for name, text in (("top_k", "Top-k"), ("guidance_scale", "Guidance scale (CFG)"), ("seed", "Fixed seed"),
                       ("output_format", "Output format")):
        expect(label(page, name)).to_have_text(text)
    expect(summary).to_contain_text("Every setting has its default value.")
    expect(save).to_be_disabled()
    table = history_open(page)
    first_row = table.get_by_role("row").nth(1)
    expect(first_row).to_contain_text("reset")
    expect(first_row).to_contain_text("top_k: 100 → 250")
    stored = rest_config(base)
    assert stored["changed"] == [] and stored["values"] == stored["defaults"]
    shot(page, "7-reset")
    # ... and the Generate tab follows.
    gen_sampling(page)
    expect(box(page, "top_k", "gen")).to_have_value("250")
    expect(box(page, "guidance_scale", "gen")).to_have_value("3")


def test_settings_for_another_model_shows_its_own_settings_and_limits(studio, page):
    ctx, base = studio
    open_settings(page)
    model = page.locator("#config-model input[role=combobox]")

    model.click()
    page.get_by_role("option", name="Tiny Stereo", exact=True).click()
    expect(page.locator("#cfg-downmix_to_mono")).to_be_visible()
    expect(label(page, "downmix_to_mono")).to_have_text("Mix down to mono")
    expect_form(page, {"guidance_scale": 3, "top_k": 250})  # its own saved values, not Studio Tiny's 4.5
    expect(label(page, "guidance_scale")).to_have_text("Guidance scale (CFG)")

    checkbox(page, "downmix_to_mono").check()
    expect(label(page, "downmix_to_mono")).to_have_text(f"Mix down to mono {UNSAVED} · default: off")
    page.locator("#config-save").click()
    expect(page.locator("#config-summary")).to_contain_text("All changes saved.", timeout=60_000)
    assert rest_config(base, "stereo")["values"]["downmix_to_mono"] is True
    assert rest_config(base)["values"]["guidance_scale"] == 4.5  # the loaded model's are untouched

    # Tiny Hub allows 8 s: the duration setting's range narrows.
    model.click()
    page.get_by_role("option", name="Tiny Hub", exact=True).click()
    expect(page.locator("#cfg-downmix_to_mono")).to_be_hidden()
    expect(info(page, "default_duration_s")).to_contain_text("(default 8; 0.5 to 8)")
    # A value typed beyond the range is named at the field while the person is still in it, and leaving the box
    # keeps it as typed (nothing clamped behind the person's back).
    type_into(page, "default_duration_s", "9", leave=True)
    expect(box(page, "default_duration_s")).to_have_value("9")
    expect(info(page, "default_duration_s")).to_contain_text("⚠️ must be at most 8")
    expect(page.locator("#config-summary")).to_contain_text("Not valid: Default duration (s): must be at most 8")
    expect(page.locator("#config-save")).to_be_disabled()
    shot(page, "8-other-model")
    type_into(page, "temperature", "0", leave=False)
    expect(info(page, "temperature")).to_contain_text("⚠️ must be more than 0")


def test_page_follows_settings_saved_elsewhere(studio, page):
    ctx, base = studio
    gen_sampling(page)
    expect(box(page, "top_k", "gen")).to_have_value("250")
    expect(box(page, "guidance_scale", "gen")).to_have_value("4.5")
    req = urllib.request.Request(f"{base}api/models/{MODEL}/config", method="PUT",
                                 data=json.dumps({"top_k": 64, "default_duration_s": 5.5, "seed_policy": "fixed",
                                                  "seed": 9}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
    # the page says why the person's values change under them (a notice that fades: looked for first; it came
    # and went while the values below were checked once, on a loaded machine)...
    expect(page.get_by_text("were saved: the Generate tab starts from them again")).to_be_visible()
    # ...in the same refresh as the values
    expect(box(page, "top_k", "gen")).to_have_value("64")
    expect(page.locator("#duration input[type=number]")).to_have_value("5.5")
    expect(page.locator("#seed input")).to_have_value("9")  # the fixed seed policy
