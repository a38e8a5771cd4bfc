"""The comparison view as a person uses it: open a version in the Adapters tab (its performance beside the base
model), open "Compare versions" (pre-filled with it and the version before), compare, read the verdicts.
Rows are seeded straight into the database (the ratings, A/B and evaluation services fill them in real use).

Screenshot: /tmp/metrics-compare.png."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import expect  # noqa: E402

from sqlmodel import Session  # noqa: E402

from tests.live import screenshot, serve, studio_page  # noqa: E402
from tests.metrics_seed import Seeder  # noqa: E402


@pytest.fixture
def studio(make_ctx):
    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    with Session(ctx.engine) as session:
        s = Seeder(session)
        v1 = s.adapter("lofi", 1, training_metrics={"loss": [2.0, 1.4]})
        v2 = s.adapter("lofi", 2, training_metrics={"loss": [1.5, 0.9, 1.1]}, description="<b>warmer</b>")
        for stars in (3, 2, 3, 4):
            s.job("piano", v1, ratings={"alice": stars})
        for stars in (5, 4, 5, 5):
            s.job("piano", v2, ratings={"alice": stars})
        s.job("piano", None, ratings={"alice": 2, "bob": 3})
        s.abtest("lofi v1 vs v2", v1, v2, {"a": 1, "b": 9, "none": 2})
        s.evaluation(v1, ["piano", "rain", "wind"], [1, 2], [0.30, 0.31, 0.28, 0.33, 0.29, 0.27])
        s.evaluation(v2, ["piano", "rain", "wind"], [1, 2], [0.35, 0.37, 0.36, 0.38, 0.40, 0.34])
    with serve(ctx) as base:
        yield ctx, base


def test_compare_two_versions_and_read_the_verdicts(studio, browser):
    _, base = studio
    with studio_page(browser, base) as page:
        page.get_by_role("tab", name="Adapters").click()
        version_2 = page.locator("[role=gridcell]").filter(has_text=re.compile(r"^\s*2\s*$"))
        row = page.locator("#adapters-table").get_by_role("row").filter(has_text="lofi").filter(has=version_2)
        row.first.locator("[role=gridcell]").nth(1).click()
        perf = page.locator("#adapter-performance")
        expect(perf).to_contain_text("Performance of lofi v2")
        expect(perf).to_contain_text("4.75 ★ (4 ratings)")  # this version
        expect(perf).to_contain_text("2.50 ★ (2 ratings)")  # the base model on the same prompts
        expect(page.locator("#adapter-history")).to_contain_text("4.75 (4)")  # the timeline

        page.locator("#compare-accordion").get_by_text("Compare versions").first.click()
        expect(page.locator("#compare-a input")).to_have_value("lofi v2 · Studio Tiny")
        expect(page.locator("#compare-b input")).to_have_value("lofi v1 · Studio Tiny")
        page.locator("#compare-btn").click()
        result = page.locator("#compare-result")
        # 9 of 10 decisive votes for v2: p = 22/1024; every v2 score above v1's on the same clips: p = 2/64
        expect(result).to_contain_text("lofi v2 (A) vs lofi v1 (B)")
        expect(result).to_contain_text("10 decisive votes, 2 ties")
        expect(result).to_contain_text("lofi v2 is better (p = 0.0215)")
        expect(result).to_contain_text("lofi v2 is better (p = 0.0312)")
        expect(result).to_contain_text("4 and 4 ratings")
        page.locator("#compare-result").scroll_into_view_if_needed()
        screenshot(page, "metrics-compare")
