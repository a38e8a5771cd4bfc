"""build_app(ctx): the FastAPI app with the REST API and the Gradio page mounted on it."""
from __future__ import annotations

from contextlib import asynccontextmanager

import gradio as gr
from fastapi import FastAPI

from studio.api.adapters import build_adapters_router
from studio.api.auth import install_basic_auth
from studio.api.errors import install_error_handlers
from studio.api.gen_config import build_gen_config_router
from studio.api.routes import build_router
from studio.context import AppContext
from studio.ui.app import build_ui
from studio.ui.common import CSS, HEAD


def build_app(ctx: AppContext, load_model: bool | None = None) -> FastAPI:
    """load_model: start the background model load when the server starts (default: settings.load_at_start)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if load_model if load_model is not None else ctx.settings.load_at_start:
            ctx.start_background_load()  # after start-up: the page answers at once, the model arrives later
        yield

    app = FastAPI(title="Text2Song Studio", version="0.1.0", lifespan=lifespan,
                  description="Text-to-music with MusicGen: models, generation and jobs. "
                              "Errors are `{detail: {code, message, ...}}`.")
    install_error_handlers(app)
    if ctx.settings.auth:
        install_basic_auth(app, *ctx.settings.auth)
    app.include_router(build_adapters_router(ctx))
    app.include_router(build_gen_config_router(ctx))
    app.include_router(build_router(ctx))  # last: it ends with the catch-all for unknown /api routes
    return gr.mount_gradio_app(app, build_ui(ctx), path="", auth=ctx.settings.auth,
                               allowed_paths=[str(ctx.settings.outputs_dir.resolve())], css=CSS, head=HEAD,
                               footer_links=["api", "gradio", "settings"])
