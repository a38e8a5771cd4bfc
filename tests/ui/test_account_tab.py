"""The Account tab's handlers: one's own password and API tokens (the secret shown once, then only its prefix), and
for admins the users and everyone's tokens; refusals as messages with the service's words, user text escaped."""
from __future__ import annotations

import gradio as gr
import pytest
from starlette.requests import Request

from studio.services.accounts import AccountCreate, TokenCreate
from studio.ui import account_tab as tab
from studio.ui.app import build_ui
from studio.users import LOCAL_ACTOR, Actor

EVIL = "<img src=x onerror=alert(1)>"
BOSS = Actor("boss", "admin")
PASSWORD = "correct-horse-1"


def as_page(actor: Actor) -> gr.Request:
    """A page event's request from this person (what the auth middleware leaves in the request's state)."""
    return gr.Request(request=Request({"type": "http", "headers": [(b"host", b"studio.test")], "scheme": "https",
                                       "server": ("studio.test", 443), "path": "/", "state": {"actor": actor}}))


@pytest.fixture(scope="module")
def ctx(make_module_ctx):
    """A studio with accounts: the admin 'boss' (--auth) and the member 'mia'."""
    context = make_module_ctx(auth=(BOSS.name, PASSWORD))
    context.accounts.create_account(BOSS, AccountCreate(name="mia", password=PASSWORD, role="member"))
    return context


@pytest.fixture
def notices(monkeypatch) -> list[str]:
    said: list[str] = []
    monkeypatch.setattr(gr, "Info", said.append)
    return said


def refused(fn, *args) -> str:
    with pytest.raises(gr.Error) as exc:
        fn(*args)
    return exc.value.message


def add_member(ctx, name: str) -> Actor:
    ctx.accounts.create_account(BOSS, AccountCreate(name=name, password=PASSWORD, role="member"))
    return Actor(name, "member")


# ---- tokens ----------------------------------------------------------------------------------------------------
def test_a_new_token_is_shown_once_with_how_to_use_it_then_only_its_prefix(ctx, notices):
    me = add_member(ctx, "tess")
    out = tab.create_token(ctx, me, f"  {EVIL}  ", 30, "https://studio.test/")
    name_box, box, secret, usage, frame, revocable = out
    assert name_box == "" and box.visible is True
    assert ctx.accounts.token_actor(secret) == me  # the secret works as a bearer token, as its owner
    assert f'curl -H "Authorization: Bearer {secret}" https://studio.test/api/models' in usage
    assert f'Client("https://studio.test/", headers={{"Authorization": "Bearer {secret}"}})' in usage
    assert "shown only this once" in usage
    rows = frame.values.tolist()
    assert len(rows) == 1 and rows[0][0] == EVIL.strip() and rows[0][-1] == "active"
    assert rows[0][1].startswith("t2s_") and secret not in " ".join(map(str, rows[0]))  # the prefix, never it
    assert rows[0][4] != "never"  # an expiry was asked for
    assert revocable.choices[0][0].startswith(EVIL) and secret not in revocable.choices[0][0]
    assert notices and "<img" not in notices[0] and "&lt;img" in notices[0]  # escaped in the notice
    # the list shows the same later, without the secret (and now when it was last used)
    _who, later, _choices = tab.my_view(ctx, me)
    assert [r[:3] + r[4:] for r in later.values.tolist()] == [r[:3] + r[4:] for r in rows]
    assert rows[0][3] == "—" and later.values.tolist()[0][3] != "—"


@pytest.mark.parametrize("name, days, problem", [
    ("", 0, "Give the token a name"),
    ("   ", 7, "Give the token a name"),
    ("x" * 101, 0, "Check the form: Name: string should have at most 100 characters"),
    ("ok", "forever", "Choose when the token expires"),
    ("ok", None, "Choose when the token expires"),
])
def test_a_token_form_that_is_wrong_is_a_message(ctx, name, days, problem):
    assert problem in refused(tab.create_token, ctx, Actor("mia", "member"), name, days, "http://h/")


def test_revoking_a_token_stops_it_and_a_member_cannot_revoke_anothers(ctx, notices):
    owner, other = add_member(ctx, "rhea"), add_member(ctx, "otto")
    new = ctx.accounts.create_token(owner, TokenCreate(name="renders"))
    theirs = ctx.accounts.create_token(other, TokenCreate(name="theirs"))
    assert "There is no token" in refused(tab.revoke_token, ctx, owner, str(theirs.info.id))
    assert ctx.accounts.token_actor(theirs.token) == other  # untouched
    assert "Choose a token" in refused(tab.revoke_token, ctx, owner, None)
    frame, choices = tab.revoke_token(ctx, owner, str(new.info.id))
    assert ctx.accounts.token_actor(new.token) is None
    assert frame.values.tolist()[0][-1] == "revoked" and choices.choices == []  # nothing left to revoke
    assert "renders" in notices[-1] and "revoked" in notices[-1]


def test_an_admin_sees_and_revokes_everyones_tokens(ctx, notices):
    owner = add_member(ctx, "una")
    new = ctx.accounts.create_token(owner, TokenCreate(name="una's script"))
    users, _choice, frame, choices = tab.admin_view(ctx, BOSS)
    row = [r for r in frame.values.tolist() if r[1] == "una's script"][0]
    assert row[0] == "una" and row[-1] == "active" and new.token not in " ".join(map(str, row))
    assert ("una: una's script (" + new.info.prefix + "…)", str(new.info.id)) in choices.choices
    frame, _ = tab.revoke_token(ctx, BOSS, str(new.info.id), everyone=True)
    assert ctx.accounts.token_actor(new.token) is None
    assert "of una" in notices[-1]


# ---- one's own account -----------------------------------------------------------------------------------------
def test_the_page_says_who_is_signed_in_with_which_role(ctx):
    assert tab.signed_in_line(ctx, Actor("mia", "member")) == "Signed in as **mia** · member"
    who = tab.who_markdown(Actor("a_b", "member"))
    assert "a\\_b" in who and "Role: **member**" in who and "your own jobs" in who  # user text escaped
    assert "users" in tab.who_markdown(BOSS)


def test_changing_ones_password(ctx, notices):
    me = add_member(ctx, "pia")
    assert "differ" in refused(tab.change_password, ctx, me, PASSWORD, "new-password-1", "new-password-2")
    assert "too short" in refused(tab.change_password, ctx, me, PASSWORD, "short", "short")
    assert "The current password is wrong." in refused(tab.change_password, ctx, me, "wrong-one",
                                                       "new-password-1", "new-password-1")
    session = ctx.accounts.open_session(me)
    assert tab.change_password(ctx, me, PASSWORD, "new-password-1", "new-password-1") == ["", "", ""]
    assert ctx.accounts.authenticate("pia", "new-password-1") == me
    assert ctx.accounts.authenticate("pia", PASSWORD) is None
    assert ctx.accounts.session_actor(session) is None  # every login ended: the page goes to the login form
    assert "Log in again" in notices[-1]


def test_log_out_everywhere_ends_every_login_but_not_the_tokens(ctx, notices):
    me = add_member(ctx, "lou")
    sessions = [ctx.accounts.open_session(me) for _ in range(2)]
    token = ctx.accounts.create_token(me, TokenCreate(name="t")).token
    tab.log_out_everywhere(ctx, me)
    assert [ctx.accounts.session_actor(s) for s in sessions] == [None, None]
    assert ctx.accounts.token_actor(token) == me
    assert "2 logins ended" in notices[-1]


# ---- users (admins) --------------------------------------------------------------------------------------------
def test_an_admin_adds_a_user_who_can_then_log_in(ctx, notices):
    name, password, frame, choice = tab.add_user(ctx, BOSS, " nina ", "member", "nina-password")
    assert name == password == "" and choice.value == "nina"
    assert ["nina", "member", "enabled"] == [r for r in frame.values.tolist() if r[0] == "nina"][0][:3]
    assert ctx.accounts.authenticate("nina", "nina-password") == Actor("nina", "member")
    assert "Added nina (member)" in notices[-1]


@pytest.mark.parametrize("name, role, password, problem", [
    ("", "member", "long-enough", "is not a valid user name"),
    (EVIL, "member", "long-enough", "is not a valid user name"),
    ("local", "member", "long-enough", "is reserved"),
    ("zed", "member", "short", "too short"),
    ("zed", "owner", "long-enough", "Check the form: Role"),
    ("mia", "member", "long-enough", "There is already a user 'mia'."),
])
def test_a_user_form_that_is_wrong_is_a_message(ctx, name, role, password, problem):
    message = refused(tab.add_user, ctx, BOSS, name, role, password)
    assert problem in message and "<img" not in message


def test_a_member_manages_no_user_and_is_shown_no_admin_list(ctx):
    mia = Actor("mia", "member")
    assert tab.admin_view(ctx, mia) == [gr.skip()] * 4
    assert "Only an admin" in refused(tab.add_user, ctx, mia, "sneaky", "admin", "long-enough")
    assert "Only an admin" in refused(tab.update_user, ctx, mia, "mia", {"role": "admin"})
    assert ctx.accounts.authenticate("sneaky", "long-enough") is None


def test_an_admin_changes_a_role_disables_enables_and_sets_a_password(ctx, notices):
    vic = add_member(ctx, "vic")
    token = ctx.accounts.create_token(vic, TokenCreate(name="t")).token
    users, _tokens, _choices, password, out = tab.update_user(ctx, BOSS, "vic", {"role": "admin"})
    assert [r for r in users.values.tolist() if r[0] == "vic"][0][1] == "admin" and out is False
    assert "vic is now admin." in notices[-1]
    tab.update_user(ctx, BOSS, "vic", {"disabled": True})
    assert ctx.accounts.authenticate("vic", PASSWORD) is None and ctx.accounts.token_actor(token) is None
    tab.update_user(ctx, BOSS, "vic", {"disabled": False})
    assert ctx.accounts.token_actor(token) == Actor("vic", "admin")
    assert "too short" in refused(tab.update_user, ctx, BOSS, "vic", {"password": ""})
    tab.update_user(ctx, BOSS, "vic", {"password": "vic-new-password"})
    assert ctx.accounts.authenticate("vic", "vic-new-password") == Actor("vic", "admin")
    assert "Choose a user" in refused(tab.update_user, ctx, BOSS, None, {"disabled": True})
    assert "There is no user 'ghost'" in refused(tab.update_user, ctx, BOSS, "ghost", {"disabled": True})


def test_the_last_admin_stays_and_an_admin_who_ends_their_own_login_is_sent_to_log_in(make_ctx, notices):
    ctx = make_ctx(auth=("solo", PASSWORD))
    solo = Actor("solo", "admin")
    assert "only admin left" in refused(tab.update_user, ctx, solo, "solo", {"role": "member"})
    assert "only admin left" in refused(tab.update_user, ctx, solo, "solo", {"disabled": True})
    out = tab.update_user(ctx, solo, "solo", {"password": "solo-new-password"})
    assert out[-1] is True  # the page then goes to the login form
    assert "That was you" in notices[-1]


# ---- the page --------------------------------------------------------------------------------------------------
def _account_fns(demo: gr.Blocks) -> list:
    """The Account tab's functions (other tabs have functions of the same names, e.g. the queue panel's 'opened')."""
    return [f for f in demo.fns.values() if getattr(f.fn, "__qualname__", "").startswith("wire_account_tab.")]


def _fn(demo: gr.Blocks, name: str):
    fns = [f for f in _account_fns(demo) if f.fn.__name__ == name]
    assert fns, name
    return fns[0]


def test_the_page_with_accounts_opens_the_tab_on_the_persons_own_view(ctx):
    demo = build_ui(ctx)
    assert _fn(demo, "header").fn(as_page(Actor("mia", "member"))) == "Signed in as **mia** · member"
    opened = _fn(demo, "opened")
    member = opened.fn(as_page(Actor("mia", "member")))
    assert "Signed in as mia" in member[0] and member[3:] == [gr.skip()] * 4  # no admin lists for a member
    admin = opened.fn(as_page(BOSS))
    assert "mia" in admin[3].values[:, 0].tolist()
    # every function of the tab is the page's own: scripts use the REST API
    assert _account_fns(demo) and all(f.api_visibility == "private" for f in _account_fns(demo))


def test_the_page_without_login_says_how_to_turn_accounts_on(make_ctx):
    ctx = make_ctx()
    demo = build_ui(ctx)
    notes = [b.value for b in demo.blocks.values() if getattr(b, "elem_id", None) == "account-no-login"]
    assert notes and "STUDIO_AUTH=USER:PASS" in notes[0]
    assert tab.signed_in_line(ctx, LOCAL_ACTOR) == ""
    assert not _account_fns(demo)


def test_base_url_follows_the_request_and_a_proxys_scheme():
    assert tab.base_url(as_page(BOSS)) == "https://studio.test/"
    proxied = gr.Request(request=Request({"type": "http", "scheme": "http", "server": ("space.hf", 80), "path": "/",
                                          "headers": [(b"host", b"space.hf"), (b"x-forwarded-proto", b"https")]}))
    assert tab.base_url(proxied) == "https://space.hf/"
    assert tab.base_url(None).startswith("http://")
