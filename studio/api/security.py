"""The request edge: refuse what must never reach a route, before any route (the studio's or Gradio's) runs.

- Host: bound to loopback, only loopback names answer, so a DNS-rebinding page cannot read the studio (a --share
  link's *.gradio.live host is allowed, its tunnel keeps the Host). Checked here rather than by Starlette's
  TrustedHostMiddleware, which answers in plain text.
- Cross-site writes: a browser marks them (Origin, Sec-Fetch-Site); scripts send neither and keep working.
- REST bodies: JSON only with its content type (multipart only where a route takes it), no compressed bodies,
  bounded size and nesting, no NUL / unpaired surrogate in text (no route can store or print them). Number ranges
  are each schema's job (it names the field's own bounds); ids and offsets use api/params.py's 64-bit types.
- Gradio file payloads: a FileData path must be a file Gradio itself uploaded into the studio's own temp dir.
  Mounted apps never `launch()`, so Gradio skips its own check (processing_utils._check_allowed) and would hash
  and copy any server path (`/dev/zero` froze the server); this refuses them all alike, before Gradio reads them.
Every refusal has the studio's shape `{"detail": {"code", "message"}}`, the message saying what to do.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
SHARE_HOSTS = ("*.gradio.live",)  # Gradio's share tunnel forwards the public Host header unchanged
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_JSON_BYTES = 1 << 20  # REST JSON bodies: settings, names, descriptions (uploads are multipart)
MAX_GRADIO_JSON_BYTES = 4 << 20  # Gradio event payloads (files go through /gradio_api/upload, not JSON)
MAX_DEPTH = 32  # nesting of a JSON body; json.loads itself overflows the stack near 1000


class Refusal(Exception):
    """A request refused at the edge: an HTTP status and the studio's `{detail: {code, message}}`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.detail = status, {"code": code, "message": message, **extra}

    def response(self) -> JSONResponse:
        return JSONResponse(status_code=self.status, content={"detail": self.detail})


def allowed_hosts(bind_host: str, share: bool) -> list[str] | None:
    """Host names the studio answers to; None: any (bound to a non-loopback interface, reached by many names)."""
    if bind_host not in ("127.0.0.1", "localhost", "::1"):
        return None
    return [*LOOPBACK_HOSTS, *(SHARE_HOSTS if share else ())]


def install_request_guards(app, *, bind_host: str, share: bool, upload_dir: Path,
                           multipart_routes: Iterable[tuple[str, str]]) -> None:
    """Add the edge middleware to `app` (checks, in order: Host, origin, body)."""
    app.add_middleware(RequestGuard, upload_dir=upload_dir, multipart_routes=frozenset(multipart_routes),
                       hosts=allowed_hosts(bind_host, share))


def check_host(headers: Headers, hosts: list[str]) -> None:
    """The Host header's name (any port) must be one of `hosts` ("*.domain": any name under it)."""
    raw = headers.get("host", "")
    try:
        name = (urlsplit(f"//{raw}").hostname or "") if raw else ""
    except ValueError:  # e.g. an unclosed "["
        name = ""
    if not any(name == h or (h.startswith("*.") and name.endswith(h[1:])) for h in hosts):
        shown = raw[:100].encode("ascii", "backslashreplace").decode()
        raise Refusal(400, "invalid_host", f"This studio answers only to {', '.join(hosts)} (the request came for "
                                           f"{shown!r}). Open it at http://127.0.0.1:<port>/, or start it with "
                                           "--host 0.0.0.0 to serve other names.")


class RequestGuard:
    """Pure ASGI (a BaseHTTPMiddleware would buffer the streaming routes)."""

    def __init__(self, app: ASGIApp, upload_dir: Path, multipart_routes: frozenset[tuple[str, str]],
                 hosts: list[str] | None) -> None:
        self.app = app
        self.hosts = hosts  # None: any Host (bound to a non-loopback interface, reached by many names)
        self.upload_dir = Path(os.path.realpath(upload_dir))
        self.multipart_routes = multipart_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        method = scope.get("method", "GET")
        path: str = scope["path"]
        try:
            if self.hosts is not None:
                check_host(headers, self.hosts)
            if scope["type"] == "websocket" or method in WRITE_METHODS:
                check_same_origin(headers)
            if scope["type"] == "http":
                receive = await self._check_body(method, path, headers, receive)
        except Refusal as refusal:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await refusal.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check_body(self, method: str, path: str, headers: Headers, receive: Receive) -> Receive:
        is_api, is_gradio = path.startswith("/api/"), path.startswith("/gradio_api/")
        if method not in WRITE_METHODS or not (is_api or is_gradio):
            return receive
        if headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            raise Refusal(415, "unsupported_encoding", "Send the request body uncompressed (no Content-Encoding).")
        media_type = headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type == "multipart/form-data":
            if is_api and (method, path.rstrip("/")) not in self.multipart_routes:
                raise Refusal(415, "unsupported_media_type", f"{method} {path} takes JSON, not a form upload.")
            return receive  # the route reads and bounds its own upload
        limit = MAX_JSON_BYTES if is_api else MAX_GRADIO_JSON_BYTES
        body, receive = await read_body(receive, limit)
        if not body:
            return receive
        if media_type != "application/json":
            if is_api:
                raise Refusal(415, "unsupported_media_type",
                              "Send the request body as JSON with Content-Type: application/json.")
            return receive  # Gradio's own forms (e.g. its upload progress) are not JSON
        value = parse_json(body)
        if is_api:
            check_values(value)
        else:
            check_gradio_files(value, self.upload_dir)
        return receive


CROSS_SITE = ("Requests from other sites may not change this studio: use the studio's own page, or send the "
              "request from a script (which sends no Origin header).")


def check_same_origin(headers: Headers) -> None:
    """A browser names the page that sent a request; refuse any other page. No Origin: a script, not a browser."""
    site = headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        raise Refusal(403, "cross_site_request", CROSS_SITE)
    origin = headers.get("origin")
    if origin is None:
        return
    if origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
        raise Refusal(403, "cross_site_request", CROSS_SITE)


async def read_body(receive: Receive, limit: int) -> tuple[bytes, Receive]:
    """The whole body (refused past `limit`) and a `receive` that hands it to the app as if unread."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away: let the app see the disconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Refusal(413, "body_too_large", f"The request body is over {limit // 1024} KiB.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise _invalid("body", f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise Refusal(422, "invalid_json", f"The request body is not valid JSON: {exc}") from None


def _invalid(field: str, problem: str) -> Refusal:
    """Same code and shape as a pydantic refusal of the body (api/errors.py)."""
    return Refusal(422, "invalid_body", f"The request body is not valid: {field}: {problem}",
                   errors=[{"field": field, "message": problem}])


def _walk(value: Any) -> Iterable[tuple[str, Any, int]]:
    """(location, value, depth) of every value in a parsed JSON document, keys included, without recursion."""
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        loc, item, depth = stack.pop()
        yield loc or "body", item, depth
        if isinstance(item, dict):
            for key, child in item.items():
                yield f"{loc}.{key}" if loc else str(key), key, depth + 1
                stack.append((f"{loc}.{key}" if loc else str(key), child, depth + 1))
        elif isinstance(item, list):
            stack.extend((f"{loc}[{i}]", child, depth + 1) for i, child in enumerate(item))


def check_values(value: Any) -> None:
    """Values no route can store or use: refused here once, named by their place in the body."""
    for loc, item, depth in _walk(value):
        if depth > MAX_DEPTH:
            raise _invalid("body", f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            if "\x00" in item:
                raise _invalid(loc, "text contains a NUL character")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise _invalid(loc, "text contains an unpaired surrogate (not valid Unicode)") from None


def _is_file_data(item: Any) -> bool:
    # what Gradio moves into its cache (gradio_client.utils.is_file_obj_with_meta)
    return isinstance(item, dict) and "path" in item and isinstance(item.get("meta"), dict) \
        and item["meta"].get("_type") == "gradio.FileData"


def check_gradio_files(value: Any, upload_dir: Path) -> None:
    """Every FileData must name a regular file inside the studio's Gradio temp dir; every other path (a device, a
    folder, a missing file, /etc/passwd, the database, a URL) gets the same answer, and nothing is read."""
    for _loc, item, depth in _walk(value):
        if depth > MAX_DEPTH:
            raise Refusal(422, "invalid_json", f"The request body is nested deeper than {MAX_DEPTH} levels.")
        if _is_file_data(item) and not is_uploaded(item["path"], upload_dir):
            raise Refusal(403, "file_not_uploaded",
                          "A file must be uploaded to this studio first (POST /gradio_api/upload); "
                          "other paths are refused.")


def is_uploaded(path: Any, upload_dir: Path) -> bool:
    if not isinstance(path, str) or not path or "\x00" in path or "://" in path:
        return False
    try:
        real = Path(os.path.realpath(path))  # symlinks followed: a link out of the dir is refused
        return real.is_relative_to(upload_dir) and real != upload_dir and real.is_file()
    except (OSError, ValueError):
        return False
