"""The studio driven as a person would: the real app served by uvicorn, a real Chromium through Playwright.

Needs Debian's chromium at /usr/bin/chromium (never `playwright install`); skipped without it.
Screenshots land in /tmp/studio-*.png for a person to look at.
"""
from __future__ import annotations

import re
import time
from contextlib import contextmanager

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import sync_api  # noqa: E402
from tests.conftest import registry_dict  # noqa: E402
from tests.live import BROWSER_TIMEOUT_MS, CHROMIUM, CHROMIUM_ARGS, held_decoding, hold_fetch, serve  # noqa: E402

SECOND = {"id": "tiny-b", "display_name": "Tiny B", "max_duration_s": 12}  # same built-in weights, other limits
TIMEOUT_MS = BROWSER_TIMEOUT_MS


@pytest.fixture
def served(make_ctx):
    ctx = make_ctx(registry_dict(**{SECOND["id"]: {k: v for k, v in SECOND.items() if k != "id"}}))
    final = ctx.manager.switch_and_wait("studio-tiny")
    assert final.stage == "ready", final.message
    with serve(ctx) as base:
        yield ctx, base


@pytest.fixture
def url(served):
    return served[1]


@pytest.fixture
def page(url, tmp_path):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        sync_api.expect.set_options(timeout=TIMEOUT_MS)  # a busy machine: generous waits for assertions too
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(url)
        yield pg
        sync_api.expect.set_options(timeout=5_000)  # Playwright's default, for other tests
        context.close()
        browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str) -> None:
    page.screenshot(path=f"/tmp/studio-{name}.png", full_page=True)


def record_texts(page, elem_id: str) -> None:
    """Remember every text the element shows from now on (progress can be too quick to poll)."""
    page.evaluate("""(id) => {
        const el = document.getElementById(id);
        window.__seen = window.__seen || {};
        const seen = window.__seen[id] = [el.innerText];
        new MutationObserver(() => { const t = el.innerText; if (t !== seen[seen.length - 1]) seen.push(t); })
            .observe(el, {subtree: true, childList: true, characterData: true});
    }""", elem_id)


def test_switch_model_then_generate(page):
    expect = sync_api.expect
    header = page.locator("#current-model")
    expect(header).to_contain_text("Model: Studio Tiny")
    expect(header).to_contain_text("up to 30 s")
    expect(page.locator("#duration")).to_contain_text("Studio Tiny allows up to 30 s")
    shot(page, "1-start")

    # Settings: choose the second model, watch the switch stream its progress and end ready
    page.get_by_role("tab", name="Settings").click()
    dropdown = page.locator("#model-dropdown")
    expect(dropdown).to_be_visible()
    expect(page.locator("#model-card")).to_contain_text("30 s")
    shot(page, "2-settings")
    record_texts(page, "switch-status")
    dropdown.locator("input").click()
    page.get_by_role("option", name=re.compile(r"^Tiny B")).click()

    status = page.locator("#switch-status")
    expect(status).to_contain_text("Tiny B is ready")
    seen = page.evaluate("window.__seen['switch-status']")
    assert any("Loading Tiny B" in t for t in seen), f"no loading progress shown before 'ready': {seen}"
    assert seen.index(next(t for t in seen if "Loading Tiny B" in t)) < \
        seen.index(next(t for t in seen if "Tiny B is ready" in t)), seen
    card = page.locator("#model-card")
    expect(card).to_contain_text("Tiny B")
    expect(card).to_contain_text("12 s")
    expect(header).to_contain_text("Model: Tiny B")
    expect(dropdown.locator("input")).to_be_enabled()
    shot(page, "3-switched")

    # Generate: the duration now follows Tiny B's 12 s limit, and the tab shows the model loaded
    page.get_by_role("tab", name="Generate").click()
    expect(page.locator("#gen-model input")).to_have_value(re.compile(r"^Tiny B"))
    duration = page.locator("#duration")
    expect(duration).to_contain_text("Tiny B allows up to 12 s")
    number = duration.locator("input[type=number]")
    number.fill("13")
    expect(page.locator("#duration-hint")).to_contain_text("13 s is over Tiny B's limit of 12 s.")
    number.fill("1")
    expect(page.locator("#duration-hint")).to_have_text("")
    button = page.locator("#generate-btn")
    expect(button).to_be_disabled()  # no prompt yet
    page.locator("#prompt textarea").fill("warm lo-fi piano with vinyl crackle")
    expect(button).to_be_enabled()
    button.click()

    out = page.locator("#audio-out")
    expect(out.locator("audio").first).to_be_attached(timeout=60_000)  # the player (its <audio> may stay hidden)
    expect(out.get_by_test_id("waveform-Result")).to_be_visible()
    expect(out.locator("time#duration")).to_have_text("0:01")  # the 1 s clip asked for
    link = out.get_by_test_id("download-link")
    expect(link).to_have_attribute("href", re.compile(r"/warm-lo-fi-piano-with-vinyl-crackle_job1\.wav$"))
    wav = page.request.get(link.get_attribute("href"))
    assert wav.ok and wav.body()[:4] == b"RIFF", wav.status
    expect(page.locator("#result-info")).to_contain_text("Tiny B")
    expect(page.locator("#result-info")).to_contain_text("seed")
    page.wait_for_timeout(500)  # let the waveform draw before the screenshot
    shot(page, "4-generated")


def _generate_and_read_seed(page) -> str:
    """Click Generate and return the seed of the NEW job (the info line names its job number)."""
    info = page.locator("#result-info")
    old = re.search(r"Job (\d+)", info.inner_text())
    page.locator("#generate-btn").click()
    next_job = int(old.group(1)) + 1 if old else 1
    sync_api.expect(info).to_contain_text(f"Job {next_job} ", timeout=60_000)
    return re.search(r"seed (\d+)", info.inner_text()).group(1)


def test_untouched_seed_field_gives_random_seeds(page):
    page.locator("#prompt textarea").fill("a short drum loop")
    number = page.locator("#duration input[type=number]")
    number.fill("0.5")
    number.press("Enter")
    first = _generate_and_read_seed(page)
    second = _generate_and_read_seed(page)
    assert first != second, f"both generations used seed {first}"
    assert page.locator("#seed input").input_value() == "-1"  # the untouched field means "random"


@contextmanager
def held_switch_page(make_ctx):
    """(page, gate): a page on a studio with Studio Tiny loaded and Tiny B to switch to, whose switches wait at
    their download step until the gate is set (always set, and the browser closed, on the way out)."""
    ctx = make_ctx(registry_dict(**{SECOND["id"]: {k: v for k, v in SECOND.items() if k != "id"}}))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    gate = hold_fetch(ctx)
    with serve(ctx) as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(base)
            sync_api.expect(page.locator("#current-model")).to_contain_text("Studio Tiny")
            yield page, gate
        finally:
            gate.set()
            browser.close()


def test_a_switch_locks_the_model_dropdowns_not_generate_and_warns_before_the_tab_closes(make_ctx):
    """While a switch runs (held here at its download step) the page locks the model dropdowns and closing the
    tab asks first, but Generate stays usable: its limits already follow the model the job will run on, and the
    job waits in the queue behind the switch, then runs on the new model."""
    with held_switch_page(make_ctx) as (page, gate):
        expect = sync_api.expect
        base = page.url
        page.get_by_role("tab", name="Settings").click()
        page.locator("#model-dropdown input").click()
        page.get_by_role("option", name=re.compile("Tiny B")).click()
        expect(page.locator("#switch-status")).to_contain_text("Checking")
        expect(page.locator("#model-dropdown input")).to_be_disabled()
        page.get_by_role("tab", name="Generate").click()
        expect(page.locator("#current-model")).to_contain_text("Switching model")
        expect(page.locator("#current-model")).not_to_contain_text("Busy")

        dialogs: list[str] = []

        def on_dialog(dialog):
            dialogs.append(dialog.type)
            dialog.dismiss()  # stay on the page

        page.on("dialog", on_dialog)
        # Leaving the page asks first (this Chromium shows beforeunload on navigation, not on page.close).
        with pytest.raises(sync_api.Error):
            page.goto("about:blank", timeout=5000)
        assert dialogs == ["beforeunload"]
        # Staying reloads the page (Gradio closed its connection): it still shows the switch.
        page.wait_for_timeout(1500)
        assert page.url.startswith(base)
        expect(page.locator("#current-model")).to_contain_text("Switching model", timeout=TIMEOUT_MS)
        expect(page.locator("#gen-model input")).to_be_disabled()
        # Generate is not locked: the duration follows Tiny B (the model the next job runs on) and the job waits.
        expect(page.locator("#duration")).to_contain_text("Tiny B allows up to 12 s")
        page.wait_for_timeout(1000)  # the reloaded page's first refresh puts the model's values in: type after it
        page.locator("#prompt textarea").fill("lofi")
        page.locator("#duration input[type=number]").fill("1")
        expect(page.locator("#generate-btn")).to_be_enabled()
        page.locator("#generate-btn").click()
        expect(page.locator("#job-status")).to_contain_text("Waiting")
        expect(page.locator("#cancel-btn")).to_be_enabled()

        gate.set()
        expect(page.locator("#current-model")).to_contain_text("Tiny B")
        expect(page.locator("#result-info")).to_contain_text(re.compile(r"Job \d+ · Tiny B"), timeout=60_000)
        expect(page.locator("#generate-btn")).to_be_enabled()
        page.goto("about:blank")  # nothing running: leaves without asking
        assert dialogs == ["beforeunload"]


def shown_error_badges(page, elem_id: str) -> int:
    """Gradio's red "Error" badges a person can see in the element (Gradio keeps them in the page, transparent)."""
    return page.evaluate("""(id) => [...document.querySelectorAll(`#${id} .error`)].filter((el) => {
        for (; el && el.id !== id; el = el.parentElement) {
            const cs = getComputedStyle(el);
            if (cs.display === 'none' || cs.visibility === 'hidden' || cs.opacity === '0') return false;
        }
        return true;
    }).length""", elem_id)


# A failed switch, each way it can fail before loading: (model's option, what the status says).
FAILED_SWITCHES = [
    ("Huge Model", "needs about"),  # does not fit in memory
    ("Tiny Hub", "Could not download Tiny Hub"),  # a hub model, and no hub to download it from
]


def test_failed_switch_is_a_message_in_the_status_and_the_header_keeps_its_note(page):
    """A failed switch says so in the switch status (no Gradio error badge over the text, no second notice), the
    header keeps saying which model is loaded and why, and the next action clears the message."""
    expect = sync_api.expect
    header, status = page.locator("#current-model"), page.locator("#switch-status")
    expect(header).to_contain_text("Studio Tiny loaded.")  # why this model: the note of the switch that loaded it
    page.wait_for_timeout(1000)  # the page's first refresh (on load) puts the model's values in: type after it
    typed = page.locator("#duration input[type=number]")
    typed.fill("3")  # what the person typed survives a switch that changed nothing
    page.get_by_role("tab", name="Settings").click()
    for option, reason in FAILED_SWITCHES:
        page.locator("#model-dropdown input").click()
        page.get_by_role("option", name=re.compile(f"^{option}")).click()
        expect(status).to_contain_text("The model was not switched.")
        expect(status).to_contain_text(reason)
        expect(status).to_contain_text("Studio Tiny stays loaded")
        expect(page.locator("#switch-status.switch-failed")).to_be_visible()
        expect(page.locator("#model-dropdown input")).to_be_enabled()
        page.wait_for_timeout(2500)  # a status refresh: nothing below changes
        assert shown_error_badges(page, "switch-status") == 0  # Gradio's badge never covers the message
        expect(page.get_by_test_id("toast-body")).to_have_count(0)  # one notice: the status
        expect(status).to_contain_text(reason)  # it stays until the next action
        expect(header).to_contain_text("Model: Studio Tiny")
        expect(header).to_contain_text("Studio Tiny loaded.")
        expect(header).not_to_contain_text(reason)
        expect(page.locator("#model-dropdown input")).to_have_value(re.compile(r"^Studio Tiny"))  # back on it
        assert typed.input_value() == "3"
        shot(page, f"switch-failed-{option.split()[0].lower()}")
    # The next action in the tab (here: choosing whose generation settings to edit) clears the old news.
    page.locator("#config-model input[role=combobox]").click()
    page.get_by_role("option", name="Tiny B", exact=True).click()
    expect(status).to_have_text("")
    expect(page.locator("#switch-status.switch-failed")).to_have_count(0)
    # A switch that works: its progress replaces the message, and the header follows.
    page.locator("#model-dropdown input").click()
    page.get_by_role("option", name=re.compile(r"^Tiny B ·")).click()
    expect(status).to_contain_text("Tiny B is ready")
    expect(page.locator("#switch-status.switch-failed")).to_have_count(0)
    expect(header).to_contain_text("Model: Tiny B")


def test_over_the_limit_is_said_at_the_field_and_cancel_is_no_error(served, page, capfd):
    """Typing 45 s for a 30 s model: the studio's message under the field at once, Generate disabled, nothing
    clamped, no traceback in the log. Cancelling a generation: a neutral notice, no error badge."""
    expect = sync_api.expect
    expect(page.locator("#current-model")).to_contain_text("Studio Tiny")
    page.wait_for_timeout(1000)  # the page's first refresh (on load) puts the model's values in: type after it
    generate, cancel = page.locator("#generate-btn"), page.locator("#cancel-btn")
    expect(cancel).to_be_disabled()  # nothing running
    expect(generate).to_be_disabled()  # no prompt
    page.locator("#prompt textarea").fill("lofi hip hop beat")
    number = page.locator("#duration input[type=number]")
    number.fill("")
    number.press_sequentially("45", delay=50)  # keystroke by keystroke, as a person types
    expect(page.locator("#duration-hint")).to_contain_text("45 s is over Studio Tiny's limit of 30 s.")
    expect(generate).to_be_disabled()
    page.locator("#prompt textarea").click()  # leaving the field keeps what was typed
    expect(number).to_have_value("45")
    shot(page, "5-over-limit")

    number.fill("30")
    expect(page.locator("#duration-hint")).to_contain_text("30 s is at Studio Tiny's limit")
    expect(generate).to_be_enabled()
    ctx = served[0]
    with held_decoding(ctx) as running:  # the job is mid-way when Cancel arrives, however fast the machine decodes
        generate.click()
        expect(cancel).to_be_enabled()
        expect(generate).to_be_disabled()
        assert running.wait(30)
        cancel.click()
        deadline = time.monotonic() + 30
        while not ctx.queue.worker._stopping and time.monotonic() < deadline:  # the cancel reached the worker
            time.sleep(0.05)
        assert ctx.queue.worker._stopping
    info = page.locator("#result-info")
    expect(info).to_contain_text(re.compile(r"Cancelled: job 1 stopped after \d+\.\d s\."), timeout=60_000)
    expect(page.get_by_text(re.compile(r"Cancelled: job 1 stopped")).first).to_be_visible()
    assert page.locator(".toast-body.error").count() == 0  # no red "Error" popup
    assert page.locator("#audio-out .error, #result-info .error").count() == 0  # no error badge
    expect(cancel).to_be_disabled()
    expect(generate).to_be_enabled()
    shot(page, "6-cancelled")
    out = capfd.readouterr()
    assert "Traceback" not in out.err and "greater than maximum" not in out.err, out.err[-2000:]


def test_switching_from_the_generate_tab_locks_the_dropdowns_like_settings(make_ctx):
    """The Generate tab's model dropdown runs the same switch: while it runs, both model dropdowns are locked and
    the duration already follows the new model (Generate stays usable); afterwards the tab shows the new model."""
    with held_switch_page(make_ctx) as (page, gate):
        expect = sync_api.expect
        page.locator("#prompt textarea").fill("lofi")
        page.locator("#gen-model input").click()
        page.get_by_role("option", name=re.compile("Tiny B")).click()
        expect(page.locator("#gen-model-status")).to_contain_text("Checking")
        expect(page.locator("#gen-model input")).to_be_disabled()
        expect(page.locator("#duration")).to_contain_text("Tiny B allows up to 12 s")
        expect(page.locator("#generate-btn")).to_be_enabled()
        page.get_by_role("tab", name="Settings").click()
        expect(page.locator("#model-dropdown input")).to_be_disabled()
        page.get_by_role("tab", name="Generate").click()
        gate.set()
        expect(page.locator("#gen-model-status")).to_contain_text("Tiny B is ready")
        expect(page.locator("#generate-btn")).to_be_enabled()
        expect(page.locator("#gen-model input")).to_be_enabled()
        expect(page.locator("#duration")).to_contain_text("Tiny B allows up to 12 s")
        expect(page.locator("#current-model")).to_contain_text("Model: Tiny B")
        page.get_by_role("tab", name="Settings").click()
        expect(page.locator("#model-dropdown input")).to_have_value(re.compile(r"^Tiny B"))
