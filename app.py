"""Text2Song Studio entry point: command line / STUDIO_* env -> Settings -> context -> app -> serve."""
from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str] | None = None) -> None:
    # Offline by default: no analytics or telemetry lookups; only an asked-for download leaves the machine.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin at every start

    from studio.config import parse_settings
    from studio.errors import StudioError

    settings = parse_settings(argv)
    # Gradio's files go to the studio's own temp folder (emptied at every start), never the /tmp/gradio that every
    # Gradio app of the machine shares. Set before gradio is imported: it reads the variable then.
    os.environ.setdefault("GRADIO_TEMP_DIR", str(settings.tmp_dir / "gradio"))
    if settings.on_space:
        _space_start(settings)
    try:
        from studio.datadir import open_storage

        storage = open_storage(settings)  # first, before torch and gradio load: a refusal comes in a second
        if settings.on_space and not settings.auth:  # (STUDIO_AUTH's admin is made as the context is built)
            from studio.services.accounts import has_accounts
            from studio.space import admin_login_hint

            if not has_accounts(storage.engine):  # a public site nobody can log in to yet: say how, at once
                print(admin_login_hint(settings.space_id), file=sys.stderr, flush=True)

        import uvicorn
        from transformers.utils import logging as hf_logging

        from studio.context import build_context
        from studio.server import build_app

        hf_logging.disable_progress_bar()
        ctx = build_context(settings, storage=storage)
        if settings.zero_gpu:
            _zero_gpu_start(ctx)
        app = build_app(ctx)
    except StudioError as exc:
        sys.exit(f"Text2Song Studio cannot start: {exc.message}")
    if settings.exposed and not ctx.accounts.required:  # no login at all (a Space always asks for one)
        print(exposure_warning(settings), file=sys.stderr, flush=True)
    if any(arg == "--auth" or arg.startswith("--auth=") for arg in (sys.argv[1:] if argv is None else argv)):
        print("Note: a password given with --auth is visible to every user of this machine (ps): prefer "
              "STUDIO_AUTH=USER:PASS or --auth-file PATH.", file=sys.stderr, flush=True)
    if settings.share:
        _share(app, settings)
    print(f"Text2Song Studio: http://{settings.host}:{settings.port}  (REST API docs: /docs)", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")


def _space_start(settings) -> None:
    """On a Hugging Face Space, before anything heavy is imported: `spaces` first (ZeroGPU requires it before CUDA
    starts), the Hugging Face cache on persistent storage, and a loud word when there is none."""
    from studio.space import prepare_environment, storage_warning

    warning = storage_warning(settings)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    prepare_environment(settings, os.environ)  # before huggingface_hub is imported (spaces imports it)
    import spaces  # noqa: F401, PLC0415


def _zero_gpu_start(ctx) -> None:
    """ZeroGPU takes the model's weights to each GPU call from what was loaded when the app started: load the
    start-up model before serving (elsewhere it loads in the background), then tell ZeroGPU the app is ready."""
    from studio.runtime.zerogpu import announce_ready

    if ctx.settings.load_at_start:
        ctx.models.load_initial()
    announce_ready()


def exposure_warning(settings) -> str:
    """The loud notice for a studio other machines can reach without a password."""
    how = "a public --share link" if settings.share else f"--host {settings.host}"
    bar = "!" * 78
    return "\n".join([
        bar,
        f"!! WARNING: this studio is reachable from other machines ({how}) and has NO PASSWORD.",
        "!! Anyone who reaches it can generate, change settings and register or delete adapters.",
        "!! Protect it: set STUDIO_AUTH=USER:PASS, or --auth-file PATH (a file holding USER:PASS, chmod 600).",
        "!! Or serve this machine only: --host 127.0.0.1 without --share.",
        bar,
    ])


def _share(app, settings) -> None:
    """A public Gradio link to the local server (needs internet; the local server is unchanged)."""
    try:
        from gradio import networking

        url = networking.setup_tunnel(settings.host, settings.port, share_token=os.urandom(16).hex(),
                                      share_server_address=None, share_server_tls_certificate=None)
        print(f"Public share link: {url}", flush=True)
    except Exception as exc:  # noqa: BLE001 - sharing is optional; say why it did not work
        print(f"Could not create a share link: {exc}", flush=True)


if __name__ == "__main__":
    main()
