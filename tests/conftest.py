"""Fixtures: a full studio context in a temp directory with the tiny model and a test registry.

Never the user's data directory, never the network (hub tests use the fake hub on 127.0.0.1).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

from studio.config import Settings  # noqa: E402
from studio.context import AppContext, build_context  # noqa: E402
from studio.registry import Registry, parse_registry  # noqa: E402
from studio.runtime.tiny import build_tiny_model  # noqa: E402

# TestClient's default host "testserver" is not a loopback name, which a studio bound to 127.0.0.1 refuses
# (DNS rebinding): reach it as a browser on this machine would.
LOCAL = "http://127.0.0.1"

TINY = {
    "id": "studio-tiny", "display_name": "Studio Tiny", "backend": "transformers", "source": {"builtin": "studio-tiny"},
    "parameters": 740798, "sample_rate": 32000, "channels": 1, "frame_rate": 50, "max_duration_s": 30,
    "memory_gb": 0.1, "generation": {"top_k": 250, "top_p": 0.0, "temperature": 1.0, "guidance_scale": 3.0},
}

# Evaluation models of the test registry: studio-tiny-clap (built here), and 'tiny-clap-hub', its copy on the fake
# hub, which is the default evaluation model: not downloaded, so a test studio has no evaluation model unless asked
TINY_CLAP = {"id": "studio-tiny-clap", "display_name": "Studio Tiny CLAP", "kind": "clap",
             "source": {"builtin": "studio-tiny-clap"}, "parameters": 11845, "sample_rate": 48000, "memory_gb": 0.1}


def registry_dict(**extra_models) -> dict:
    """The test registry: studio-tiny, a hub copy of it ('tiny-hub', served by the fake hub), a model too big
    for any machine ('huge'), and any extra entries given as id=overrides of TINY."""
    models = [dict(TINY),
              {**TINY, "id": "tiny-hub", "display_name": "Tiny Hub", "source": {"hub": "test-org/tiny-musicgen"},
               "max_duration_s": 8, "download_gb": 0.01},
              {**TINY, "id": "huge", "display_name": "Huge Model", "source": {"hub": "test-org/huge"},
               "memory_gb": 100000}]
    for model_id, overrides in extra_models.items():
        models.append({**TINY, "id": model_id, "display_name": model_id, **overrides})
    return {"default_model": "studio-tiny", "models": models, "default_evaluation_model": "tiny-clap-hub",
            "evaluation_models": [dict(TINY_CLAP), {**TINY_CLAP, "id": "tiny-clap-hub", "display_name": "Tiny CLAP Hub",
                                                    "source": {"hub": "test-org/tiny-clap"}, "download_gb": 0.001}]}


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """studio-tiny built once per test session; each context gets a copy."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-build") / "studio-tiny")


def _context_factory(root: Path, tiny_folder: Path):
    """make(registry=None, **settings overrides) -> a context in its own data dir under root; and what it made."""
    made: list[AppContext] = []

    def make(registry: Registry | dict | None = None, **overrides) -> AppContext:
        data_dir = overrides.pop("data_dir", root / f"data{len(made)}")
        (data_dir / "models").mkdir(parents=True, exist_ok=True)
        if not (data_dir / "models" / "studio-tiny").exists():
            shutil.copytree(tiny_folder, data_dir / "models" / "studio-tiny")
        overrides.setdefault("hf_cache_dir", root / "hf-cache")
        settings = Settings(data_dir=data_dir, load_at_start=False, device="cpu", **overrides)
        reg = registry if isinstance(registry, Registry) else parse_registry(registry or registry_dict())
        ctx = build_context(settings, reg)
        made.append(ctx)
        return ctx

    return make, made


@pytest.fixture
def make_ctx(tmp_path, tiny_folder):
    """Factory: a context in its own temp data dir. Keyword args override Settings fields."""
    make, made = _context_factory(tmp_path, tiny_folder)
    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture(scope="module")
def make_module_ctx(tmp_path_factory, tiny_folder):
    """make_ctx for a whole module: contexts shared by tests that change nothing (tables of refusals, which
    assert that nothing changed) or that each make their own records."""
    make, made = _context_factory(tmp_path_factory.mktemp("module"), tiny_folder)
    yield make
    for ctx in made:
        ctx.close()


def rest_client(ctx: AppContext):
    """A TestClient on the REST API alone (no page: building it costs a second that REST tests do not need)."""
    from fastapi.testclient import TestClient

    from studio.server import build_api

    return TestClient(build_api(ctx, load_model=False), base_url=LOCAL)


@pytest.fixture
def ctx(make_ctx) -> AppContext:
    """A context with studio-tiny loaded."""
    context = make_ctx()
    final = context.manager.switch_and_wait("studio-tiny")
    assert final.stage == "ready", final.message
    return context


@pytest.fixture
def client(ctx):
    """The REST API of a studio with studio-tiny loaded."""
    with rest_client(ctx) as c:
        yield c


@pytest.fixture(scope="module")
def shared_client(make_module_ctx):
    """The REST API of one studio (studio-tiny loaded) shared by a module's tables of refusals."""
    context = make_module_ctx()
    assert context.manager.switch_and_wait("studio-tiny").stage == "ready"
    with rest_client(context) as c:
        c.ctx = context
        yield c


@pytest.fixture
def browser():
    """Debian's Chromium through Playwright (browser tests skip themselves when either is missing)."""
    from playwright.sync_api import sync_playwright

    from tests.live import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
