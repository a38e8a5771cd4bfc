"""build_app(ctx): the FastAPI app with the REST API and the Gradio page mounted on it, behind the request edge.
build_api(ctx): the same app without the page (the REST API, its docs and every guard), for scripts and tests."""
from __future__ import annotations

import os
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path

import gradio as gr
from fastapi import FastAPI

from studio.api.abtests import build_abtests_router
from studio.api.accounts import build_accounts_router
from studio.api.adapters import build_adapters_router
from studio.api.auth import AuthMiddleware, gradio_user
from studio.api.docs import install_docs
from studio.api.errors import install_error_handlers
from studio.api.audio_uploads import build_uploads_router
from studio.api.datasets import build_datasets_router
from studio.api.evaluation import build_evaluation_router
from studio.api.gen_config import build_gen_config_router
from studio.api.jobs import build_jobs_router
from studio.api.metrics import build_metrics_router
from studio.api.model_import import build_model_import_router
from studio.api.openapi import install_openapi
from studio.api.roles import GradioRoles
from studio.api.routes import build_router
from studio.api.training import build_training_router
from studio.api.security import install_request_guards
from studio.context import AppContext
from studio.services.adapters import MAX_UPLOAD_BYTES
from studio.space import admin_login_hint
from studio.ui.app import build_ui
from studio.ui.common import CSS, HEAD

GRADIO_TMP_MAX_AGE_S = 24 * 3600  # uploads and cached outputs older than a day are gone by the next start
# the REST routes that take a form upload
MULTIPART_ROUTES = {("POST", "/api/adapters"), ("POST", "/api/datasets"), ("POST", "/api/uploads"),
                    ("POST", "/api/models/import")}


def gradio_temp_dir(ctx: AppContext) -> Path:
    """The studio's own Gradio upload/cache folder (never the machine-wide /tmp/gradio other apps share)."""
    return (ctx.settings.data_dir / "tmp" / "gradio").resolve()


def _prune(folder: Path, max_age_s: float) -> None:
    """Remove what a previous run left behind (Gradio's own clean-up only knows this run's files)."""
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - max_age_s
    for entry in folder.iterdir():
        try:
            if entry.lstat().st_mtime < cutoff:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        except OSError:
            pass  # in use or already gone: the next start tries again


def build_api(ctx: AppContext, load_model: bool | None = None) -> FastAPI:
    """The REST API and its docs behind the login and the request guards. load_model: start the background model
    load when the server starts (default: settings.load_at_start)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if load_model if load_model is not None else ctx.settings.load_at_start:
            ctx.start_background_load()  # after start-up: the page answers at once, the model arrives later
        yield

    settings = ctx.settings
    # Gradio reads its folder from the environment only (when Blocks and its routes are built, and when it checks
    # a path): set before build_ui.
    tmp = gradio_temp_dir(ctx)
    _prune(tmp, GRADIO_TMP_MAX_AGE_S)
    os.environ["GRADIO_TEMP_DIR"] = str(tmp)

    app = FastAPI(title="Text2Song Studio", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Text-to-music with MusicGen: models, generation and jobs. "
                              "Errors are `{detail: {code, message, ...}}`.")
    install_docs(app)  # offline: assets from a wheel, not a CDN
    install_error_handlers(app)
    install_openapi(app, auth=ctx.accounts.required)
    app.include_router(build_accounts_router(ctx))
    app.include_router(build_metrics_router(ctx))  # before the adapters' /{adapter_id}: /compare stays its own
    app.include_router(build_adapters_router(ctx))
    app.include_router(build_gen_config_router(ctx))
    app.include_router(build_jobs_router(ctx))
    app.include_router(build_evaluation_router(ctx))
    app.include_router(build_abtests_router(ctx))
    app.include_router(build_datasets_router(ctx))
    app.include_router(build_uploads_router(ctx))
    app.include_router(build_training_router(ctx))
    app.include_router(build_model_import_router(ctx))  # before /api/models/{model_id}: /import stays its own
    app.include_router(build_router(ctx))  # last: it ends with the catch-all for unknown /api routes
    if ctx.accounts.required:  # one login and the roles for page, Gradio's routes, REST and docs (inside the edge)
        app.add_middleware(AuthMiddleware, accounts=ctx.accounts, trust_forwarded=settings.on_space,
                           first_admin=admin_login_hint(settings.space_id) if settings.on_space else None,
                           may_read_file=ctx.jobs.may_read_file)
    install_request_guards(app, bind_host=settings.host, share=settings.share, upload_dir=tmp,
                           multipart_routes=MULTIPART_ROUTES)
    return app


def build_app(ctx: AppContext, load_model: bool | None = None) -> FastAPI:
    """build_api with the Gradio page mounted at / (its routes behind the same login and guards)."""
    app = build_api(ctx, load_model)
    settings = ctx.settings
    blocks = build_ui(ctx)
    blocks.delete_cache = (3600, GRADIO_TMP_MAX_AGE_S)  # Gradio's hourly clean-up of this run's files
    app.state.gradio_roles = GradioRoles(blocks)  # what the auth middleware checks a page function's call against
    app = gr.mount_gradio_app(app, blocks, path="", auth_dependency=gradio_user if ctx.accounts.required else None,
                              allowed_paths=[str(settings.outputs_dir.resolve())], css=CSS, head=HEAD,
                              footer_links=["api", "gradio"],  # Gradio's "Settings" link read as the studio's tab
                              max_file_size=MAX_UPLOAD_BYTES)  # /gradio_api/upload: the REST upload's cap
    # Not `blocks.has_launched = True`, which would turn Gradio's own upload check back on: that check reads the
    # upload folder from the process environment at call time, so with two studios in one process (the tests) it
    # refuses the first one's uploads. security.py checks the same payloads against this app's own folder instead.
    return app
