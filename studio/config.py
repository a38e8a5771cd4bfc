"""Settings: every knob of the studio, from the command line or STUDIO_* environment variables."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ENV_PREFIX = "STUDIO_"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # defaults do not depend on where app.py is started from


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 7860
    data_dir: Path = Path("adapters_db")
    registry_path: Path = Path("registry.yaml")
    model: str | None = None  # model to load at start; None: registry default if local, else studio-tiny
    share: bool = False
    auth: tuple[str, str] | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (float16 on CUDA, float32 on CPU) | float32 | float16 | bfloat16
    hf_cache_dir: Path | None = None  # None: the normal Hugging Face cache
    hf_endpoint: str | None = None  # None: huggingface.co (or HF_ENDPOINT)
    load_at_start: bool = True
    max_prompt_chars: int = 1000
    import_roots: tuple[Path, ...] = ()  # folders adapters may be registered from; () -> <data-dir>/imports

    @property
    def allowed_import_roots(self) -> list[Path]:
        """Where registering an adapter from a server folder may read. A studio serving only this machine may
        also read the user's home; a shared one never reads arbitrary server paths."""
        roots = list(self.import_roots) or [self.data_dir / "imports"]
        if self.host in LOOPBACK:
            roots.append(Path.home())
        return [r.expanduser().resolve() for r in roots]

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'studio.db').resolve()}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"


def _parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise argparse.ArgumentTypeError("--auth must look like USER:PASS")
    return user, password


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def parse_settings(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Command line wins over STUDIO_* environment variables, which win over defaults."""
    env = os.environ if environ is None else environ

    def env_default(name: str, default=None):
        return env.get(ENV_PREFIX + name, default)

    p = argparse.ArgumentParser(prog="app.py", description="Text2Song Studio: MusicGen text-to-music studio")
    on_space = "SPACE_ID" in env  # a Hugging Face Space must serve 0.0.0.0:7860 itself
    p.add_argument("--host", default=env_default("HOST", "0.0.0.0" if on_space else "127.0.0.1"),
                   help="interface to bind [STUDIO_HOST]")
    p.add_argument("--port", type=int, default=int(env_default("PORT", "7860")), help="port [STUDIO_PORT]")
    p.add_argument("--data-dir", default=env_default("DATA_DIR", str(PROJECT_ROOT / "adapters_db")),
                   help="database, models, outputs [STUDIO_DATA_DIR]")
    p.add_argument("--registry", default=env_default("REGISTRY", str(PROJECT_ROOT / "registry.yaml")),
                   help="model registry file [STUDIO_REGISTRY]")
    p.add_argument("--model", default=env_default("MODEL"), help="model id to load at start [STUDIO_MODEL]")
    p.add_argument("--share", action="store_true", default=_truthy(env_default("SHARE")),
                   help="create a public Gradio share link [STUDIO_SHARE]")
    p.add_argument("--auth", default=env_default("AUTH"),
                   help="USER:PASS required for the page and the REST API [STUDIO_AUTH]")
    p.add_argument("--device", default=env_default("DEVICE", "auto"), help="auto, cpu, cuda or cuda:N [STUDIO_DEVICE]")
    p.add_argument("--dtype", default=env_default("DTYPE", "auto"),
                   choices=["auto", "float32", "float16", "bfloat16"], help="weights dtype [STUDIO_DTYPE]")
    p.add_argument("--hf-cache-dir", default=env_default("HF_CACHE_DIR"),
                   help="Hugging Face cache (default: the normal HF cache) [STUDIO_HF_CACHE_DIR]")
    p.add_argument("--import-root", action="append", dest="import_roots",
                   default=[r for r in env_default("IMPORT_ROOTS", "").split(os.pathsep) if r],
                   help="a folder adapters may be registered from (repeatable; default <data-dir>/imports, plus "
                        "your home when serving 127.0.0.1) [STUDIO_IMPORT_ROOTS, separated by ':']")
    p.add_argument("--no-load-at-start", dest="load_at_start", action="store_false",
                   default=not _truthy(env_default("NO_LOAD_AT_START")),
                   help="start with no model loaded [STUDIO_NO_LOAD_AT_START]")
    args = p.parse_args(argv)
    try:
        auth = _parse_auth(args.auth)
    except argparse.ArgumentTypeError as exc:
        p.error(str(exc))
    return Settings(
        host=args.host,
        port=args.port,
        data_dir=Path(args.data_dir),
        registry_path=Path(args.registry),
        model=args.model or None,
        share=args.share,
        auth=auth,
        device=args.device,
        dtype=args.dtype,
        hf_cache_dir=Path(args.hf_cache_dir) if args.hf_cache_dir else None,
        hf_endpoint=env.get("HF_ENDPOINT") or None,
        load_at_start=args.load_at_start,
        import_roots=tuple(Path(r) for r in args.import_roots),
    )
