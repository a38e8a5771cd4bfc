"""Running as a Hugging Face Space: persistent storage, ZeroGPU, and the hint for the first admin login.

Light on purpose (no torch, gradio or database): config.py and app.py use it before anything heavy is imported,
and the login page (accounts) shows the same hint as the start-up.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

# Where a Space's persistent storage is mounted when it was bought. The variable is for tests (a temp folder stands
# for it): nothing else should write to the real /data.
STORAGE_ENV = "STUDIO_SPACE_STORAGE"
SPACE_STORAGE = Path("/data")
DATA_SUBDIR = "text2song"  # the data directory inside it (the rest of /data stays the owner's)
HF_SUBDIR = ".huggingface"  # HF_HOME inside it: downloaded models survive a restart

NO_PERSISTENT_STORAGE = ("no persistent storage: everything (models downloaded, adapters, history) is lost when the "
                         "Space restarts")
ADMIN_SECRET = "STUDIO_AUTH"


def space_storage(environ: Mapping[str, str]) -> Path | None:
    """The Space's persistent storage when it is mounted and this user can write there, else None."""
    root = Path(environ.get(STORAGE_ENV) or SPACE_STORAGE)
    return root if root.is_dir() and os.access(root, os.W_OK | os.X_OK) else None


def zero_gpu(environ: Mapping[str, str]) -> bool:
    """A ZeroGPU Space: a big GPU lent for each call of a spaces.GPU function (the `spaces` package's own test)."""
    return environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def space_defaults(environ: Mapping[str, str], values: dict) -> dict:
    """A Space's settings where the person gave none: the data directory on persistent storage when there is some.
    `values` are the raw settings read from the command line and STUDIO_* (an explicit --data-dir wins)."""
    storage = space_storage(environ)
    values = {**values, "space_id": environ["SPACE_ID"], "zero_gpu": zero_gpu(environ), "space_storage": storage}
    if storage is not None and "data_dir" not in values:
        values["data_dir"] = storage / DATA_SUBDIR
    return values


def prepare_environment(settings, environ: dict) -> None:
    """Before huggingface_hub is imported (it reads HF_HOME then): the Hugging Face cache goes to persistent
    storage, unless --hf-cache-dir or the Space's own HF_HOME says where."""
    if settings.space_storage is not None and settings.hf_cache_dir is None:
        environ.setdefault("HF_HOME", str(settings.space_storage / HF_SUBDIR))


def storage_warning(settings) -> str | None:
    """What is lost at a restart, for a Space whose data directory is not on persistent storage; None elsewhere."""
    if not settings.on_space:
        return None
    storage = settings.space_storage
    if storage is None:
        return (f"Warning: {NO_PERSISTENT_STORAGE}. Add persistent storage in the Space's settings (it is mounted at "
                f"{SPACE_STORAGE}) and restart: the studio then keeps its data there.")
    if settings.data_dir.resolve().is_relative_to(storage.resolve()):
        return None
    return (f"Warning: the data directory {settings.data_dir} is not on the persistent storage {storage}, so there "
            f"is {NO_PERSISTENT_STORAGE}. Leave --data-dir (STUDIO_DATA_DIR) unset: it then goes to "
            f"{storage / DATA_SUBDIR}.")


def admin_login_hint(space_id: str | None = None) -> str:
    """How the owner of a Space gives it its first admin (start-up output and the login page)."""
    where = f"https://huggingface.co/spaces/{space_id}/settings" if space_id else "the Space's settings"
    return (f"No admin account yet: in {where}, under Variables and secrets, add the secret "
            f"{ADMIN_SECRET}=USER:PASS and restart the Space. That user is its first admin; until then nothing "
            "can be opened or changed here.")
