"""One login (studio/api/auth.py): every route asks for it, the form's cookie and HTTP Basic both open every route,
failed logins are throttled."""
from __future__ import annotations

import base64
import re

import pytest
from starlette.routing import Mount

USER, PASSWORD = "alice", "s3cret:with colon"
BROWSER = {"accept": "text/html,application/xhtml+xml"}


def _basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def studio(module_studio):
    return module_studio(auth=(USER, PASSWORD))


def walk_routes(routes, prefix=""):
    """(path, method) of every route of the app, Gradio's mounted routes included."""
    for route in routes:
        if isinstance(route, Mount):
            if route.routes:
                yield from walk_routes(route.routes, prefix + route.path)
            else:  # a static-files mount: ask for a file in it
                yield prefix + route.path + "/swagger-ui.css", "GET"
        elif hasattr(route, "original_router"):  # FastAPI's included routers
            yield from walk_routes(route.original_router.routes, prefix + route.include_context.prefix)
        else:
            for method in sorted(getattr(route, "methods", None) or ["GET"]):
                yield prefix + route.path, method


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def all_routes(client) -> list[tuple[str, str]]:
    found = sorted({(_concrete(p), m) for p, m in walk_routes(client.app.routes)})
    assert len(found) > 80 and ("/gradio_api/queue/join", "POST") in found and ("/api/jobs", "GET") in found
    return found


def test_every_route_needs_a_login(studio):
    """Walk every route of the app (REST, docs, Gradio's): without credentials each one is refused, except the
    login form itself (and logging out)."""
    _ctx, client = studio
    open_routes = []
    for path, method in all_routes(client):
        if path in ("/login", "/login/", "/logout"):  # the form, and ending a session (it only redirects to it)
            assert client.request(method, path, follow_redirects=False).status_code in (200, 303, 401, 405)
            continue
        r = client.request(method, path, follow_redirects=False)
        if r.status_code != 401:
            open_routes.append((method, path, r.status_code))
        elif method != "HEAD":  # a HEAD answer has no body
            assert r.json()["detail"]["code"] == "unauthorized" and "WWW-Authenticate" in r.headers, path
    assert open_routes == []


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc", "/config", "/gradio_api/info"])
def test_a_browser_without_login_gets_the_form_and_no_api_description(studio, path):
    _ctx, client = studio
    r = client.get(path, headers=BROWSER, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=" + path.rstrip("/")), r.headers
    page = client.get(r.headers["location"], headers=BROWSER)
    assert page.status_code == 200 and 'name="password"' in page.text
    for leak in ("named_endpoints", "generate", "register_adapter", "gradio_api_info", "/api/"):
        assert leak not in page.text
    assert not re.search(r"(src|href)=\"?https?://", page.text)  # works offline


@pytest.mark.parametrize("path", ["/", "/api/models", "/docs", "/redoc", "/openapi.json", "/gradio_api/info",
                                  "/config", "/static-offline-docs/swagger-ui.css"])
def test_basic_credentials_open_every_kind_of_route(studio, path):
    _ctx, client = studio
    assert client.get(path, headers=_basic(USER, PASSWORD)).status_code == 200


def test_one_form_login_opens_page_rest_and_docs(studio):
    """Bug 6: after the form, /docs and the REST API do not ask again."""
    from fastapi.testclient import TestClient

    from tests.conftest import LOCAL

    _ctx, shared = studio
    with TestClient(shared.app, base_url=LOCAL) as browser:
        r = browser.post("/login?next=/docs", data={"username": USER, "password": PASSWORD}, headers=BROWSER,
                         follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/docs"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
        for path in ("/", "/docs", "/openapi.json", "/api/models", "/api/jobs", "/gradio_api/info", "/config"):
            assert browser.get(path, headers=BROWSER).status_code == 200, path
        page = browser.get("/", headers=BROWSER).text
        assert "Text2Song Studio" in page
        browser.get("/logout", follow_redirects=False)
        assert browser.get("/api/models").status_code == 401


def test_changes_are_recorded_under_the_logged_in_user(studio):
    ctx, client = studio
    r = client.put("/api/models/studio-tiny/config", json={"top_k": 33}, headers=_basic(USER, PASSWORD))
    assert r.status_code == 200, r.text
    assert ctx.gen_config.history("studio-tiny").changes[0].changed_by == USER


LOGIN_TARGETS = [("/docs", "/docs"), ("//evil.example/x", "/"), ("https://evil.example", "/"),
                 ("/\\evil.example", "/")]


@pytest.mark.parametrize("target,expected", LOGIN_TARGETS)
def test_login_only_sends_back_to_this_studio(studio, target, expected):
    _ctx, client = studio
    r = client.post("/login", params={"next": target}, data={"username": USER, "password": PASSWORD},
                    headers=BROWSER, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == expected


def test_script_login_like_gradio_client(studio):
    _ctx, client = studio
    r = client.post("/login", data={"username": USER, "password": "nope"})
    assert r.status_code == 401 and r.json()["detail"]["code"] == "invalid_credentials"
    r = client.post("/login", data={"username": USER, "password": PASSWORD})
    assert r.status_code == 200 and r.json() == {"success": True} and "studio-session" in r.cookies


# ---- throttling ----------------------------------------------------------------------------------------------------
def _form(client, password, user=USER):
    return client.post("/login", data={"username": user, "password": password})


def _basic_get(client, password, user=USER):
    return client.get("/api/models", headers=_basic(user, password))


@pytest.mark.parametrize("attempt", [_form, _basic_get], ids=["form", "basic"])
def test_failed_logins_are_throttled_per_client(module_studio, attempt):
    _ctx, client = module_studio(auth=(USER, PASSWORD))
    statuses = [attempt(client, f"guess{i}").status_code for i in range(4)]
    statuses.append(attempt(client, PASSWORD, user="bob").status_code)  # a wrong user counts too
    assert statuses == [401] * 5
    for password in ("guess6", PASSWORD):  # past the limit even the right password waits
        r = attempt(client, password)
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.json()["detail"]["code"] == "too_many_attempts"
    # the other way in shares the same count
    other = _basic_get if attempt is _form else _form
    assert other(client, PASSWORD).status_code == 429


def test_a_studio_without_auth_has_no_login(module_studio):
    _ctx, client = module_studio()
    assert client.get("/api/models").status_code == 200
    assert client.get("/", headers=BROWSER, follow_redirects=False).status_code == 200
