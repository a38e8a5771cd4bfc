"""The entry point: command line and STUDIO_* settings, fast start, background load of the right model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from studio.config import PROJECT_ROOT, parse_settings
from tests.live import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_defaults():
    s = parse_settings([], environ={})
    assert (s.host, s.port) == ("127.0.0.1", 7860)
    assert s.data_dir == PROJECT_ROOT / "adapters_db" and s.registry_path == PROJECT_ROOT / "registry.yaml"
    assert s.registry_path.is_file()
    assert s.model is None and s.share is False and s.auth is None


def test_environment_and_command_line():
    env = {"STUDIO_PORT": "9000", "STUDIO_HOST": "0.0.0.0", "STUDIO_MODEL": "studio-tiny", "STUDIO_AUTH": "a:b",
           "STUDIO_SHARE": "1", "STUDIO_DATA_DIR": "/tmp/x", "STUDIO_REGISTRY": "r.yaml"}
    s = parse_settings([], environ=env)
    assert (s.port, s.host, s.model, s.auth, s.share, str(s.data_dir), str(s.registry_path)) == (
        9000, "0.0.0.0", "studio-tiny", ("a", "b"), True, "/tmp/x", "r.yaml")
    assert parse_settings(["--port", "9100"], environ=env).port == 9100  # the command line wins


@pytest.mark.parametrize("auth", ["nopassword", ":p", "u:"])
def test_bad_auth_is_refused(auth, capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--auth", auth], environ={})
    assert "USER:PASS" in capsys.readouterr().err


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
        proc.wait(20)
