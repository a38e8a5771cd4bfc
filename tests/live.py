"""Helpers for tests that need the real server on 127.0.0.1, or a switch held at its download step."""
from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import uvicorn

from studio.context import AppContext
from studio.server import build_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(ctx: AppContext) -> Iterator[str]:
    """The studio app on 127.0.0.1:<free port> in a background thread; yields its base URL, stops on exit."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(ctx, load_model=False), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on",
                                           # pages and gradio_client keep streams open: don't wait for them
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the studio server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive(), "the studio server did not stop"


def hold_fetch(ctx: AppContext) -> threading.Event:
    """Make the next switches wait at their download step until the returned event is set."""
    gate = threading.Event()
    real_fetch = ctx.manager.store.fetch

    def held_fetch(spec, on_bytes):
        gate.wait(30)
        return real_fetch(spec, on_bytes)

    ctx.manager.store.fetch = held_fetch
    return gate


@contextmanager
def held_decoding(ctx: AppContext) -> Iterator[threading.Event]:
    """The worker stops at the first progress report of the next batch it decodes (its jobs are running) until the
    block exits; the event yielded is set once it is there."""
    reached, release = threading.Event(), threading.Event()
    real = ctx.queue.progress

    def progress(job_id, done, total, eta_s):
        real(job_id, done, total, eta_s)
        reached.set()
        release.wait(30)

    ctx.queue.progress = progress  # the worker calls its listener's method: this instance's attribute wins
    try:
        yield reached
    finally:
        release.set()
        del ctx.queue.progress


# Browser tests: Debian's Chromium (never `playwright install`), with no background traffic off this machine.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BROWSER_TIMEOUT_MS = 30_000


@contextmanager
def studio_page(browser, base: str, model_name: str = "Studio Tiny", timeout_ms: int = BROWSER_TIMEOUT_MS):
    """A fresh browser page on the served studio, once the header shows the model. Waits are generous (a slow
    machine), and any JavaScript error on the page fails the test."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    expect.set_options(timeout=timeout_ms)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(base)
        expect(page.locator("#current-model")).to_contain_text(model_name)
        yield page
    finally:
        expect.set_options(timeout=5_000)  # Playwright's default, for other tests
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page, name: str) -> None:
    """/tmp/<name>.png of the whole page, once toasts and layout settle: for a person to look at."""
    page.wait_for_timeout(300)
    page.screenshot(path=f"/tmp/{name}.png", full_page=True)
