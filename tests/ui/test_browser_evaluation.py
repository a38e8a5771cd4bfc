"""The Settings tab's Evaluation section in a real Chromium: a studio without an evaluation model says so and how to
get one; choosing Studio Tiny CLAP and pressing the button builds it and puts it in use, which the page and the API
then say. Screenshot: /tmp/studio-evaluation.png."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import expect  # noqa: E402
from tests.live import screenshot, serve, studio_page  # noqa: E402


def test_choose_and_build_the_tiny_clap_from_the_settings_tab(make_ctx, browser):
    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    with serve(ctx) as base, studio_page(browser, base) as page:
        page.get_by_role("tab", name="Settings").click()
        state = page.locator("#evaluation-state").first
        expect(state).to_contain_text("No evaluation model is available")
        expect(state).to_contain_text("--eval-model studio-tiny-clap")
        page.locator("#evaluation-model input").click()
        page.get_by_role("option", name="Studio Tiny CLAP (built on this machine)").click()
        page.locator("#evaluation-use").click()
        expect(page.locator("#evaluation-status").first).to_contain_text("Studio Tiny CLAP scores clips now")
        expect(state).to_contain_text("Studio Tiny CLAP scores clips: it was chosen")
        expect(page.locator("#evaluation-model input")).to_have_value("Studio Tiny CLAP (built on this machine) · in use")
        screenshot(page, "studio-evaluation")
    assert ctx.evaluation.models().current == "studio-tiny-clap"
