"""The Generate tab's melody input in a real Chromium: shown for studio-tiny-melody only; a clip uploaded there is
kept as an upload at once (a bad file is said under the player), followed by Generate and recorded with the job;
a switch to a text-only model hides and empties it."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import sync_api  # noqa: E402
from tests.live import CHROMIUM, CHROMIUM_ARGS, screenshot, serve, studio_page  # noqa: E402
from tests.melody_support import melody_ctx, write_tune  # noqa: E402


@pytest.fixture
def studio(make_ctx):
    ctx = melody_ctx(make_ctx)
    assert ctx.manager.switch_and_wait("studio-tiny-melody").stage == "ready"
    with serve(ctx) as base:
        yield ctx, base


def test_melody_input_follows_the_model_and_its_clip_is_followed(studio, tmp_path):
    ctx, base = studio
    expect = sync_api.expect
    tune = write_tune(tmp_path / "hummed tune.wav", [392.0, 440.0, 493.88, 523.25], rate=44100, channels=2)
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"RIFF this is not audio")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        with studio_page(browser, base, "Studio Tiny Melody") as page:
            melody, hint = page.locator("#melody"), page.locator("#melody-hint")
            expect(melody).to_be_visible()
            expect(hint).to_contain_text("follows a melody")
            # a file the studio cannot read: said under the player, nothing kept
            melody.locator("input[type=file]").set_input_files(str(bad))
            expect(hint).to_contain_text("not an audio file")
            melody.get_by_label("Clear").click()
            expect(hint).to_contain_text("follows a melody")
            melody.locator("input[type=file]").set_input_files(str(tune))
            expect(hint).to_contain_text("will follow hummed tune.wav, 2.0 s")
            page.locator("#prompt textarea").fill("calm piano")
            page.locator("#duration input[type=number]").fill("1")
            page.locator("#generate-btn").click()
            expect(page.locator("#result-info")).to_contain_text(re.compile(r"Job \d+ · Studio Tiny Melody"),
                                                                 timeout=90_000)
            expect(page.locator("#result-info")).to_contain_text("Followed a melody: 2 s of upload")
            screenshot(page, "studio-melody")
            jobs = ctx.jobs.search().items
            assert len(jobs) == 1 and jobs[0].melody is not None
            upload = ctx.uploads.get(jobs[0].melody.upload_id)
            assert upload.filename == "hummed tune.wav" and jobs[0].melody.seconds == 2.0
            assert len(list((ctx.settings.data_dir / "uploads").iterdir())) == 1  # one upload, not one per step

            # Settings -> Studio Tiny (text only): the melody input goes away, emptied
            page.locator("#gen-model input").click()
            page.get_by_role("option", name=re.compile(r"^Studio Tiny(?! Melody)")).click()
            expect(page.locator("#current-model")).to_contain_text(re.compile(r"Model: Studio Tiny(?! Melody)"),
                                                                   timeout=60_000)
            expect(melody).to_be_hidden()
            page.locator("#generate-btn").click()
            expect(page.locator("#result-info")).to_contain_text(re.compile(r"Job \d+ · Studio Tiny ·"),
                                                                 timeout=90_000)
            assert ctx.jobs.search().items[0].melody is None  # nothing unseen was sent
        browser.close()
