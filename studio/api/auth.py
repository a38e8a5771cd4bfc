"""One login for everything the studio serves: the page, Gradio's routes, the REST API and its docs.

A person logs in once through the studio's login form (a session cookie); scripts send HTTP Basic on each request,
or log in like gradio_client does (`POST /login` with username and password, then the cookie). Every route asks for
one or the other, except the login form itself. Failed logins are throttled per client address (the `limits`
library's moving window): past the limit the answer is 429 with Retry-After, whatever the password.
"""
from __future__ import annotations

import base64
import binascii
import html
import math
import secrets
import time
from collections import OrderedDict
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, quote

from fastapi import Request
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from studio.api.security import Refusal, read_body
from studio.users import LOCAL_ACTOR, Actor

COOKIE = "studio-session"
LOGIN_PATHS = ("/login", "/login/")  # gradio_client posts to "login"
LOGOUT_PATHS = ("/logout", "/logout/")
FAILURES_PER_MINUTE = 5
MAX_SESSIONS = 1000  # the oldest are forgotten first: memory stays bounded however many logins
REALM = 'Basic realm="Text2Song Studio", charset="UTF-8"'


def current_user(request: Request) -> str:
    """The user the auth middleware let in, for audit records."""
    return current_actor(request).name


def current_actor(request: Request) -> Actor:
    """The person (name and role) the auth middleware let in (`request.state.actor`); without auth, the local
    person, an admin."""
    actor = getattr(request.state, "actor", None)
    return actor if isinstance(actor, Actor) else LOCAL_ACTOR


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


class Sessions:
    """Session tokens of logged-in people, in memory (a restart logs everyone out)."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self._users: OrderedDict[str, str] = OrderedDict()
        self._limit = limit

    def open(self, user: str) -> str:
        token = secrets.token_urlsafe(32)
        self._users[token] = user
        while len(self._users) > self._limit:
            self._users.popitem(last=False)
        return token

    def user(self, token: str | None) -> str | None:
        return self._users.get(token) if token else None

    def close(self, token: str | None) -> None:
        self._users.pop(token or "", None)


class LoginThrottle:
    """At most FAILURES_PER_MINUTE wrong logins per client address in any minute."""

    def __init__(self, per_minute: int = FAILURES_PER_MINUTE) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._item = RateLimitItemPerMinute(per_minute)

    def retry_after(self, client: str) -> int | None:
        """Seconds to wait before this client may try again, or None when it may try now."""
        if self._limiter.test(self._item, client):
            return None
        reset = self._limiter.get_window_stats(self._item, client).reset_time
        return max(1, math.ceil(reset - time.time()))

    def failed(self, client: str) -> None:
        self._limiter.hit(self._item, client)

    def succeeded(self, client: str) -> None:
        self._limiter.clear(self._item, client)


class AuthMiddleware:
    """Pure ASGI, outside every route: the studio's and Gradio's alike."""

    def __init__(self, app: ASGIApp, user: str, password: str) -> None:
        self.app = app
        self._user, self._password = user.encode(), password.encode()
        self.sessions = Sessions()
        self.throttle = LoginThrottle()

    def _valid(self, user: str, password: str) -> bool:
        # both compared whatever the first gives: the time taken tells nothing
        ok_user = secrets.compare_digest(user.encode(), self._user)
        ok_password = secrets.compare_digest(password.encode(), self._password)
        return ok_user and ok_password

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path = scope["path"]
        client = (scope.get("client") or ("unknown", 0))[0]
        if scope["type"] == "http" and path in LOGIN_PATHS:
            response = await self._login(scope, receive, headers, client)
            await response(scope, receive, send)
            return
        token = _cookie(headers, COOKIE)
        if scope["type"] == "http" and path in LOGOUT_PATHS:
            self.sessions.close(token)
            response = RedirectResponse("/login", status_code=303)
            response.delete_cookie(COOKIE, path="/")
            await response(scope, receive, send)
            return
        user = self.sessions.user(token)
        if user is None and (given := basic_credentials(headers.get("authorization"))) is not None:
            if (wait := self.throttle.retry_after(client)) is not None:
                await _too_many(wait)(scope, receive, send)
                return
            if self._valid(*given):
                user = given[0]
            else:
                self.throttle.failed(client)
        if user is None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await _unauthorized(scope, headers)(scope, receive, send)
            return
        scope.setdefault("state", {}).update(user=user, actor=Actor(user, "admin"))
        await self.app(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, headers: Headers, client: str) -> Response:
        wants_page = "text/html" in headers.get("accept", "")
        target = _local_target(parse_qs(scope.get("query_string", b"").decode("latin-1")).get("next", ["/"])[0])
        if scope.get("method") in ("GET", "HEAD"):
            return HTMLResponse(login_page(target))
        if scope.get("method") != "POST":
            return JSONResponse(status_code=405, content={"detail": {
                "code": "method_not_allowed", "message": "Log in with POST /login (username, password)."}})
        if (wait := self.throttle.retry_after(client)) is not None:
            return _too_many(wait, page=login_page(target, "Too many failed logins: wait a minute.")
                             if wants_page else None)
        try:
            body, _ = await read_body(receive, 16 * 1024)
        except Refusal as refusal:
            return refusal.response()
        form = parse_qs(body.decode("utf-8", "replace"))
        user, password = form.get("username", [""])[0], form.get("password", [""])[0]
        if not self._valid(user.strip(), password):
            self.throttle.failed(client)
            if wants_page:
                return HTMLResponse(login_page(target, "Wrong user name or password."), status_code=401)
            return JSONResponse(status_code=401, content={"detail": {
                "code": "invalid_credentials", "message": "Wrong user name or password."}})
        self.throttle.succeeded(client)
        response: Response = RedirectResponse(target, status_code=303) if wants_page else \
            JSONResponse({"success": True})
        # Lax: the cookie is not sent with another site's POSTs (security.py refuses those as well)
        response.set_cookie(COOKIE, self.sessions.open(user.strip()), httponly=True, samesite="lax", path="/")
        return response


def _cookie(headers: Headers, name: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - a malformed Cookie header is no session
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


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


def _unauthorized(scope: Scope, headers: Headers) -> Response:
    if scope.get("method") in ("GET", "HEAD") and "text/html" in headers.get("accept", ""):
        path = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        return RedirectResponse(f"/login?next={quote(path, safe='/')}", status_code=303)
    return JSONResponse(status_code=401, headers={"WWW-Authenticate": REALM}, content={"detail": {
        "code": "unauthorized", "message": "Log in first: the login form at /login, or HTTP Basic."}})


def login_page(target: str, message: str = "") -> str:
    """A self-contained form (no script, no outside asset): works offline and before any other route is open."""
    note = f'<p class="err" role="alert">{html.escape(message)}</p>' if message else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Text2Song Studio: log in</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f6f6f8; display: grid; place-items: center;
       min-height: 100vh; margin: 0; color: #222; }}
form {{ background: #fff; padding: 2rem; border-radius: 12px; box-shadow: 0 2px 12px #0002; width: 20rem; }}
h1 {{ font-size: 1.3rem; margin: 0 0 1rem; }} label {{ display: block; margin: .8rem 0 .3rem; }}
input {{ width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; border: 1px solid #bbb;
        border-radius: 6px; }}
button {{ margin-top: 1.2rem; width: 100%; padding: .6rem; font-size: 1rem; border: 0; border-radius: 6px;
         background: #f97316; color: #fff; cursor: pointer; }}
.err {{ color: #b91c1c; }}
</style></head>
<body><form method="post" action="/login?next={html.escape(quote(target, safe='/'))}">
<h1>Text2Song Studio</h1>{note}
<label for="username">User name</label><input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form></body></html>"""
