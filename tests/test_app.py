"""The entry point: fast start, background load of the right model, clear refusals to start (options: test_config)."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.live import free_port

ROOT = Path(__file__).resolve().parents[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read()


def test_app_answers_before_loading_and_then_loads_the_tiny_model_offline(tmp_path):
    """A newcomer on an offline machine: the default (musicgen-small) is not cached, so studio-tiny loads."""
    port = free_port()
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf")}  # an empty HF cache: nothing downloaded yet
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--data-dir", str(tmp_path / "data")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        first = None
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/api/models/current")
                first = json.loads(body)
                break
            except OSError:
                time.sleep(0.2)
        assert first is not None, "the server never answered"
        # The server answers before any model is loaded (no loading before serving) ...
        while time.monotonic() < deadline:
            cur = json.loads(_get(f"http://127.0.0.1:{port}/api/models/current")[1])
            if cur["model"] and cur["state"] == "idle":
                break
            time.sleep(0.2)
        # ... and then loads studio-tiny, saying why.
        assert cur["model"]["id"] == "studio-tiny"
        assert "MusicGen Small" in cur["note"] and "not downloaded" in cur["note"]
        assert _get(f"http://127.0.0.1:{port}/")[0] == 200
        assert (tmp_path / "data" / "studio.db").exists()
        assert (tmp_path / "data" / "models" / "studio-tiny" / "model.safetensors").exists()
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    # Building and loading MusicGen says nothing about its token layout (bug: three pad/bos/decoder-start
    # "within the vocabulary" warnings at every start), and a studio private to this machine gives no exposure warning.
    assert "within the vocabulary" not in output, output
    assert "NO PASSWORD" not in output


# ---- refusing to start: one line saying what is wrong and how to fix it -----------------------------------------
def _good_database(data_dir: Path) -> Path:
    from studio.db.engine import make_engine

    data_dir.mkdir(parents=True, exist_ok=True)
    make_engine(f"sqlite:///{data_dir / 'studio.db'}").dispose()
    return data_dir / "studio.db"


def _garbage(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "studio.db").write_bytes(os.urandom(8192))


def _truncated(data_dir: Path) -> None:
    db = _good_database(data_dir)
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)


def _newer_revision(data_dir: Path) -> None:
    import sqlite3

    with sqlite3.connect(_good_database(data_dir)) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")


def _data_dir_is_a_file(data_dir: Path) -> None:
    data_dir.write_text("not a folder")


def _registry(content: bytes | int):
    def prepare(data_dir: Path) -> list[str]:
        path = data_dir.parent / "registry.yaml"
        if isinstance(content, int):
            with open(path, "wb") as f:  # sparse: a huge file that uses no disk
                f.truncate(content)
        else:
            path.write_bytes(content)
        return ["--registry", str(path)]
    return prepare


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


REFUSALS = [
    ("garbage database", _garbage, "is not a usable studio database (file is not a database): move studio.db"),
    ("truncated database", _truncated, "(database disk image is malformed): move studio.db"),
    ("database from a newer studio", _newer_revision,
     "was written by a newer version of Text2Song Studio (Can't locate revision identified by "
     "'0099_from_the_future'): update the studio, or start it with another --data-dir."),
    ("data dir is a file", _data_dir_is_a_file, "is a file, not a folder: start with another --data-dir."),
    ("registry not UTF-8", _registry(b"default_model: caf\xe9\n"), "is not UTF-8 text (byte 18): save it as UTF-8"),
    ("registry of 200 MB", _registry(200_000_000), "is 200 MB, too big for a model registry"),
    ("registry not YAML", _registry(b"models: [unclosed"), "is not valid YAML at line 1, column 18"),
    ("unknown --model", lambda d: ["--model", "nope"], "Unknown model 'nope'. Known models: musicgen-small"),
    ("unknown --eval-model", lambda d: ["--eval-model", "nope"],
     "Unknown evaluation model 'nope'. Known evaluation models: clap-music, studio-tiny-clap."),
    ("absent GPU index", lambda d: ["--device", "cuda:99"], "--device cuda:99: "),
]
if not _has_cuda():
    REFUSALS.append(("no GPU at all", lambda d: ["--device", "cuda"], "--device cuda: no CUDA GPU is usable here"))


def _start(argv: list[str], monkeypatch) -> str:
    """main() in this process up to the point of serving; returns what it exits with."""
    import app

    monkeypatch.setenv("GRADIO_TEMP_DIR", os.environ.get("GRADIO_TEMP_DIR", "/tmp/gradio"))  # main() sets it
    with pytest.raises(SystemExit) as info:
        app.main(argv)
    return str(info.value.code)


@pytest.mark.parametrize("name,prepare,expected", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_the_studio_refuses_to_start_with_one_line_saying_why(tmp_path, monkeypatch, capsys, name, prepare,
                                                                  expected):
    data_dir = tmp_path / "data"
    extra = prepare(data_dir) or []
    message = _start(["--data-dir", str(data_dir), "--no-load-at-start", *extra], monkeypatch)
    assert message.startswith("Text2Song Studio cannot start: ") and expected in message
    assert "\n" not in message and "Traceback" not in capsys.readouterr().err


@contextlib.contextmanager
def read_only(*paths: Path):
    """Make paths read-only for this process, also as root (chmod, then the immutable flag); skip if impossible."""
    for p in paths:
        p.chmod(p.stat().st_mode & ~0o222)
    immutable = []
    try:
        probe = paths[0] if paths[0].is_dir() else paths[0].parent
        if os.access(probe, os.W_OK) and os.geteuid() == 0:  # root ignores modes: the immutable flag stops it
            for p in paths:
                if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode == 0:
                    immutable.append(p)
            if not immutable:
                pytest.skip("cannot make a file read-only for root here (no chattr)")
        yield
    finally:
        for p in immutable:
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)
        for p in paths:
            p.chmod(p.stat().st_mode | 0o200)


@pytest.mark.parametrize("what", ["data dir", "database file"])
def test_a_read_only_data_dir_or_database_is_refused_at_start(tmp_path, monkeypatch, what):
    data_dir = tmp_path / "data"
    db = _good_database(data_dir)
    (data_dir / "tmp").mkdir()
    targets = [data_dir, data_dir / "tmp", db] if what == "data dir" else [db]
    with read_only(*targets):
        message = _start(["--data-dir", str(data_dir), "--no-load-at-start"], monkeypatch)
    assert message.startswith("Text2Song Studio cannot start: ") and "\n" not in message
    assert ("is not writable" in message or "cannot be written" in message) and "write access" in message


def test_a_refusal_from_the_command_line_is_one_line_without_traceback(tmp_path):
    """The real thing once: `python app.py` on a damaged database exits 1 with one line on stderr."""
    _garbage(tmp_path / "data")
    proc = subprocess.run([sys.executable, "app.py", "--data-dir", str(tmp_path / "data")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("Text2Song Studio cannot start: ")
    assert "Traceback" not in proc.stderr and "is not a usable studio database" in proc.stderr


@pytest.mark.parametrize("argv,env,warned", [
    (["--share"], {}, "a public --share link"),
    (["--host", "0.0.0.0"], {}, "--host 0.0.0.0"),
    (["--host", "0.0.0.0"], {"STUDIO_AUTH": "alice:secret"}, None),
    (["--host", "0.0.0.0", "--auth", "alice:secret"], {}, None),
])
def test_an_exposed_studio_without_a_password_says_so_loudly_at_start(tmp_path, monkeypatch, capsys, argv, env,
                                                                      warned):
    import uvicorn

    import app

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda _app, **kw: served.append(kw))  # everything but serving
    monkeypatch.setattr(app, "_share", lambda *_: None)  # no tunnel to the internet
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    app.main([*argv, "--data-dir", str(tmp_path / "data"), "--no-load-at-start"])
    err = capsys.readouterr().err
    assert served and served[0]["host"] in ("127.0.0.1", "0.0.0.0")
    if warned:
        assert f"reachable from other machines ({warned}) and has NO PASSWORD" in err
        assert "STUDIO_AUTH=USER:PASS" in err and "--auth-file" in err and len(err.strip().splitlines()) >= 5
    else:
        assert "NO PASSWORD" not in err
    # A password on the command line is visible in `ps`: the studio says how to keep it off.
    assert ("visible to every user of this machine (ps)" in err) is ("--auth" in argv)
