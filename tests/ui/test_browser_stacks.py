"""A person stacks two adapters in the Generate tab: the stack's lists offer the loaded model's adapters, the
result names the stack with its strengths, and History shows it. Driven in Chromium."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

from tests.adapters_factory import make_lora  # noqa: E402
from tests.browser_support import expect  # noqa: E402
from tests.live import serve, studio_page  # noqa: E402


@pytest.fixture
def studio(make_ctx, tiny_folder):
    from studio.services.adapters import RegisterAdapterRequest

    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    for seed, name in enumerate(["lofi", "drums"]):
        make_lora(tiny_folder, ctx.settings.data_dir / "imports" / name, base_name="studio-tiny", seed=seed + 1)
        ctx.adapters.register(RegisterAdapterRequest(source="folder", path=name))
    with serve(ctx) as base:
        yield ctx, base


def _choose(page, elem_id: str, label: str) -> None:
    page.locator(f"#{elem_id} input").click()
    # this dropdown's own list: the previous one's may still be closing (two lists name the same adapter)
    page.locator(f"#{elem_id}").get_by_role("option", name=label, exact=True).click()


def test_a_stack_of_two_adapters_is_generated_and_shown(studio, browser):
    ctx, base = studio
    with studio_page(browser, base) as page:
        page.wait_for_timeout(1000)
        page.locator("#prompt textarea").fill("warm synth")
        page.locator("#duration input[type=number]").fill("0.5")
        page.locator("#adapter-stack").get_by_text("Stack adapters").first.click()
        _choose(page, "stack-adapter-1", "lofi v1")
        _choose(page, "stack-adapter-2", "drums v1")
        box = page.locator("#stack-strength-2 input[type=number]")
        box.fill("1.5")
        box.press("Enter")
        page.locator("#generate-btn").click()
        expect(page.locator("#result-info")).to_contain_text("adapters lofi v1 at 1 + drums v1 at 1.5",
                                                             timeout=60_000)
        job = ctx.jobs.list()[0]
        assert [(s.label, s.strength) for s in job.adapter_stack] == [("lofi v1", 1.0), ("drums v1", 1.5)]
        page.get_by_role("tab", name="History").click()
        expect(page.locator("#history-table")).to_contain_text("lofi v1 (1) + drums v1 (1.5)", timeout=20_000)
