"""studio.runtime.ray_worker without a cluster (connect with Ray's calls replaced, a lost replica's jobs), in the
default suite (a second or two: importing Ray). The cluster itself is tested in test_ray_workers.py (`pytest -m ray`)."""
from __future__ import annotations

import socket
import time
from types import SimpleNamespace

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
    monkeypatch.setattr(ray, "available_resources", lambda: {"CPU": 2.0})
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


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_a_head_nothing_answers_at_is_said_at_once(fake_ray, monkeypatch):
    """ray.init retries an address nothing answers at for ever (a warning every few seconds): connect says so in
    one line instead, and never calls it."""
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=f"no Ray head answers at 127.0.0.1:{port}"):
        ray_worker.connect(f"127.0.0.1:{port}", replicas=1, gpus=0, config=ReplicaConfig(models_dir="/tmp/m"),
                           project_root="/tmp/p", name="text2song-x")
    assert time.monotonic() - started < ray_worker.HEAD_PROBE_S and "init" not in fake_ray


def test_auto_names_the_address_a_stopped_cluster_left(fake_ray, monkeypatch, tmp_path):
    """`ray start` records its head in <ray temp>/ray_current_cluster and only `ray stop` removes it (the cluster
    command never runs it): ray:auto after that cluster stopped is refused, naming the file; with no cluster at
    all, the studio's options are named, not Ray's."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr("ray._private.services.find_gcs_addresses", lambda: [])  # another Ray of this machine
    (tmp_path / "ray").mkdir()
    with pytest.raises(ConnectionError, match="no Ray cluster runs on this machine.*--workers ray:HOST:6379"):
        ray_worker.check_head("auto")
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_closed_port()}")
    with pytest.raises(ConnectionError, match="ray_current_cluster: that cluster has stopped"):
        ray_worker.check_head("auto")


def test_gpus_a_cluster_lacks_are_refused_with_what_to_do(fake_ray):
    with pytest.raises(RuntimeError, match="the Ray cluster has 0 free: --ray-gpus 0 for CPU replicas"):
        ray_worker.connect("local", replicas=3, gpus=1, config=ReplicaConfig(models_dir="/tmp/m"),
                           project_root="/tmp/p", name="text2song-x")
    assert fake_ray["shutdown"] and "run" not in fake_ray


def test_a_lost_replicas_jobs_say_how_to_submit_them_again():
    """Started jobs of a replica that died are interrupted with the route that resubmits each, by its id; the jobs
    of its batch it had not started wait again."""
    told = []
    listener = SimpleNamespace(failed=lambda *a: told.append(a), cancelled=lambda *a: told.append(a),
                               queue_changed=lambda: None)
    worker = ray_worker.RayWorker(None, listener, None, None, replicas=1, max_batch=lambda _m: 4)
    lane = worker._lanes[0]
    lane.replica = "ab12cd34"
    started, waiting = SimpleNamespace(job_id=7), SimpleNamespace(job_id=8)
    worker._lost(lane, [started, waiting], SimpleNamespace(hooks=SimpleNamespace(tasks=[started])), OSError())
    assert told == [(7, "interrupted", "interrupted: the GPU worker running this job stopped (replica ab12cd34); "
                                       "submit it again (POST /api/jobs/7/resubmit)")]
    assert [t.job_id for t in worker._pending] == [8]
