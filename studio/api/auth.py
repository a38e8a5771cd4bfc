"""One login for everything the studio serves (the page, Gradio's routes, the REST API and its docs), and the role
every route needs (roles.py), checked before any route runs.

Who a request comes from, in this order: the login session's cookie (the login form, or gradio_client's
`POST /login`), an API token (`Authorization: Bearer t2s_...`), HTTP Basic (name and password on each request).
Sessions, tokens and accounts live in the database (services/accounts.py): several studios on one database share
them, and a logout, a revoked token, a disabled account or a new role applies at the next request everywhere.
Failed logins are throttled per client address and per user name (the `limits` library's moving window): past the
limit the answer is 429 with Retry-After, even for the right password.
"""
from __future__ import annotations

import base64
import binascii
import html
import math
import time
from collections.abc import Callable
from urllib.parse import parse_qs, quote

from fastapi import Request
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from studio.api.roles import RestRoles, runs_a_function
from studio.api.security import MAX_GRADIO_JSON_BYTES, Refusal, read_body
from studio.services.accounts import TOKEN_PREFIX, AccountService
from studio.users import LOCAL_ACTOR, Actor, Role

COOKIE = "studio-session"
TOKEN = "api-token"  # how a request came in, when it came with an API token (not a login session)
LOGIN_PATHS = ("/login", "/login/")  # gradio_client posts to "login"
LOGOUT_PATHS = ("/logout", "/logout/")
FAILURES_PER_MINUTE = 5  # login attempts per client address (a right one clears the count)
NAME_ATTEMPTS_PER_MINUTE = 30  # per user name from any address: guessing slowed, the person not locked out
REALM = 'Basic realm="Text2Song Studio", charset="UTF-8"'
FIRST_ADMIN = ("No account exists yet. Create the first admin: start the studio with STUDIO_AUTH=USER:PASS (on a "
               "Hugging Face Space: a secret named STUDIO_AUTH in the Space's settings), or run `python -m studio.cli "
               "user add NAME --role admin` on the server.")


def current_user(request: Request) -> str:
    """The user the auth middleware let in, for audit records."""
    return current_actor(request).name


def current_actor(request: Request) -> Actor:
    """The person (name and role) the auth middleware let in (`request.state.actor`); without auth, the local
    person, an admin."""
    actor = getattr(request.state, "actor", None)
    return actor if isinstance(actor, Actor) else LOCAL_ACTOR


def current_session(request: Request) -> str | None:
    """The login session the request came with (its cookie's value), when it came with one."""
    return getattr(request.state, "login_session", None)


def gradio_user(request: Request) -> str | None:
    """Gradio's auth_dependency: the user this middleware already let in (Gradio then checks its own routes too)."""
    return getattr(request.state, "user", None)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def bearer_token(header: str | None) -> str | None:
    """A studio API token from `Authorization: Bearer`; other bearer values (a Hugging Face token that
    gradio_client forwards) are no credentials of this studio."""
    scheme, _, value = (header or "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value.startswith(TOKEN_PREFIX) else None


class LoginThrottle:
    """Login attempts per minute, counted BEFORE the password is checked (an attempt that would go over the limit is
    refused without checking: a burst of parallel guesses cannot all slip in while the first ones are hashed):
    FAILURES_PER_MINUTE per client address, and NAME_ATTEMPTS_PER_MINUTE per user name from anywhere (looser, so that
    one stranger cannot lock a person out of their account; many addresses are needed to guess at one name). A right
    password clears the address's and the name's counts."""

    def __init__(self, per_minute: int = FAILURES_PER_MINUTE, per_name: int = NAME_ATTEMPTS_PER_MINUTE) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._address = RateLimitItemPerMinute(per_minute)
        self._name = RateLimitItemPerMinute(per_name)

    def _limits(self, client: str, name: str) -> list[tuple[RateLimitItemPerMinute, str]]:
        return [(self._address, f"address:{client}"), (self._name, f"user:{name.strip().casefold()[:100]}")]

    def attempt(self, client: str, name: str) -> int | None:
        """Count one attempt; None when it may go on, else the seconds to wait (the attempt is refused)."""
        waits = []
        for item, key in self._limits(client, name):
            if not self._limiter.hit(item, key):  # atomic test-and-count
                reset = self._limiter.get_window_stats(item, key).reset_time
                waits.append(max(1, math.ceil(reset - time.time())))
        return max(waits) if waits else None

    def succeeded(self, client: str, name: str) -> None:
        for item, key in self._limits(client, name):
            self._limiter.clear(item, key)


class AuthMiddleware:
    """Pure ASGI, outside every route: the studio's and Gradio's alike. trust_forwarded: the studio runs behind a
    proxy that adds the client's address to X-Forwarded-For (a Hugging Face Space), so throttling counts per
    person, not per proxy."""

    def __init__(self, app: ASGIApp, accounts: AccountService, trust_forwarded: bool = False,
                 first_admin: str | None = None,
                 may_read_file: Callable[[Actor, str], bool] | None = None) -> None:
        self.app = app
        self.accounts = accounts
        self.throttle = LoginThrottle()
        self.trust_forwarded = trust_forwarded
        self.first_admin = first_admin or FIRST_ADMIN
        self.may_read_file = may_read_file  # Gradio's /file= route: whose job's audio a member may download
        self._rest: RestRoles | None = None

    def _client(self, scope: Scope, headers: Headers) -> str:
        if self.trust_forwarded and (forwarded := headers.get("x-forwarded-for")):
            return forwarded.split(",")[-1].strip()[:100]  # the last hop is the one the proxy itself added
        return (scope.get("client") or ("unknown", 0))[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = scope["path"]
        client = self._client(scope, headers)
        if scope["type"] == "http" and path in LOGIN_PATHS:
            response = await self._login(scope, receive, headers, client)
            await response(scope, receive, send)
            return
        cookie = _cookie(headers, COOKIE)
        if scope["type"] == "http" and path in LOGOUT_PATHS:
            await run_in_threadpool(self.accounts.close_session, cookie)
            response = RedirectResponse("/login", status_code=303)
            response.delete_cookie(COOKIE, path="/")
            await response(scope, receive, send)
            return
        actor, session, refusal = await self._identify(headers, cookie, client)
        if actor is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await (refusal or _unauthorized(scope, headers, stale_cookie=cookie is not None))(scope, receive, send)
            return
        if scope["type"] == "http" and not actor.is_admin:
            try:
                needed, receive = await self._needed_role(scope, receive)
            except Refusal as refused:
                await refused.response()(scope, receive, send)
                return
            if needed == "admin":
                await _forbidden(scope)(scope, receive, send)
                return
            if self.may_read_file is not None and (served := gradio_file(scope["path"])) is not None and \
                    not await run_in_threadpool(self.may_read_file, actor, served):
                # another person's generation: as unknown as their job is (404, not 403)
                await JSONResponse(status_code=404, content={"detail": {
                    "code": "file_not_found", "message": "There is no such file."}})(scope, receive, send)
                return
        by_token = session is TOKEN
        scope.setdefault("state", {}).update(user=actor.name, actor=actor, by_token=by_token,
                                             login_session=None if by_token else session)
        await self.app(scope, receive, send)

    async def _identify(self, headers: Headers, cookie: str | None,
                        client: str) -> tuple[Actor | None, str | None, Response | None]:
        """(who, their session cookie when that is how they came (TOKEN for an API token), a refusal to send instead
        of the plain 401)."""
        if cookie and (actor := await run_in_threadpool(self.accounts.session_actor, cookie)) is not None:
            return actor, cookie, None
        authorization = headers.get("authorization")
        if (token := bearer_token(authorization)) is not None:
            actor = await run_in_threadpool(self.accounts.token_actor, token)
            if actor is not None:
                return actor, TOKEN, None
            return None, None, JSONResponse(status_code=401, headers={"WWW-Authenticate": "Bearer"}, content={
                "detail": {"code": "invalid_token", "message": "This API token is unknown, revoked or expired (or "
                                                              "its account is disabled): create a new one."}})
        if (given := basic_credentials(authorization)) is not None:
            if (wait := self.throttle.attempt(client, given[0])) is not None:
                return None, None, _too_many(wait)
            actor = await run_in_threadpool(self.accounts.authenticate, *given)
            if actor is not None:
                self.throttle.succeeded(client, given[0])
            return actor, None, None
        return None, None, None

    async def _needed_role(self, scope: Scope, receive: Receive) -> tuple[Role, Receive]:
        """The role this request needs, and the receive to pass on (a body read to tell the function is replayed)."""
        path = scope["path"]
        app = scope.get("app")
        if path.startswith("/api/") and app is not None:
            if self._rest is None:  # the app's routes are all in place by its first request
                self._rest = RestRoles(app.openapi().get("paths", {}))
            return self._rest.role(scope.get("method", "GET"), path), receive
        roles = getattr(getattr(app, "state", None), "gradio_roles", None)
        if roles is None or scope.get("method") != "POST" or not runs_a_function(path):
            return "member", receive
        body, receive = await read_body(receive, MAX_GRADIO_JSON_BYTES)
        return roles.request_role(path, body) or "member", receive

    async def _login(self, scope: Scope, receive: Receive, headers: Headers, client: str) -> Response:
        wants_page = "text/html" in headers.get("accept", "")
        target = _local_target(parse_qs(scope.get("query_string", b"").decode("latin-1")).get("next", ["/"])[0])
        has_accounts = await run_in_threadpool(self.accounts.has_accounts)
        note = "" if has_accounts else self.first_admin
        if scope.get("method") in ("GET", "HEAD"):
            return HTMLResponse(login_page(target, setup=note))
        if scope.get("method") != "POST":
            return JSONResponse(status_code=405, content={"detail": {
                "code": "method_not_allowed", "message": "Log in with POST /login (username, password)."}})
        try:
            body, _ = await read_body(receive, 16 * 1024)
        except Refusal as refusal:
            return refusal.response()
        form = parse_qs(body.decode("utf-8", "replace"))
        user, password = form.get("username", [""])[0].strip(), form.get("password", [""])[0]
        if not has_accounts:
            if wants_page:
                return HTMLResponse(login_page(target, setup=note), status_code=401)
            return JSONResponse(status_code=401, content={"detail": {"code": "no_accounts", "message": note}})
        if (wait := self.throttle.attempt(client, user)) is not None:
            return _too_many(wait, page=login_page(target, "Too many failed logins: wait a minute.")
                             if wants_page else None)
        actor = await run_in_threadpool(self.accounts.authenticate, user, password)
        if actor is None:
            if wants_page:
                return HTMLResponse(login_page(target, "Wrong user name or password."), status_code=401)
            return JSONResponse(status_code=401, content={"detail": {
                "code": "invalid_credentials", "message": "Wrong user name or password."}})
        self.throttle.succeeded(client, user)
        secret = await run_in_threadpool(self.accounts.open_session, actor)
        response: Response = RedirectResponse(target, status_code=303) if wants_page else \
            JSONResponse({"success": True})
        # Lax: the cookie is not sent with another site's POSTs (security.py refuses those as well). Secure when
        # the person came over https, also through a proxy that says so (a Space): never sent in clear text then.
        # A Space's page is shown in an iframe of huggingface.co (another site), where browsers keep only
        # SameSite=None cookies: there it is None (Secure), and security.py's Origin / Sec-Fetch-Site check is what
        # refuses another site's writes.
        secure = scope.get("scheme") == "https" or headers.get("x-forwarded-proto", "").strip().lower() == "https"
        same_site = "none" if secure and self.trust_forwarded else "lax"
        response.set_cookie(COOKIE, secret, max_age=int(self.accounts.session_lifetime.total_seconds()),
                            httponly=True, samesite=same_site, secure=secure, path="/")
        return response


def _cookie(headers: Headers, name: str) -> str | None:
    # Starlette's lenient parser: another app's malformed cookie on the same host must not hide the session
    return cookie_parser(headers.get("cookie", "")).get(name) or None


def gradio_file(path: str) -> str | None:
    """The file a request to Gradio's file routes asks for (`/gradio_api/file=PATH`, its older `/file/PATH`)."""
    for prefix in ("/gradio_api/file=", "/gradio_api/file/"):
        if path.startswith(prefix):
            return path[len(prefix):]
    return None


def _local_target(target: str) -> str:
    """Where to go after logging in: a path on this studio only (never another site)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _too_many(wait: int, page: str | None = None) -> Response:
    headers = {"Retry-After": str(wait)}
    if page is not None:
        return HTMLResponse(page, status_code=429, headers=headers)
    return JSONResponse(status_code=429, headers=headers, content={"detail": {
        "code": "too_many_attempts", "message": f"Too many failed logins: try again in {wait} s.",
        "retry_after_s": wait}})


def _forbidden(scope: Scope) -> Response:
    what = f"{scope.get('method', 'GET')} {scope['path'][:200]}"
    if scope["path"].startswith("/gradio_api/"):
        what = "This action of the page"
    return JSONResponse(status_code=403, content={"detail": {
        "code": "forbidden", "message": f"{what} needs an admin: ask an admin of this studio to do it, or to make "
                                        "you an admin."}})


def _unauthorized(scope: Scope, headers: Headers, stale_cookie: bool = False) -> Response:
    if scope.get("method") in ("GET", "HEAD") and "text/html" in headers.get("accept", ""):
        path = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        response: Response = RedirectResponse(f"/login?next={quote(path, safe='/')}", status_code=303)
    else:
        # The Basic challenge for scripts only: to a browser's own fetches (Sec-Fetch-Mode) it would open the
        # browser's password prompt, whose remembered credentials then outlive /logout.
        challenge = {} if headers.get("sec-fetch-mode") else {"WWW-Authenticate": REALM}
        response = JSONResponse(status_code=401, headers=challenge, content={"detail": {
            "code": "unauthorized", "message": "Log in first: the login form at /login, an API token "
                                               "(Authorization: Bearer t2s_...), or HTTP Basic."}})
    if stale_cookie:  # logged out elsewhere or expired: the browser forgets it
        response.delete_cookie(COOKIE, path="/")
    return response


def login_page(target: str, message: str = "", setup: str = "") -> str:
    """A self-contained form (no script, no outside asset): works offline and before any other route is open.
    setup: no account exists yet, so the page says how to create the first admin instead of offering the form."""
    note = f'<p class="err" role="alert">{html.escape(message)}</p>' if message else ""
    if setup:
        body = f'<div class="box"><h1>Text2Song Studio</h1><p role="alert">{html.escape(setup)}</p></div>'
    else:
        body = f"""<form method="post" action="/login?next={html.escape(quote(target, safe='/'))}">
<h1>Text2Song Studio</h1>{note}
<label for="username">User name</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form>"""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Text2Song Studio: log in</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f6f6f8; display: grid; place-items: center;
       min-height: 100vh; margin: 0; color: #222; }}
form, .box {{ background: #fff; padding: 2rem; border-radius: 12px; box-shadow: 0 2px 12px #0002; width: 20rem; }}
h1 {{ font-size: 1.3rem; margin: 0 0 1rem; }} label {{ display: block; margin: .8rem 0 .3rem; }}
input {{ width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; border: 1px solid #bbb;
        border-radius: 6px; }}
button {{ margin-top: 1.2rem; width: 100%; padding: .6rem; font-size: 1rem; border: 0; border-radius: 6px;
         background: #f97316; color: #fff; cursor: pointer; }}
.err {{ color: #b91c1c; }}
</style></head>
<body>{body}</body></html>"""
