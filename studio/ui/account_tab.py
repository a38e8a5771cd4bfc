"""Account tab: who is signed in, logging out (here or everywhere), one's own password and API tokens, and for admins
the users and everyone's tokens.

Everything goes through ctx.accounts (studio.services.accounts.AccountService), which checks who may do what again;
its refusals become gr.Error with its message. Scripts have the same operations in the REST API (/api/me,
/api/tokens, /api/users), so the page's functions are private (no named Gradio endpoint).

A new token's secret is shown once, in a copyable box beside how to use it; the lists only ever show its prefix.
Without login (no --auth and no accounts) the tab only says how to turn accounts on.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd
from pydantic import BaseModel, ValidationError

from studio.context import AppContext
from studio.services.accounts import (AccountCreate, AccountInfo, AccountUpdate, PasswordChange, TokenCreate,
                                      TokenInfo, check_name, check_password)
from studio.ui.access import admin_only
from studio.ui.adapters_tab import fmt_time
from studio.ui.common import md_escape, notify_text, page_actor, user_errors
from studio.users import ROLES, Actor

LOGOUT_URL = "/logout"  # the auth middleware's: ends this login and goes back to the login form
# After a change that ended this browser's login (log out everywhere, a new password): to the login form.
JS_TO_LOGOUT = f"() => {{ window.location.assign('{LOGOUT_URL}'); }}"
JS_TO_LOGOUT_IF = f"(out) => {{ if (out) window.location.assign('{LOGOUT_URL}'); return out; }}"
TOKEN_EXPIRY = [("Never (until revoked)", 0), ("7 days", 7), ("30 days", 30), ("90 days", 90), ("1 year", 365)]
TOKEN_HEADERS = ["Name", "Prefix", "Created", "Last used", "Expires", "State"]
ALL_TOKEN_HEADERS = ["Owner", *TOKEN_HEADERS]
USER_HEADERS = ["Name", "Role", "State", "Created", "Created by"]
NO_LOGIN_NOTE = (
    "This studio runs **without login**: whoever reaches it may do everything, as an admin.\n\n"
    "To give a team accounts, start it with an admin: `--auth USER:PASS` or `STUDIO_AUTH=USER:PASS` (at least 8 "
    "characters). That admin then adds users here (role *admin* or *member*), and everyone gets their own login and "
    "API tokens. Once a studio has accounts, it asks for a login at every start.")
FIELD_LABELS = {"name": "Name", "password": "Password", "new_password": "New password",
                "current_password": "Current password", "expires_in_days": "Expiry", "role": "Role"}


@dataclass
class AdminPanel:
    """Users and everyone's tokens: an admin area (hidden from members, refused to them)."""

    users: gr.Dataframe
    add_name: gr.Textbox
    add_role: gr.Radio
    add_password: gr.Textbox
    add_btn: gr.Button
    user: gr.Dropdown
    role: gr.Radio
    role_btn: gr.Button
    disable_btn: gr.Button
    enable_btn: gr.Button
    password: gr.Textbox
    password_btn: gr.Button
    tokens: gr.Dataframe
    token: gr.Dropdown
    revoke_btn: gr.Button
    logged_out: gr.State  # True after a change that ended the admin's own login (their own password or account)


@dataclass
class AccountTab:
    who: gr.Markdown
    logout_all: gr.Button
    current_password: gr.Textbox
    new_password: gr.Textbox
    repeat_password: gr.Textbox
    password_btn: gr.Button
    token_name: gr.Textbox
    token_days: gr.Dropdown
    token_btn: gr.Button
    new_token_box: gr.Column
    new_token: gr.Textbox
    new_token_usage: gr.Markdown
    new_token_done: gr.Button
    tokens: gr.Dataframe
    token: gr.Dropdown
    revoke_btn: gr.Button
    admin: AdminPanel


# ---- what the page shows ----------------------------------------------------------------------------------------
def signed_in_line(ctx: AppContext, actor: Actor) -> str:
    """The header's line: who is signed in, with which role (empty without login)."""
    if not ctx.accounts.required:
        return ""
    return f"Signed in as **{md_escape(actor.name)}** · {actor.role}"


def who_markdown(actor: Actor) -> str:
    rights = ("models, adapters, settings, training, datasets, evaluation runs, A/B tests, users and everyone's "
              "jobs and tokens" if actor.is_admin else
              "generating, rating, voting in A/B tests, the queue, and your own jobs, tokens and password")
    return (f"### Signed in as {md_escape(actor.name)}\n\nRole: **{actor.role}**: {rights}.\n\n"
            "*Log out* ends this browser's login; *Log out everywhere* ends every login of yours (other browsers, "
            "`gradio_client` logins). API tokens keep working until revoked (below).")


def token_frame(tokens: list[TokenInfo], owners: bool = False) -> pd.DataFrame:
    """Tokens as a table: never the secret, only its prefix."""
    rows = [[*([t.owner] if owners else []), t.name, t.prefix + "…", fmt_time(t.created_at), fmt_time(t.last_used_at),
             fmt_time(t.expires_at) if t.expires_at else "never", t.state] for t in tokens]
    return pd.DataFrame(rows, columns=ALL_TOKEN_HEADERS if owners else TOKEN_HEADERS)


def token_choices(tokens: list[TokenInfo], owners: bool = False) -> list[tuple[str, str]]:
    """The tokens that can still be revoked (active or expired), as (label, id) choices."""
    return [(f"{t.owner}: " * owners + f"{t.name} ({t.prefix}…)", str(t.id)) for t in tokens if t.state != "revoked"]


def user_frame(users: list[AccountInfo]) -> pd.DataFrame:
    rows = [[u.name, u.role, "disabled" if u.disabled else "enabled", fmt_time(u.created_at), u.created_by]
            for u in users]
    return pd.DataFrame(rows, columns=USER_HEADERS)


def token_usage(secret: str, base_url: str) -> str:
    """How to use a new token (the secret written out: this is the one time it is shown)."""
    return (
        "⚠️ **Copy the token now: it is shown only this once.** The studio keeps only a hash of it; if it is lost, "
        "revoke it and create another. Whoever has it acts as you, with your role.\n\n"
        "Send it as a bearer header, from the REST API:\n\n"
        f"```bash\ncurl -H \"Authorization: Bearer {secret}\" {base_url}api/models\n```\n\n"
        "or from Python with `gradio_client`:\n\n"
        f"```python\nfrom gradio_client import Client\n\nclient = Client(\"{base_url}\", "
        f"headers={{\"Authorization\": \"Bearer {secret}\"}})\n```")


def base_url(request: gr.Request | None) -> str:
    """The studio's address as this page reached it (behind a proxy: the scheme it forwarded)."""
    inner = getattr(request, "request", None)
    try:
        url = str(inner.base_url)
        proto = inner.headers.get("x-forwarded-proto")
    except AttributeError:
        return "http://127.0.0.1:7860/"
    if proto in ("http", "https") and not url.startswith(proto + ":"):
        url = proto + url[url.index(":"):]
    return url if url.endswith("/") else url + "/"


def checked(model: type[BaseModel], **fields) -> BaseModel:
    """A service request from the form's values; a value the model refuses becomes the field's message."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{FIELD_LABELS.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else 'Form'}: "
                             f"{e['msg'][0].lower()}{e['msg'][1:]}" for e in exc.errors())
        raise gr.Error(notify_text(f"Check the form: {problems}."), print_exception=False) from None


# ---- handlers (actor: who acts, from page_actor(request)) -------------------------------------------------------
def my_view(ctx: AppContext, actor: Actor) -> list:
    """[who, my tokens, my revocable tokens]."""
    with user_errors():
        tokens = ctx.accounts.list_tokens(actor)
    return [who_markdown(actor), token_frame(tokens), gr.Dropdown(choices=token_choices(tokens), value=None)]


def admin_view(ctx: AppContext, actor: Actor) -> list:
    """[users, user choice, everyone's tokens, their revocable tokens]; skipped for a member (an admin area)."""
    if not actor.is_admin:
        return [gr.skip()] * 4
    with user_errors():
        users = ctx.accounts.list_accounts(actor)
        tokens = ctx.accounts.list_tokens(actor, everyone=True)
    return [user_frame(users), gr.Dropdown(choices=[u.name for u in users], value=None), token_frame(tokens, True),
            gr.Dropdown(choices=token_choices(tokens, True), value=None)]


def log_out_everywhere(ctx: AppContext, actor: Actor) -> None:
    with user_errors():
        ended = ctx.accounts.close_all_sessions(actor)
    gr.Info(f"Logged out everywhere ({ended} login{'s' if ended != 1 else ''} ended).")


def change_password(ctx: AppContext, actor: Actor, current: str, new: str, repeat: str) -> list:
    """[current, new, repeat] cleared; every login of the person ends (the page then goes to the login form)."""
    if (new or "") != (repeat or ""):
        raise gr.Error("The new password and its repetition differ.", print_exception=False)
    with user_errors():
        check_password(new or "", actor.name)  # the service's words for a short one (before the model's)
        ctx.accounts.change_password(actor, checked(PasswordChange, current_password=current or "",
                                                    new_password=new or ""))
    gr.Info("Password changed: every login of yours ended. Log in again with the new password.")
    return ["", "", ""]


def create_token(ctx: AppContext, actor: Actor, name: str, days, url: str) -> list:
    """[name cleared, secret box shown, secret, usage, my tokens, my revocable tokens]."""
    if days not in [d for _label, d in TOKEN_EXPIRY]:
        raise gr.Error("Choose when the token expires in the list.", print_exception=False)
    req = checked(TokenCreate, name=(name or "").strip() or " ", expires_in_days=days or None)
    with user_errors():
        new = ctx.accounts.create_token(actor, req)
        tokens = ctx.accounts.list_tokens(actor)
    gr.Info(notify_text(f"Token {new.info.name} created: copy it now, it is shown only this once."))
    return ["", gr.Column(visible=True), new.token, token_usage(new.token, url), token_frame(tokens),
            gr.Dropdown(choices=token_choices(tokens), value=None)]


def revoke_token(ctx: AppContext, actor: Actor, token_id, everyone: bool = False) -> list:
    """[tokens, revocable tokens] of the actor (everyone=True: everyone's, for an admin)."""
    if token_id in (None, ""):
        raise gr.Error("Choose a token to revoke.", print_exception=False)
    with user_errors():
        info = ctx.accounts.revoke_token(actor, int(token_id))
        tokens = ctx.accounts.list_tokens(actor, everyone=everyone)
    whose = f" of {info.owner}" if info.owner != actor.name else ""
    gr.Info(notify_text(f"Token {info.name}{whose} ({info.prefix}…) revoked: it no longer works."))
    return [token_frame(tokens, everyone), gr.Dropdown(choices=token_choices(tokens, everyone), value=None)]


def add_user(ctx: AppContext, actor: Actor, name: str, role: str, password: str) -> list:
    """[name, password cleared, users, user choice]."""
    with user_errors():
        name = check_name(name or "")
        check_password(password or "", name)
        info = ctx.accounts.create_account(actor, checked(AccountCreate, name=name, password=password or "",
                                                          role=role or "member"))
        users = ctx.accounts.list_accounts(actor)
    gr.Info(notify_text(f"Added {info.name} ({info.role}). Give them their password: they can change it in their "
                        "Account tab."))
    return ["", "", user_frame(users), gr.Dropdown(choices=[u.name for u in users], value=info.name)]


def update_user(ctx: AppContext, actor: Actor, name, change: dict) -> list:
    """[users, everyone's tokens, their revocable tokens, password box cleared, logged out]; change: the
    AccountUpdate's fields. logged_out: the admin's own login ended (their password set, or their account
    disabled)."""
    if not name:
        raise gr.Error("Choose a user first.", print_exception=False)
    with user_errors():
        if change.get("password") is not None:
            check_password(change["password"], name)
        info = ctx.accounts.update_account(actor, name, checked(AccountUpdate, **change))
    ended = name == actor.name and (change.get("password") is not None or change.get("disabled") is True)
    if "role" in change:
        said = f"{info.name} is now {info.role}."
    elif "disabled" in change:
        said = (f"{info.name} is disabled: their logins and tokens stopped." if info.disabled
                else f"{info.name} is enabled again.")
    else:
        said = f"New password set for {info.name}: their logins ended."
    gr.Info(notify_text(said + (" That was you: log in again." if ended else "")))
    if ended:
        return [gr.skip()] * 4 + [True]
    users, _choice, tokens, token = admin_view(ctx, actor)
    return [users, tokens, token, "", False]


# ---- layout -----------------------------------------------------------------------------------------------------
def build_account_tab(ctx: AppContext) -> AccountTab | None:
    """The tab's content (inside `with gr.Tab(...)`); None without login (a note only)."""
    if not ctx.accounts.required:
        gr.Markdown(NO_LOGIN_NOTE, elem_id="account-no-login")
        return None
    with gr.Row(equal_height=True):
        who = gr.Markdown(elem_id="account-who")
        with gr.Column(scale=0, min_width=220):
            gr.Button("Log out", link=LOGOUT_URL, link_target="_self", size="sm", elem_id="account-logout")
            logout_all = gr.Button("Log out everywhere", size="sm", variant="stop", elem_id="account-logout-all")
    with gr.Accordion("Change my password", open=False, elem_id="account-password"):
        with gr.Row():
            current_password = gr.Textbox(label="Current password", type="password", max_lines=1,
                                          elem_id="account-current-password")
            new_password = gr.Textbox(label="New password", type="password", max_lines=1,
                                      elem_id="account-new-password", info="At least 8 characters")
            repeat_password = gr.Textbox(label="New password again", type="password", max_lines=1,
                                         elem_id="account-repeat-password")
        password_btn = gr.Button("Change password", elem_id="account-password-btn")
    gr.Markdown("### My API tokens\nFor scripts and `gradio_client`: a token acts as you, with your role, until "
                "it expires or is revoked.")
    with gr.Row(equal_height=True):
        token_name = gr.Textbox(label="Token name", max_lines=1, elem_id="token-name", scale=3,
                                placeholder="nightly renders", info="What it is for (shown in the list)")
        token_days = gr.Dropdown(TOKEN_EXPIRY, value=0, label="Expires", elem_id="token-days", scale=1)
        token_btn = gr.Button("Create token", variant="primary", elem_id="token-create", scale=0, min_width=160)
    with gr.Column(visible=False, elem_id="new-token-box", variant="panel") as new_token_box:
        new_token = gr.Textbox(label="Your new token (shown only this once)", interactive=False, buttons=["copy"],
                               elem_id="new-token", max_lines=1)
        new_token_usage = gr.Markdown(elem_id="new-token-usage")
        new_token_done = gr.Button("I have copied it: hide it", size="sm", elem_id="new-token-done")
    tokens = gr.Dataframe(token_frame([]), headers=TOKEN_HEADERS, interactive=False, elem_id="my-tokens",
                          label="My tokens", max_height=280, wrap=True)
    with gr.Row(equal_height=True):
        token = gr.Dropdown([], label="Token", elem_id="my-token-choice", scale=3)
        revoke_btn = gr.Button("Revoke", variant="stop", elem_id="my-token-revoke", scale=0, min_width=160)
    return AccountTab(who, logout_all, current_password, new_password, repeat_password, password_btn, token_name,
                      token_days, token_btn, new_token_box, new_token, new_token_usage, new_token_done, tokens, token,
                      revoke_btn, build_admin_panel())


def build_admin_panel() -> AdminPanel:
    with gr.Column(elem_id="account-admin", elem_classes=admin_only()):
        gr.Markdown("### Users")
        users = gr.Dataframe(user_frame([]), headers=USER_HEADERS, interactive=False, elem_id="users-table",
                             max_height=300, label="Users")
        with gr.Accordion("Add a user", open=False, elem_id="user-add"):
            with gr.Row(equal_height=True):
                add_name = gr.Textbox(label="Name", max_lines=1, elem_id="user-add-name",
                                      info="Letters, digits and . _ @ - (up to 64)")
                add_role = gr.Radio(list(ROLES), value="member", label="Role", elem_id="user-add-role")
                add_password = gr.Textbox(label="Initial password", type="password", max_lines=1,
                                          elem_id="user-add-password", info="At least 8 characters; they can "
                                                                            "change it")
            add_btn = gr.Button("Add user", variant="primary", elem_id="user-add-btn")
        with gr.Accordion("Change a user", open=False, elem_id="user-change"):
            user = gr.Dropdown([], label="User", elem_id="user-choice")
            with gr.Row(equal_height=True):
                role = gr.Radio(list(ROLES), value="member", label="Role", elem_id="user-role", scale=2)
                role_btn = gr.Button("Change role", elem_id="user-role-btn", scale=1)
                disable_btn = gr.Button("Disable", variant="stop", elem_id="user-disable", scale=1)
                enable_btn = gr.Button("Enable", elem_id="user-enable", scale=1)
            with gr.Row(equal_height=True):
                password = gr.Textbox(label="New password", type="password", max_lines=1, elem_id="user-password",
                                      scale=3, info="Their logins end; tell them the new one")
                password_btn = gr.Button("Set password", elem_id="user-password-btn", scale=1)
        gr.Markdown("### Everyone's API tokens")
        tokens = gr.Dataframe(token_frame([], True), headers=ALL_TOKEN_HEADERS, interactive=False,
                              elem_id="all-tokens", max_height=300, label="Tokens", wrap=True)
        with gr.Row(equal_height=True):
            token = gr.Dropdown([], label="Token", elem_id="all-token-choice", scale=3)
            revoke_btn = gr.Button("Revoke", variant="stop", elem_id="all-token-revoke", scale=0, min_width=160)
    return AdminPanel(users, add_name, add_role, add_password, add_btn, user, role, role_btn, disable_btn,
                      enable_btn, password, password_btn, tokens, token, revoke_btn, gr.State(False))


# ---- events -----------------------------------------------------------------------------------------------------
def wire_account_tab(ctx: AppContext, tab: AccountTab | None, item: gr.Tab, signed_in: gr.Markdown,
                     demo: gr.Blocks) -> None:
    """The header's "Signed in as" line at page load; the tab's lists when it is opened and after each change."""
    private = dict(api_visibility="private", show_progress="hidden")
    if not ctx.accounts.required:
        return

    def header(request: gr.Request):
        return signed_in_line(ctx, page_actor(request))

    demo.load(header, None, signed_in, queue=False, **private)
    if tab is None:
        return
    admin = tab.admin
    mine_out = [tab.who, tab.tokens, tab.token]
    admin_out = [admin.users, admin.user, admin.tokens, admin.token]

    def opened(request: gr.Request) -> list:
        actor = page_actor(request)
        return [*my_view(ctx, actor), *admin_view(ctx, actor)]

    item.select(opened, None, [*mine_out, *admin_out], **private)

    def everywhere(request: gr.Request) -> None:
        log_out_everywhere(ctx, page_actor(request))

    tab.logout_all.click(everywhere, None, None, **private).success(None, js=JS_TO_LOGOUT, **private)

    def password(current, new, repeat, request: gr.Request) -> list:
        return change_password(ctx, page_actor(request), current, new, repeat)

    tab.password_btn.click(password, [tab.current_password, tab.new_password, tab.repeat_password],
                           [tab.current_password, tab.new_password, tab.repeat_password], **private
                           ).success(None, js=JS_TO_LOGOUT, **private)

    def new_token(name, days, request: gr.Request) -> list:
        return create_token(ctx, page_actor(request), name, days, base_url(request))

    new_out = [tab.token_name, tab.new_token_box, tab.new_token, tab.new_token_usage, tab.tokens, tab.token]
    for trigger in (tab.token_btn.click, tab.token_name.submit):
        trigger(new_token, [tab.token_name, tab.token_days], new_out, **private)
    # Hidden and forgotten: the page no longer holds the secret.
    tab.new_token_done.click(lambda: [gr.Column(visible=False), "", ""], None,
                             [tab.new_token_box, tab.new_token, tab.new_token_usage], queue=False, **private)

    def revoke_mine(token_id, request: gr.Request) -> list:
        return revoke_token(ctx, page_actor(request), token_id)

    tab.revoke_btn.click(revoke_mine, tab.token, [tab.tokens, tab.token], **private)

    # ---- admins --------------------------------------------------------------------------------------------
    def add(name, role, password_, request: gr.Request) -> list:
        return add_user(ctx, page_actor(request), name, role, password_)

    admin.add_btn.click(add, [admin.add_name, admin.add_role, admin.add_password],
                        [admin.add_name, admin.add_password, admin.users, admin.user], **private)

    def show_user(name, request: gr.Request):
        actor = page_actor(request)
        with user_errors():
            found = [u for u in ctx.accounts.list_accounts(actor) if u.name == name]
        return gr.Radio(value=found[0].role) if found else gr.skip()

    admin.user.input(show_user, admin.user, admin.role, **private)
    change_out = [admin.users, admin.tokens, admin.token, admin.password, admin.logged_out]

    def changer(fields):
        def change(name, role, password_, request: gr.Request) -> list:
            values = {"role": role, "password": password_ or None}
            return update_user(ctx, page_actor(request), name, fields(values))
        return change

    for button, fields in ((admin.role_btn, lambda v: {"role": v["role"]}),
                           (admin.disable_btn, lambda v: {"disabled": True}),
                           (admin.enable_btn, lambda v: {"disabled": False}),
                           (admin.password_btn, lambda v: {"password": v["password"] or ""})):
        button.click(changer(fields), [admin.user, admin.role, admin.password], change_out, **private
                     ).success(None, admin.logged_out, admin.logged_out, js=JS_TO_LOGOUT_IF, **private)

    def revoke_any(token_id, request: gr.Request) -> list:
        return revoke_token(ctx, page_actor(request), token_id, everyone=True)

    admin.revoke_btn.click(revoke_any, admin.token, [admin.tokens, admin.token], **private)
