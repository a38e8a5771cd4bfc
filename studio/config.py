"""Settings: every option of the studio, declared once.

Each option is a field of `Settings` (pydantic-settings) carrying an `Option`: its `--flag`, its STUDIO_* environment
variable, how it reads on the command line and the default a person is shown. The command line parser, `--help`
and the test that the README's options table is complete (tests/test_config.py) are all generated from these fields.
Order: the command line wins over the environment, which wins over the defaults.
"""
from __future__ import annotations

import argparse
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "STUDIO_"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
PROJECT_ROOT = Path(__file__).resolve().parent.parent  # defaults do not depend on where app.py is started from


@dataclass(frozen=True)
class Option:
    """How a Settings field is set by a person: its flag, its environment variable and how its default reads.

    kind: "value" (--flag VALUE), "switch" (--flag turns it on), "negate" (--flag turns it off) or "append"
    (repeatable --flag VALUE; the environment variable lists values separated by os.pathsep)."""

    flag: str
    help: str
    shown_default: str | None = None  # None: the field's default as written
    kind: Literal["value", "switch", "negate", "append"] = "value"
    metavar: str | None = None
    env_name: str | None = None  # None: STUDIO_ + the flag's name

    @property
    def env(self) -> str:
        return ENV_PREFIX + (self.env_name or self.flag.removeprefix("--").replace("-", "_").upper())


def _auth_pair(value: str, origin: str) -> tuple[str, str]:
    user, sep, password = value.strip().partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{origin} must look like USER:PASS" if origin else "must look like USER:PASS")
    return user, password


class Settings(BaseSettings):
    """The studio's options (fields with an Option) and two values taken from the environment as is."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    host: Annotated[str, Option(
        "--host", "interface to bind; `0.0.0.0` serves the network (use `--auth`)")] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535), Option("--port", "port to serve on", metavar="PORT")] = 7860
    data_dir: Annotated[Path, Option(
        "--data-dir", "database (`studio.db`), built models, generated audio, temporary files (`tmp/`)",
        "`adapters_db` next to `app.py`", metavar="FOLDER")] = PROJECT_ROOT / "adapters_db"
    registry_path: Annotated[Path, Option(
        "--registry", "the model registry", "`registry.yaml` next to `app.py`",
        metavar="FILE")] = PROJECT_ROOT / "registry.yaml"
    model: Annotated[str | None, Option(
        "--model", "model to load at start",
        "the registry's default if downloaded, else `studio-tiny`; on a Space, one for its hardware",
        metavar="ID")] = None
    eval_model: Annotated[str | None, Option(
        "--eval-model", "evaluation model for automatic scores (`GET /api/evaluation/models` lists them; "
        "`studio-tiny-clap` works offline, its scores mean nothing)",
        "the registry's default (`clap-music`) once downloaded, else none", metavar="ID")] = None
    share: Annotated[bool, Option(
        "--share", "a public Gradio link (the home folder is then no import root)", "off", kind="switch")] = False
    auth: Annotated[tuple[str, str] | None, Field(repr=False), Option(
        "--auth", "protects the page **and** the REST API; prefer `STUDIO_AUTH` or `--auth-file`: a command line "
        "is visible to every user of the machine", "off", metavar="USER:PASS")] = None
    auth_file: Annotated[Path | None, Option(
        "--auth-file", "a file holding `USER:PASS` (readable by you alone: `chmod 600`)", "off",
        metavar="PATH")] = None
    database_url: Annotated[str | None, Field(repr=False), Option(
        "--database-url", "the database: `postgresql://USER:PASS@HOST:PORT/DB` (psycopg 3) for a team's server, or "
        "`sqlite:///PATH`", "`studio.db` in the data directory", metavar="URL")] = None
    session_hours: Annotated[float, Field(gt=0, le=24 * 365), Option(
        "--session-hours", "how long a login lasts before the person must log in again", metavar="HOURS")] = 168
    device: Annotated[str, Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$"), Option(
        "--device", "`cpu`, `cuda`, `cuda:1`")] = "auto"
    dtype: Annotated[Literal["auto", "float32", "float16", "bfloat16"], Option(
        "--dtype", "float16 on CUDA, float32 on CPU; or `float32`, `float16`, `bfloat16`")] = "auto"
    hf_cache_dir: Annotated[Path | None, Option(
        "--hf-cache-dir", "where hub models are cached", "HF default", metavar="FOLDER")] = None
    import_roots: Annotated[tuple[Path, ...], Option(
        "--import-root", "folders adapters, datasets and models may be added from (repeatable; `STUDIO_IMPORT_ROOTS` "
        "separates "
        "them with `:`); a studio on 127.0.0.1 without `--share` may also read your home", "`<data-dir>/imports`",
        kind="append", metavar="FOLDER", env_name="IMPORT_ROOTS")] = ()
    load_at_start: Annotated[bool, Option(
        "--no-load-at-start", "start with no model", "off", kind="negate")] = True
    max_queue: Annotated[int, Field(ge=1, le=10_000), Option(
        "--max-queue", "generation jobs that may wait at once; more are refused with 429 and `Retry-After`",
        metavar="N")] = 64
    stream_every_s: Annotated[float, Field(ge=0.2, le=30), Option(
        "--stream-every", "seconds of new audio per streamed chunk while a job decodes", metavar="SECONDS")] = 1.0
    fast_path: Annotated[bool, Option(
        "--no-fast-path", "turn off the GPU fast path (CUDA graphs over a static cache, half precision); it is on "
        "for CUDA devices only", "on with CUDA", kind="negate")] = True
    workers: Annotated[str, Option(
        "--workers", "where generations decode: `local` (this process) or GPU workers on Ray Serve: `ray:local` (a "
        "private Ray started with the studio), `ray:auto` (the cluster `ray start` runs on this machine), "
        "`ray:HOST:PORT` (a cluster's head; the studio joins it); `ray` is `ray:auto`. Needs "
        "`pip install -r requirements-ray.txt`", metavar="WHERE")] = "local"
    ray_replicas: Annotated[int, Field(ge=1, le=256), Option(
        "--ray-replicas", "GPU workers (Ray Serve replicas) to run with `--workers ray...`", metavar="N")] = 1
    ray_gpus: Annotated[float | None, Field(ge=0, le=8), Option(
        "--ray-gpus", "GPUs per replica (0: CPU replicas)", "1 when the cluster has GPUs, else 0",
        metavar="N")] = None
    custom_models: Annotated[bool, Option(
        "--no-custom-models", "lock the model list: no models can be added (hub repo or folder) or removed from the "
        "page or `POST /api/models`; registry.yaml's and those added before stay", "off", kind="negate")] = True
    # Not options of the studio: read as they are from their own environment variables, or set by tests.
    hf_endpoint: str | None = None  # None: huggingface.co (or HF_ENDPOINT)
    space_id: str | None = None  # SPACE_ID: running as a Hugging Face Space (a public site: a login is required)
    space_storage: Path | None = None  # a Space's persistent storage (/data) when mounted and writable (space.py)
    zero_gpu: bool = False  # SPACES_ZERO_GPU: a ZeroGPU Space (GPU work runs under spaces.GPU)
    max_prompt_chars: int = Field(1000, gt=0)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Settings(...) takes its keywords only: the command line and STUDIO_* come in through parse_settings
        # (CommandLineSource), so that tests and benchmarks never pick up a developer's environment by accident.
        return (init_settings,)

    @field_validator("auth", mode="before")
    @classmethod
    def _auth(cls, value: Any) -> Any:
        return _auth_pair(value, "") if isinstance(value, str) else value

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: str) -> str:
        if re.fullmatch(r"local|ray|ray:(local|auto|[A-Za-z0-9.\-\[\]:]+:\d+)", value) is None:
            hint = (": Ray Client (ray://) is not supported; give the head's own port, ray:HOST:6379"
                    if value.startswith("ray://") else "")
            raise ValueError(f"use local, ray, ray:local, ray:auto or ray:HOST:PORT (a Ray head's address), not "
                             f"{value!r}{hint}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _auth_from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("auth_file"):
            return data
        if data.get("auth"):
            raise ValueError("give --auth or --auth-file, not both")
        return {**data, "auth": _read_auth_file(Path(data["auth_file"]))}

    # ---- derived values -------------------------------------------------------------------------------------
    @property
    def exposed(self) -> bool:
        """Reachable from other machines: a share link or a non-loopback interface."""
        return self.share or self.host not in LOOPBACK

    @property
    def on_space(self) -> bool:
        """Running as a Hugging Face Space: reachable by anyone, so nothing opens without a login."""
        return self.space_id is not None

    @property
    def login_required(self) -> bool:
        """Accounts are on from the start: --auth / --auth-file given, or a Space. (A studio whose database already
        holds accounts keeps asking for a login too: services/accounts.py decides that at start.)"""
        return self.auth is not None or self.on_space

    @property
    def allowed_import_roots(self) -> list[Path]:
        """Where registering an adapter from a server folder may read. A studio serving only this machine may
        also read the user's home; an exposed one (shared or on the network) never reads arbitrary server paths."""
        roots = list(self.import_roots) or [self.data_dir / "imports"]
        if not self.exposed:
            roots.append(Path.home())
        return [r.expanduser().resolve() for r in roots]

    @property
    def ray_address(self) -> str | None:
        """The Ray cluster --workers names (local, auto or HOST:PORT), or None for the in-process worker."""
        if self.workers == "local":
            return None
        return self.workers.partition(":")[2] or "auto"

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def database_path(self) -> Path:
        return (self.data_dir / "studio.db").resolve()

    @property
    def engine_url(self) -> str:
        """The database the studio uses: --database-url, else SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.database_path}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def tmp_dir(self) -> Path:
        """THE studio's temporary folder (uploads being received, archives being unpacked, Gradio's files): inside
        the data directory, so it is on the same disk as what it becomes and emptied at every start."""
        return self.data_dir / "tmp"


def _read_auth_file(path: Path) -> tuple[str, str]:
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --auth-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"--auth-file {path} can be read by other users of this machine: run chmod 600 {path}")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ValueError(f"--auth-file {path} must hold one line USER:PASS")
    return _auth_pair(lines[0], f"--auth-file {path}")


def options() -> dict[str, Option]:
    """Settings fields that a person sets, by field name, in declaration order."""
    return {name: meta for name, field in Settings.model_fields.items()
            for meta in field.metadata if isinstance(meta, Option)}


def shown_default(name: str) -> str:
    """An option's default as the README and --help show it."""
    option, field = options()[name], Settings.model_fields[name]
    return option.shown_default if option.shown_default is not None else f"`{field.default}`"


class CommandLineSource(PydanticBaseSettingsSource):
    """The options from a command line and STUDIO_* variables (the command line wins), as raw Settings input."""

    def __init__(self, settings_cls: type[Settings], argv: Sequence[str] | None, environ: Mapping[str, str]):
        super().__init__(settings_cls)
        self.argv, self.environ = argv, environ
        self.parser = build_parser()

    def get_field_value(self, field, field_name):  # required by the base class; __call__ reads everything at once
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, option in options().items():
            raw = self.environ.get(option.env)
            if raw is None or raw == "":
                continue
            if option.kind in ("switch", "negate"):
                try:
                    on = TypeAdapter(bool).validate_python(raw.strip())
                except ValidationError:
                    self.parser.error(f"{option.env}={raw!r}: expected 1, true, yes or on (or 0, false, no, off)")
                values[name] = on if option.kind == "switch" else not on
            elif option.kind == "append":
                values[name] = tuple(r for r in raw.split(os.pathsep) if r)
            else:
                values[name] = raw
        if "SPACE_ID" in self.environ and "host" not in values:
            values["host"] = "0.0.0.0"  # a Hugging Face Space must serve 0.0.0.0:7860 itself
        args = vars(self.parser.parse_args(self.argv))
        given = {k: v for k, v in args.items() if v is not None}
        if given.get("auth_file"):
            values.pop("auth", None)  # a file named on the command line replaces STUDIO_AUTH
        if given.get("auth"):
            values.pop("auth_file", None)
        values.update(given)
        if self.environ.get("SPACE_ID"):
            from studio.space import space_defaults

            values = space_defaults(self.environ, values)
        if values.get("hf_endpoint") is None and self.environ.get("HF_ENDPOINT"):
            values["hf_endpoint"] = self.environ["HF_ENDPOINT"]
        return values


def build_parser() -> argparse.ArgumentParser:
    """`python app.py --help`, generated from the Settings fields."""
    p = argparse.ArgumentParser(prog="app.py", description="Text2Song Studio: MusicGen text-to-music studio. "
                                "Every option can also be set by its STUDIO_* environment variable; the command line "
                                "wins.", allow_abbrev=False)  # the flags are exactly the documented ones
    for name, option in options().items():
        text = option.help.replace("`", "").replace("**", "")
        text = f"{text} (default: {shown_default(name).replace('`', '')}) [{option.env}]".replace("%", "%%")
        if option.kind == "switch":
            p.add_argument(option.flag, dest=name, action="store_const", const=True, help=text)
        elif option.kind == "negate":
            p.add_argument(option.flag, dest=name, action="store_const", const=False, help=text)
        elif option.kind == "append":
            p.add_argument(option.flag, dest=name, action="append", metavar=option.metavar, help=text)
        else:
            p.add_argument(option.flag, dest=name, metavar=option.metavar, help=text)
    return p


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from a command line and STUDIO_* environment variables; a bad value exits with a usage error."""
    source = CommandLineSource(Settings, argv, os.environ if environ is None else environ)
    raw = source()
    try:
        return Settings(**raw)
    except ValidationError as exc:
        source.parser.error("; ".join(_problem(err) for err in exc.errors()))


def _problem(err: dict) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    loc = [str(p) for p in err.get("loc", ()) if isinstance(p, str)]
    flags = options()
    if loc and loc[0] in flags:
        return f"{flags[loc[0]].flag} ({flags[loc[0]].env}): {msg}"
    return msg
