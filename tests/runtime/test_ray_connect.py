"""studio.runtime.ray_worker.connect without a cluster: Ray's calls are replaced, so these run in the default suite
(a second or two: importing Ray). The cluster itself is tested in test_ray_workers.py (`pytest -m ray`)."""
from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-ray.txt")

import ray  # noqa: E402
from ray import serve  # noqa: E402

from studio.runtime import ray_worker  # noqa: E402
from studio.runtime.ray_serve import ReplicaConfig, StudioWorker  # noqa: E402


class _Bound:
    def bind(self, *args):
        return ("app", args)


@pytest.fixture
def fake_ray(monkeypatch):
    """Ray and Serve's calls recorded instead of made: what connect() deployed, and what it left for exit."""
    seen = {"exit": []}
    monkeypatch.setattr(ray, "init", lambda **kw: seen.setdefault("init", kw))
    monkeypatch.setattr(ray, "shutdown", lambda: seen.setdefault("shutdown", True))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(serve, "start", lambda **kw: None)
    monkeypatch.setattr(serve, "run", lambda app, **kw: seen.setdefault("run", kw) and "handle")
    monkeypatch.setattr(StudioWorker, "options", lambda **kw: _Bound())
    monkeypatch.setattr(ray_worker.atexit, "register", lambda fn, *args: seen["exit"].append((fn, args)))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/hub")
    return seen


def test_the_serve_application_is_named_after_the_studio(fake_ray):
    """Two studios on one cluster keep their own workers: each deploys (and at exit removes) its own application,
    whatever environment variables it passes on to the replicas."""
    ray_worker.connect("local", replicas=2, gpus=0, config=ReplicaConfig(models_dir="/tmp/models"),
                       project_root="/tmp/project", name="text2song-abc123")
    assert fake_ray["run"]["name"] == "text2song-abc123"
    assert fake_ray["exit"] == [(ray_worker.disconnect, ("text2song-abc123",))]
    assert fake_ray["init"]["runtime_env"]["env_vars"]["HF_ENDPOINT"] == "http://127.0.0.1:9/hub"
