"""Every numeric input on the page keeps what was typed and the studio says what is wrong at the field (no Gradio
clamping, no Gradio bounds tracebacks), and a refused action is a message in its status line, never Gradio's red
"Error" badge over the outputs. Driven keystroke by keystroke in Chromium."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import expect  # noqa: E402
from tests.adapters_factory import make_lora  # noqa: E402
from tests.live import serve, studio_page  # noqa: E402

# (tab, field elem_id, typed, words of the studio's message at the field, the button it disables)
TYPED = [
    ("Generate", "gen-top_p", "2", "must be at most 1", "generate-btn"),
    ("Generate", "gen-temperature", "0", "must be more than 0", "generate-btn"),
    ("Generate", "gen-guidance_scale", "-1", "must be at least 0", "generate-btn"),
    ("Generate", "gen-top_k", "2.5", "whole number", "generate-btn"),
    ("Generate", "seed", "99999999999", "out of range", "generate-btn"),
    ("Settings", "cfg-top_p", "2", "must be at most 1", "config-save"),
    ("Settings", "cfg-target_lufs", "-3", "must be at most -6", "config-save"),
    ("Settings", "cfg-default_duration_s", "45", "must be at most 30", "config-save"),
    ("Adapters", "register-version", "-3", "0 or more, not -3", "register-btn"),
]


@pytest.fixture
def studio(make_ctx, tiny_folder):
    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    make_lora(tiny_folder, ctx.settings.data_dir / "imports" / "lofi-piano", base_name="studio-tiny")
    with serve(ctx) as base:
        yield ctx, base


def _open(page, tab: str) -> None:
    page.get_by_role("tab", name=tab).click()
    if tab == "Generate" and not page.locator("#gen-top_p").is_visible():
        page.locator("#gen-sampling").get_by_text("Generation settings").first.click()
    if tab == "Adapters" and not page.locator("#register-btn").is_visible():
        page.locator("#register-accordion").get_by_text("Register an adapter").first.click()


def test_numbers_keep_what_was_typed_and_the_studio_says_why_not(studio, browser, capfd):
    ctx, base = studio
    with studio_page(browser, base) as page:
        page.wait_for_timeout(1000)  # the page's first refresh puts the model's values in: type after it
        page.locator("#prompt textarea").fill("lofi hip hop beat")
        for tab, elem_id, typed, said, button in TYPED:
            _open(page, tab)
            box = page.locator(f"#{elem_id} input[type=number]")
            before = box.input_value()
            box.fill("")
            box.press_sequentially(typed, delay=40)  # keystroke by keystroke, as a person types
            where = page.locator("#generate-problems" if elem_id == "seed" else f"#{elem_id}")
            expect(where).to_contain_text(said)
            if tab == "Generate":  # also said once above Generate, which it disables
                expect(page.locator("#generate-problems")).to_contain_text(said)
            expect(page.locator(f"#{button}")).to_be_disabled()
            page.locator("body").click(position={"x": 5, "y": 5})  # leaving the field keeps what was typed
            page.wait_for_timeout(300)
            assert box.input_value() == typed, (elem_id, box.input_value())
            page.screenshot(path=f"/tmp/uxfix-typed-{elem_id}.png", full_page=False)
            box.fill(before)  # back to a valid value: the message goes, the button comes back
            expect(where).not_to_contain_text(said)
            if button != "config-save":  # Save also needs an unsaved change
                expect(page.locator(f"#{button}")).to_be_enabled()
    out = capfd.readouterr()
    assert "Traceback" not in out.err and "greater than maximum" not in out.err, out.err[-3000:]


def test_refused_actions_are_messages_in_their_status_lines_not_error_badges(studio, browser, capfd):
    from studio.services.adapters import AdapterUpdate, RegisterAdapterRequest

    ctx, base = studio
    a = ctx.adapters.register(RegisterAdapterRequest(source="folder", path=str(
        ctx.settings.data_dir / "imports" / "lofi-piano")))
    with studio_page(browser, base) as page:
        # Register from a folder that does not exist: the reason under the button, the form kept.
        _open(page, "Adapters")
        page.locator("#register-path textarea, #register-path input").first.fill("/nowhere/at/all")
        page.locator("#register-btn").click()
        status = page.locator("#register-status")
        expect(status).to_contain_text("Not registered.")
        expect(page.locator("#register-status.studio-failed, #register-status .studio-failed").first).to_be_visible()
        assert page.locator("#register-status .error, .toast-body.error").count() == 0
        assert page.locator("#register-path textarea, #register-path input").first.input_value() == "/nowhere/at/all"
        page.screenshot(path="/tmp/uxfix-register-refused.png", full_page=True)

        # Generate with an adapter deactivated meanwhile: refused, said in the result line, no badge over the audio.
        page.get_by_role("tab", name="Generate").click()
        page.locator("#prompt textarea").fill("lofi")
        page.locator("#duration input[type=number]").fill("1")
        page.locator("#adapter input").click()
        page.get_by_role("option", name=a.label).click()
        ctx.adapters.update(a.id, AdapterUpdate(active=False))
        expect(page.locator("#adapter-hint")).to_contain_text("was deactivated")
        page.locator("#generate-btn").click()
        result = page.locator("#result-info")
        expect(result).to_contain_text("Not generated.")
        expect(result).to_contain_text("lofi-piano")
        assert page.locator("#audio-out .error, #result-info .error, .toast-body.error").count() == 0
        expect(page.locator("#generate-btn")).to_be_enabled()
        page.screenshot(path="/tmp/uxfix-generate-refused.png", full_page=True)
    out = capfd.readouterr()
    assert "Traceback" not in out.err, out.err[-3000:]
