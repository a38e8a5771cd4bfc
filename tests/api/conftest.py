"""Module-scoped studios for the API case tables that need the whole app (the page's routes too): built once per
module, read-only for the cases that share them."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from studio.server import build_app
from tests.conftest import LOCAL


@pytest.fixture(scope="module")
def module_studio(make_module_ctx):
    """Factory: (context, TestClient on 127.0.0.1 on the whole app) in a fresh data dir; no model loaded unless
    asked. Keyword args override Settings fields."""
    clients = []

    def make(load: bool = False, **overrides):
        ctx = make_module_ctx(**overrides)
        if load:
            assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
        client = TestClient(build_app(ctx, load_model=False), base_url=LOCAL)
        client.__enter__()
        clients.append(client)
        return ctx, client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
