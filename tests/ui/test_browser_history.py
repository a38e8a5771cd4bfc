"""The History tab, driven as a person would in a real Chromium: generate, rate the result on the Generate tab, find
the job in History (a blind A/B test's clip is not there), change the rating, use its settings again, generate it
again, delete it.

Screenshots land in /tmp/history-*.png for a person to look at.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

from studio.users import LOCAL_ACTOR  # noqa: E402
from tests.browser_support import expect  # noqa: E402
from tests.conftest import seed_history  # noqa: E402
from tests.live import screenshot, serve, studio_page  # noqa: E402

PROMPT = "history <b>test</b> piano"  # user text: shown as written, never as markup


@pytest.fixture
def studio(make_ctx):
    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    ids = seed_history(ctx)
    with serve(ctx) as base:
        yield ctx, base, ids


def history_row(page, text: str):
    return page.locator("#history-table").get_by_role("row").filter(has_text=text)


def test_rate_find_reuse_and_delete_a_job(studio, browser):
    ctx, base, ids = studio
    with studio_page(browser, base) as page:
        page.wait_for_timeout(1000)  # the page's first refresh puts the model's values in: type after it
        page.locator("#prompt textarea").fill(PROMPT)
        page.locator("#duration input[type=number]").fill("1")
        page.locator("#seed input[type=number]").fill("21")
        page.locator("#generate-btn").click()
        expect(page.locator("#result-info")).to_contain_text("seed 21")
        # rate the result where it was heard
        expect(page.locator("#rate-result")).to_be_visible()
        page.locator("#rate-result").get_by_text("★★★★", exact=True).click()
        [job] = [j for j in ctx.jobs.list(actor=LOCAL_ACTOR) if j.prompt == PROMPT]
        page.wait_for_timeout(500)
        assert ctx.jobs.get(job.id, LOCAL_ACTOR).rating.mine == 4

        page.get_by_role("tab", name="History").click()
        row = history_row(page, PROMPT)
        expect(row).to_have_count(1)
        expect(row).to_contain_text("★★★★")
        expect(history_row(page, "secret")).to_have_count(0)  # the A/B clip is never listed
        expect(page.locator("#history-page")).to_contain_text("of 6")
        row.locator("[role=gridcell]").nth(2).click()
        info = page.locator("#history-info")
        expect(info).to_contain_text(f"Job {job.id}")
        expect(info).to_contain_text(PROMPT)  # escaped: the tags show as typed
        expect(page.locator("#history-info b")).to_have_count(0)
        # change the rating here
        page.locator("#history-stars").get_by_text("★★", exact=True).click()
        expect(page.locator("#history-action-status")).to_contain_text("average 2.00 from 1")
        assert ctx.jobs.get(job.id, LOCAL_ACTOR).rating.mine == 2
        expect(history_row(page, PROMPT)).to_contain_text("2.0 ★ (1)")
        screenshot(page, "history-details")

        # use these settings again: the Generate tab, filled
        page.locator("#history-reuse").click()
        expect(page.get_by_role("tab", name="Generate")).to_have_attribute("aria-selected", "true")
        expect(page.locator("#prompt textarea")).to_have_value(PROMPT)
        expect(page.locator("#seed input[type=number]")).to_have_value("21")
        expect(page.locator("#duration input[type=number]")).to_have_value("1")
        expect(page.locator("#rate-result")).to_contain_text("average 2.0 ★ from 1")  # History's change shows
        screenshot(page, "history-reused")

        # generate it again: a new job with the same seed, listed at once
        page.get_by_role("tab", name="History").click()
        # the job's details stay open across tabs (selecting its row again would race the click below: the
        # selection's answer, arriving after Generate again's, clears the action status)
        expect(info).to_contain_text(f"Job {job.id}")
        page.locator("#history-again").click()
        expect(page.locator("#history-action-status")).to_contain_text("with seed 21")
        expect(history_row(page, PROMPT)).to_have_count(2)
        again = max(j.id for j in ctx.jobs.list() if j.prompt == PROMPT)
        assert ctx.generation.wait(again).seed == 21

        # delete the first one, after a confirmation
        history_row(page, PROMPT).filter(has_text="★★").locator("[role=gridcell]").nth(2).click()
        expect(info).to_contain_text(f"Job {job.id}")
        # the selection has answered (it clears the last action's status) before Delete opens its confirmation
        expect(page.locator("#history-action-status")).not_to_contain_text("with seed 21")
        page.locator("#history-delete").click()
        expect(page.locator("#history-delete-confirm")).to_be_visible()
        expect(page.locator("#history-delete-text")).to_contain_text(f"Delete job {job.id}")
        screenshot(page, "history-delete-confirm")
        page.locator("#history-delete-yes").click()
        expect(history_row(page, PROMPT)).to_have_count(1)  # the new take stays
        expect(page.locator("#history-detail")).to_be_hidden()
        expect(page.locator("#history-page")).to_contain_text("of 6")
    assert not list((ctx.settings.data_dir / "outputs").glob(f"*_job{job.id}.*"))
