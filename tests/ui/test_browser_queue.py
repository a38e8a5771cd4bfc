"""Two pages generate at once on the job queue, in a real Chromium: each sees its own place and progress, hears its
audio as it decodes (Gradio's streaming player gets media before the job's final file), and gets its own file.

Screenshots land in /tmp/studio-queue-*.png for a person to look at.
"""
from __future__ import annotations

import re
import shutil

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import sync_api  # noqa: E402
from tests.live import CHROMIUM, CHROMIUM_ARGS, held_decoding, screenshot, serve, studio_page  # noqa: E402

SECONDS = 7  # each page's clip: long enough on the tiny model for the two jobs to overlap and stream

# Page-side watcher: at every change, whether the streaming player has media while the Result player is still
# empty ("heard before the end"), and every text the job status showed.
WATCH = """() => {
    const w = window.__watch = {streamBeforeResult: false, status: [], streamSrc: null};
    const look = () => {
        const s = document.querySelector('#audio-stream audio');
        const src = s && (s.currentSrc || s.src);
        const result = document.querySelector('#audio-out audio');
        const resultSrc = result && (result.currentSrc || result.src);
        if (src) { w.streamSrc = src; if (!resultSrc) w.streamBeforeResult = true; }
        const t = (document.getElementById('job-status') || {}).innerText || '';
        if (t && t !== w.status[w.status.length - 1]) w.status.push(t);
    };
    // A source set and cleared within one task (a starved page gets the last chunk and the result together) is
    // seen only as the old value of the clearing mutation.
    const seen = (records) => {
        for (const r of records) {
            if (r.attributeName === 'src' && r.oldValue && r.target.closest && r.target.closest('#audio-stream'))
                w.streamSrc = w.streamSrc || r.oldValue;
        }
        look();
    };
    new MutationObserver(seen).observe(document.body, {subtree: true, childList: true, attributes: true,
                                                       attributeOldValue: true, characterData: true});
    setInterval(look, 50);
}"""


@pytest.fixture
def served(make_ctx):
    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    chunks: dict[int, int] = {}  # audio chunks streamed per job (one at the end until the real decode loop)
    real = ctx.generation.events.publish_audio

    def counted(job_id, *args):
        chunks[job_id] = chunks.get(job_id, 0) + 1
        return real(job_id, *args)

    ctx.generation.events.publish_audio = counted
    with serve(ctx) as base:
        yield ctx, base, chunks


def _fill(page, prompt: str, seconds: float, takes: int = 1) -> None:
    page.wait_for_timeout(1000)  # the page's first refresh (on load) puts the model's values in: type after it
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#duration input[type=number]").fill(str(seconds))
    if takes != 1:
        page.locator("#takes input[type=number]").fill(str(takes))
    sync_api.expect(page.locator("#generate-btn")).to_be_enabled()


def _retype(page, prompt: str, seconds: float) -> None:
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#duration input[type=number]").fill(str(seconds))
    sync_api.expect(page.locator("#generate-btn")).to_be_enabled()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Gradio's streaming audio needs ffmpeg")
def test_two_pages_generate_at_once_each_hears_and_gets_its_own(served):
    expect = sync_api.expect
    ctx, base, chunks = served
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            with studio_page(browser, base) as a, studio_page(browser, base) as b:
                _fill(a, "warm lo-fi piano", SECONDS)
                _fill(b, "fast drum and bass", SECONDS)
                for page in (a, b):
                    page.evaluate(WATCH)
                a.locator("#generate-btn").click()
                b.locator("#generate-btn").click()
                # Page B's job waits behind A's (or shares its batch): either way it says where it stands (the
                # watcher keeps every status shown: a loaded machine may be slower than these checks).
                for page in (a, b):
                    expect(page.locator("#queue-table")).to_contain_text("(this page)")
                a.wait_for_timeout(500)
                screenshot(a, "studio-queue-1-two-pages-running-a")
                screenshot(b, "studio-queue-1-two-pages-running-b")
                jobs = {}
                for page, prompt in ((a, "warm-lo-fi-piano"), (b, "fast-drum-and-bass")):
                    info = page.locator("#result-info")
                    expect(info).to_contain_text(re.compile(r"Job \d+ "), timeout=120_000)
                    jobs[prompt] = int(re.search(r"Job (\d+)", info.inner_text()).group(1))
                    expect(info).to_contain_text("waited")
                    link = page.locator("#audio-out").get_by_test_id("download-link")
                    expect(link).to_have_attribute("href", re.compile(rf"/{prompt}_job{jobs[prompt]}\.wav$"))
                    expect(page.locator("#job-status")).to_have_text("")
                    expect(page.locator("#cancel-btn")).to_be_disabled()
                    expect(page.locator("#generate-btn")).to_be_enabled()
                assert jobs["warm-lo-fi-piano"] != jobs["fast-drum-and-bass"]
                for page in (a, b):
                    watch = page.evaluate("window.__watch")
                    assert watch["streamSrc"], f"the streaming player never got audio: {watch}"
                    assert any(re.match(r"\W*(Waiting|Generating)", t) for t in watch["status"]), watch
                    assert any(re.search(rf"Generating: \d+\.\d of {SECONDS} s", t) for t in watch["status"]), watch
                    job = jobs["warm-lo-fi-piano" if page is a else "fast-drum-and-bass"]
                    if chunks.get(job, 0) > 1:  # the decode loop streams ~1 s chunks: heard well before the end
                        assert watch["streamBeforeResult"], watch
                screenshot(a, "studio-queue-2-done-a")

                # Cancel stops this page's own job, never another page's: B's waiting job goes, A's runs on.
                _retype(a, "a long one to cancel", 25)
                _retype(b, "a short one that waits", 1)
                # A's decode is held at its first step while B's job waits and is cancelled: on a loaded machine
                # A's clip could otherwise end before its own Cancel is clicked
                with held_decoding(ctx):
                    a.locator("#generate-btn").click()
                    expect(a.locator("#job-status")).to_contain_text("Generating")
                    b.locator("#generate-btn").click()
                    expect(b.locator("#job-status")).to_contain_text("Waiting")
                    b.locator("#cancel-btn").click()
                    expect(b.locator("#result-info")).to_contain_text(re.compile(r"Cancelled: job \d+ stopped before"))
                    expect(b.locator("#generate-btn")).to_be_enabled()
                    expect(a.locator("#job-status")).to_contain_text("Generating")  # untouched
                    a.locator("#cancel-btn").click()
                    a.wait_for_timeout(500)  # the click's request reaches the studio before the decode goes on
                expect(a.locator("#result-info")).to_contain_text(re.compile(r"Cancelled: job \d+ stopped after"))

                # Takes: one request, the takes side by side, each with its seed; unused players stay hidden.
                _retype(a, "three takes of a bass line", 2)
                a.locator("#takes input[type=number]").fill("3")
                expect(a.locator("#generate-btn")).to_be_enabled()
                a.locator("#generate-btn").click()
                expect(a.locator("#job-status")).to_contain_text("3 takes together")
                for i in (1, 2, 3):
                    expect(a.locator(f"#take-{i}")).to_contain_text(re.compile(rf"Take {i} · seed \d+"),
                                                                    timeout=120_000)
                expect(a.locator("#take-4")).to_be_hidden()
                expect(a.locator("#result-info")).to_contain_text("3 takes")
                a.wait_for_timeout(800)  # the waveforms draw
                screenshot(a, "studio-queue-3-takes")
        finally:
            browser.close()
