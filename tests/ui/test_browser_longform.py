"""Long pieces and continuations in a real Chromium: a 45 s piece on Studio Tiny (one window 30 s, extended to
180 s) says it is generated in 2 windows, streams before it ends and comes out 45 s long; an uploaded clip is
continued (included at the start); "Extend this" continues the result from its codes.

Screenshots land in /tmp/studio-longform-*.png for a person to look at.
"""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.browser

from tests.browser_support import sync_api  # noqa: E402
from tests.conftest import registry_dict  # noqa: E402
from tests.live import CHROMIUM, CHROMIUM_ARGS, screenshot, serve, studio_page  # noqa: E402
from tests.ui.test_browser_queue import WATCH  # noqa: E402


@pytest.fixture
def served(make_ctx):
    reg = registry_dict()
    reg["models"][0].update(max_duration_s=30, max_extended_duration_s=180, window_stride_s=18)
    from studio.registry import parse_registry

    ctx = make_ctx(parse_registry(reg))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    with serve(ctx) as base:
        yield ctx, base


def _audio_seconds(ctx, job_id: int) -> float:
    info = sf.info(str(ctx.jobs.audio_path(job_id)))
    return info.frames / info.samplerate


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="Gradio's streaming audio needs ffmpeg")
def test_a_45_s_piece_streams_then_a_clip_is_continued_and_extended(served, tmp_path):
    expect = sync_api.expect
    ctx, base = served
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            with studio_page(browser, base) as page:
                expect(page.locator("#duration")).to_contain_text("allows up to 180 s")
                page.wait_for_timeout(1000)  # the page's first refresh puts the model's values in: type after it
                for attempt in range(3):  # a loaded machine may refresh later still, resetting what was typed
                    page.locator("#prompt textarea").fill("slow ambient pads")
                    page.locator("#duration input[type=number]").fill("45")
                    try:
                        expect(page.locator("#duration-hint")).to_contain_text("generated in 2 windows",
                                                                               timeout=15_000)
                        break
                    except AssertionError:
                        if attempt == 2:
                            raise
                expect(page.locator("#generate-btn")).to_be_enabled()
                page.evaluate(WATCH)
                page.locator("#generate-btn").click()
                info = page.locator("#result-info")
                expect(info).to_contain_text(re.compile(r"Job \d+ "), timeout=300_000)
                job = int(re.search(r"Job (\d+)", info.inner_text()).group(1))
                watch = page.evaluate("window.__watch")
                assert watch["streamSrc"] and watch["streamBeforeResult"], watch  # heard before the end
                assert any(re.search(r"Generating: \d+\.\d of 45 s", t) for t in watch["status"]), watch
                assert _audio_seconds(ctx, job) == 45.0
                screenshot(page, "studio-longform-1-45s")

                # Extend this: the next Generate continues the 45 s piece from its codes (included at the start)
                page.locator("#extend-this").click()
                expect(page.locator("#extend-note")).to_contain_text(f"Extending job {job}")
                page.locator("#duration input[type=number]").fill("2")
                expect(page.locator("#generate-btn")).to_be_enabled()
                page.locator("#generate-btn").click()
                expect(info).to_contain_text(re.compile(rf"Continues job {job}"), timeout=120_000)
                extended = int(re.search(r"Job (\d+)", info.inner_text()).group(1))
                assert extended != job and _audio_seconds(ctx, extended) == 47.0
                page.locator("#extend-clear").click()
                expect(page.locator("#extend-note")).to_have_text("")

                # Continue a clip: a 3 s stereo 44.1 kHz FLAC, its end continued, included at the start
                t = np.arange(3 * 44100) / 44100
                clip = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], axis=1) * 0.3
                path = tmp_path / "hum.flac"
                sf.write(path, clip.astype(np.float32), 44100)
                page.locator("#continue-accordion").get_by_text("Continue a clip").click()
                page.locator("#continue-clip input[type=file]").set_input_files(str(path))
                expect(page.locator("#continue-clip audio").first).to_be_attached()  # uploaded to the page
                page.locator("#generate-btn").click()
                expect(info).to_contain_text("Continues the uploaded clip", timeout=120_000)
                continued = int(re.search(r"Job (\d+)", info.inner_text()).group(1))
                assert _audio_seconds(ctx, continued) == 5.0  # the whole 3 s clip (the window holds it) + 2 s
                assert ctx.jobs.get(continued).continuation["source"] == "upload"
                screenshot(page, "studio-longform-2-continued")
        finally:
            browser.close()
