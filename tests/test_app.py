"""The entry point: fast start, background load of the right model, clear refusals to start (options: test_config)."""
from __future__ import annotations

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
        proc.wait(20)
