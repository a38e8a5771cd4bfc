"""In Chromium: with --auth, one login through the studio's form opens the page and the docs (bug 6); the docs
render offline (bug 2); another site's page cannot reset the settings (security 2)."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.browser

from tests.browser_support import expect  # noqa: E402
from tests.live import BROWSER_TIMEOUT_MS, free_port, serve  # noqa: E402


@pytest.fixture
def url(make_ctx):
    ctx = make_ctx(auth=("alice", "pw"))
    with serve(ctx) as base:
        yield base


def test_one_login_opens_page_and_docs_offline(browser, url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    outside: list[str] = []
    # anything asked of another host would fail offline: record it
    context.route("**/*", lambda route: (outside.append(route.request.url), route.abort())
                  if not route.request.url.startswith(url) else route.continue_())
    page = context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    try:
        page.goto(url)
        expect(page.locator("input[name=password]")).to_be_visible()
        page.screenshot(path="/tmp/studio-login.png")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "wrong")
        page.click("button[type=submit]")
        expect(page.locator(".err")).to_contain_text("Wrong user name or password")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "pw")
        page.click("button[type=submit]")
        expect(page.locator("#current-model")).to_be_visible(timeout=BROWSER_TIMEOUT_MS)
        page.screenshot(path="/tmp/studio-after-login.png")
        page.goto(url + "docs")  # no second login
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Text2Song Studio")
        expect(page.locator(".opblock").first).to_be_visible()
        page.screenshot(path="/tmp/studio-docs.png")
        page.goto(url + "redoc")
        expect(page.locator("redoc h1, .api-info h1").first).to_contain_text("Text2Song Studio")
        page.screenshot(path="/tmp/studio-redoc.png")
        assert outside == []
    finally:
        context.close()


@contextmanager
def other_site():
    """Another site's page on this machine: a plain HTTP server on another port, reached as `localhost` (another
    site than 127.0.0.1). A public site is already stopped by Chromium's private network access rules; other
    browsers do not have them."""
    class Page(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = b"<html><body>cute cats</body></html>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        thread.join(5)


def test_another_sites_page_cannot_reset_settings(browser, make_ctx):
    ctx = make_ctx()
    assert ctx.gen_config.update("studio-tiny", {"top_k": 42}, by="local").values["top_k"] == 42
    with serve(ctx) as base, other_site() as evil:
        page = browser.new_page()
        answers: list[tuple[str, int]] = []
        page.on("response", lambda r: answers.append((r.url, r.status)) if "/api/" in r.url else None)
        try:
            page.goto(evil)
            result = page.evaluate("""async (target) => {
                await fetch(target + 'api/models/studio-tiny/config/reset', {method: 'POST', mode: 'no-cors'});
                await fetch(target + 'api/adapters', {method: 'POST', mode: 'no-cors',
                    headers: {'content-type': 'text/plain'}, body: '{"source": "folder", "path": "x"}'});
                return 'sent';
            }""", base)
            assert result == "sent"
            page.wait_for_timeout(500)
            assert sorted(status for _url, status in answers) == [403, 403], answers  # reached, and refused
        finally:
            page.close()
    assert ctx.gen_config.get("studio-tiny").values["top_k"] == 42
