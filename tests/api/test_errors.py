"""An unexpected error (a bug) answers in the studio's JSON shape, never Starlette's plain-text page, and tells the
caller nothing of the server's insides."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from studio.api.errors import install_error_handlers


def test_a_bug_answers_500_in_the_studio_shape_without_its_details():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret inner detail")

    r = TestClient(app, raise_server_exceptions=False).get("/api/boom")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    assert r.json()["detail"]["code"] == "internal_error"
    assert "secret inner detail" not in r.text
