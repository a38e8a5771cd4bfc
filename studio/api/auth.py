"""HTTP Basic auth for the REST API and its docs: Gradio's auth= protects only Gradio's own routes."""
from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

PROTECTED_PREFIXES = ("/api", "/docs", "/redoc", "/openapi.json")
LOCAL_USER = "local"  # who makes a change when the studio runs without auth


def current_user(request: Request) -> str:
    """The user the auth middleware let in, for audit records."""
    return getattr(request.state, "user", None) or LOCAL_USER


def _credentials(header: str | None) -> tuple[str, str] | None:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def install_basic_auth(app: FastAPI, user: str, password: str) -> None:
    @app.middleware("http")
    async def require_auth(request: Request, call_next):
        if request.url.path.startswith(PROTECTED_PREFIXES):
            given = _credentials(request.headers.get("authorization"))
            ok = given is not None and secrets.compare_digest(given[0].encode(), user.encode()) and \
                secrets.compare_digest(given[1].encode(), password.encode())
            if not ok:
                return JSONResponse(status_code=401, headers={"WWW-Authenticate": 'Basic realm="Text2Song Studio"'},
                                    content={"detail": {"code": "unauthorized",
                                                        "message": "Log in with the studio's user and password."}})
            request.state.user = given[0]
        return await call_next(request)
