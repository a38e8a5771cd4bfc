"""In Chromium: a studio with accounts. A member logs in through the login form, meets no admin area, generates,
and creates an API token (shown once) in the Account tab, then logs out; the admin logs in, sees everything and adds
a user."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest

pytestmark = pytest.mark.browser

from studio.services.accounts import AccountCreate  # noqa: E402
from studio.users import Actor  # noqa: E402
from tests.browser_support import expect  # noqa: E402
from tests.live import BROWSER_TIMEOUT_MS, serve  # noqa: E402

ADMIN, ADMIN_PASSWORD = "boss", "boss-password"
MEMBER, MEMBER_PASSWORD = "mia", "mia-password"
# What only an admin may see: tabs, and areas of the tabs everyone sees.
ADMIN_TABS = ["Training", "Settings"]
ADMIN_AREAS = ["#gen-model", "#adapter-rename-open", "#register-accordion", "#deleted-accordion",
               "#ab-create-accordion", "#ab-close", "#account-admin"]


@pytest.fixture
def served(make_ctx):
    ctx = make_ctx(auth=(ADMIN, ADMIN_PASSWORD))
    ctx.accounts.create_account(Actor(ADMIN, "admin"), AccountCreate(name=MEMBER, password=MEMBER_PASSWORD))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    with serve(ctx) as base:
        yield ctx, base


def logs_in(base: str, name: str, password: str) -> bool:
    """Whether the studio's login accepts this account (as gradio_client logs in)."""
    body = urllib.parse.urlencode({"username": name, "password": password}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(base + "login", data=body), timeout=10) as answer:
            return json.load(answer).get("success") is True
    except urllib.error.HTTPError:
        return False


def log_in(page, base: str, name: str, password: str) -> None:
    page.goto(base)
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    expect(page.locator("#current-model")).to_contain_text("Studio Tiny")
    expect(page.locator("#signed-in")).to_contain_text(f"Signed in as {name}")


def tab(page, name: str):
    return page.get_by_role("tab", name=name, exact=True)


def test_a_member_and_an_admin_on_the_page(browser, served):
    ctx, base = served
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    expect.set_options(timeout=BROWSER_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    assert logs_in(base, MEMBER, MEMBER_PASSWORD)  # accounts log in from the database, not only --auth's admin
    try:
        log_in(page, base, MEMBER, MEMBER_PASSWORD)
        expect(page.locator("#signed-in")).to_contain_text("member")
        for name in ADMIN_TABS:
            expect(tab(page, name)).to_be_hidden()
        expect(page.locator("#gen-model")).to_be_hidden()  # the loaded model is in the header

        # generates (the Generate tab is everyone's)
        page.locator("#prompt textarea").fill("warm lo-fi piano")
        page.locator("#duration input[type=number]").fill("1")
        expect(page.locator("#generate-btn")).to_be_enabled()
        page.locator("#generate-btn").click()
        expect(page.locator("#result-info")).to_contain_text(re.compile(r"Job \d+ "), timeout=60_000)

        tab(page, "Adapters").click()
        expect(page.locator("#adapters-refresh")).to_be_visible()
        tab(page, "A/B tests").click()
        expect(page.locator("#ab-start")).to_be_visible()
        for selector in ADMIN_AREAS:
            expect(page.locator(selector)).to_be_hidden()

        # the Account tab: a token, shown once
        tab(page, "Account").click()
        expect(page.locator("#account-who")).to_contain_text(f"Signed in as {MEMBER}")
        page.locator("#token-name input").fill("nightly renders")
        page.locator("#token-create").click()
        secret_box = page.locator("#new-token input, #new-token textarea").first
        expect(secret_box).to_have_value(re.compile(r"^t2s_"))
        secret = secret_box.input_value()
        expect(page.locator("#new-token-usage")).to_contain_text("shown only this once")
        expect(page.locator("#new-token-usage")).to_contain_text(f"Bearer {secret}")
        expect(page.locator("#my-tokens")).to_contain_text("nightly renders")
        assert ctx.accounts.token_actor(secret) == Actor(MEMBER, "member")
        page.screenshot(path="/tmp/studio-account-member.png", full_page=True)
        page.locator("#new-token-done").click()
        expect(page.locator("#new-token-box")).to_be_hidden()
        assert secret not in page.content()  # gone from the page; the list shows its prefix only

        page.locator("#account-logout").click()
        expect(page.locator("input[name=password]")).to_be_visible()

        log_in(page, base, ADMIN, ADMIN_PASSWORD)
        expect(page.locator("#signed-in")).to_contain_text("admin")
        for name in ADMIN_TABS:
            expect(tab(page, name)).to_be_visible()
        expect(page.locator("#gen-model")).to_be_visible()
        tab(page, "Account").click()
        expect(page.locator("#account-admin")).to_be_visible()
        expect(page.locator("#users-table")).to_contain_text(MEMBER)
        page.locator("#user-add").get_by_text("Add a user").click()
        page.locator("#user-add-name input").fill("newbie")
        page.locator("#user-add-password input").fill("newbie-password")
        page.locator("#user-add-btn").click()
        expect(page.locator("#users-table")).to_contain_text("newbie")
        assert ctx.accounts.authenticate("newbie", "newbie-password") == Actor("newbie", "member")
        expect(page.locator("#all-tokens")).to_contain_text("nightly renders")
        page.screenshot(path="/tmp/studio-account-admin.png", full_page=True)
    finally:
        expect.set_options(timeout=5_000)
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
