"""Module-scoped studios for the API case tables: built once per module, read-only for the cases that share them."""
from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from studio.config import Settings
from studio.context import build_context
from studio.registry import parse_registry
from studio.server import build_app
from tests.conftest import LOCAL, registry_dict


@pytest.fixture(scope="module")
def module_studio(tmp_path_factory, tiny_folder):
    """Factory: (context, TestClient on 127.0.0.1) in a fresh data dir; no model loaded unless asked."""
    made = []

    def make(load: bool = False, **overrides):
        data_dir = tmp_path_factory.mktemp("studio")
        shutil.copytree(tiny_folder, data_dir / "models" / "studio-tiny")
        settings = Settings(data_dir=data_dir, load_at_start=False, device="cpu",
                            hf_cache_dir=data_dir / "hf-cache", **overrides)
        ctx = build_context(settings, parse_registry(registry_dict()))
        if load:
            assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
        client = TestClient(build_app(ctx, load_model=False), base_url=LOCAL)
        client.__enter__()
        made.append((ctx, client))
        return ctx, client

    yield make
    for ctx, client in made:
        client.__exit__(None, None, None)
        ctx.engine.dispose()
