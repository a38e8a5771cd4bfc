"""The A/B tests tab driven as a person would: Quick A/B from two versions of an adapter in the Adapters tab fills a
new test, which is created, generated (2 prompts x 1 seed, 1 s clips of Studio Tiny), listened to blind (First and
Second only) and voted on to the end, where the verdict is read. Screenshots: /tmp/abtests-*.png."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import expect  # noqa: E402

from studio.services.adapters import RegisterAdapterRequest  # noqa: E402
from tests.adapters_factory import make_lora  # noqa: E402
from tests.live import screenshot, serve, studio_page  # noqa: E402


@pytest.fixture
def studio(make_ctx, tiny_folder):
    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    for seed in (0, 1):  # two versions of one adapter
        make_lora(tiny_folder, ctx.settings.data_dir / "imports" / f"lofi-{seed}", base_name="studio-tiny", seed=seed)
        ctx.adapters.register(RegisterAdapterRequest(source="folder", path=f"lofi-{seed}", name="lofi-piano"))
    with serve(ctx) as base:
        yield ctx, base


def test_quick_ab_to_the_verdict(studio, browser):
    ctx, base = studio
    with studio_page(browser, base) as page:
        page.get_by_role("tab", name="Adapters").click()
        table = page.locator("#adapters-table")
        table.get_by_role("row").filter(has_text="lofi-piano").first.locator("[role=gridcell]").nth(1).click()
        expect(page.locator("#adapter-detail-info")).to_contain_text("lofi-piano v")
        expect(page.locator("#quick-ab-b input")).to_have_value(re.compile(r"lofi-piano v\d"))
        page.locator("#quick-ab-btn").click()
        # the A/B tab opens with the two versions and the default prompts, ready to create
        expect(page.locator("#ab-name textarea, #ab-name input").first).to_have_value("lofi-piano v1 vs lofi-piano v2")
        expect(page.locator("#ab-side-a input")).to_have_value("lofi-piano v1")
        expect(page.locator("#ab-side-b input")).to_have_value("lofi-piano v2")
        expect(page.locator("#ab-prompts textarea")).to_have_value(re.compile("lofi hip hop beat"))
        screenshot(page, "abtests-quick")
        page.locator("#ab-prompts textarea").fill("warm piano\nfast drums")
        page.locator("#ab-seeds input").fill("1")
        page.locator("#ab-duration input").fill("1")
        page.locator("#ab-create").click()
        expect(page.locator("#ab-progress")).to_contain_text("Ready: 2 pairs to listen to.", timeout=90_000)
        expect(page.locator("#ab-table")).to_contain_text("2 of 2")

        page.locator("#ab-listener input").fill("Ann <b>")
        page.locator("#ab-start").click()
        for index in (1, 2):
            expect(page.locator("#ab-pair-info")).to_contain_text(f"Pair {index} of 2")
            players = page.locator("#ab-players")
            expect(players.locator("audio")).to_have_count(2)
            # blind: the two players say First and Second, nothing else; their URLs name a slot, not a side
            assert players.inner_text().split() == ["First", "Second"]
            srcs = [a.get_attribute("src") for a in players.locator("audio").all()]
            assert [re.sub(r".*/pairs/\d+/", "", s) for s in srcs] == ["first?listener=Ann%20%3Cb%3E",
                                                                       "second?listener=Ann%20%3Cb%3E"]
            sizes = page.evaluate("""async (urls) => Promise.all(urls.map(async u =>
                (await (await fetch(u)).arrayBuffer()).byteLength))""", srcs)
            assert sizes[0] == sizes[1] > 32000 * 2 * 0.9  # one second of 16-bit audio each, the same size
            if index == 1:
                expect(page.locator("#ab-results")).to_contain_text("Results are revealed once you have voted")
                screenshot(page, "abtests-listening")
            page.locator("#ab-vote-first").click()
        results = page.locator("#ab-results")
        expect(results).to_contain_text("Not enough data")
        expect(results).to_contain_text(re.compile(r"B won [012] of 2 decisive votes"))
        expect(results).to_contain_text("more decisive votes are needed")
        expect(results).to_contain_text("lofi-piano v1")
        expect(results).to_contain_text("Ann <b>")  # the listener's name as written, never as HTML
        expect(page.locator("#ab-vote-row")).to_be_hidden()
        screenshot(page, "abtests-results")
    [test] = ctx.abtests.list()
    view = ctx.abtests.get(test.id, "Ann <b>")
    assert view.revealed and view.results.overall.decisive == 2
    jobs = ctx.abtests.results(test.id)
    assert jobs.side_a.adapter_id != jobs.side_b.adapter_id
