"""`python -m studio.cluster` (PostgreSQL + a Ray head + the studio in one command) and deploy/ray-cluster.yaml.

The command lines, the order of the stops and the one-line refusals are checked without Ray or PostgreSQL; one test
marked `ray` starts the real three, generates through the REST API and stops them."""
from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from studio import cluster, pg_local
from studio.cluster import ClusterError, Options, parse_options, ray_start_argv, run, studio_argv

ROOT = Path(__file__).resolve().parents[1]


def options(**overrides) -> Options:
    values = dict(data_dir=Path("/srv/studio"), replicas=2, gpus_per_replica=None, host="127.0.0.1", port=7860,
                  ray_port=6379, pg_port=5433, app_args=[])
    return Options(**{**values, **overrides})


# ---- the command lines ---------------------------------------------------------------------------------------------
def test_the_options_and_the_app_options_after_the_double_dash(monkeypatch):
    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    o = parse_options(["--replicas", "3", "--gpus-per-replica", "0.5", "--data-dir", "/srv/s", "--port", "8000",
                       "--ray-port", "7000", "--pg-port", "6000", "--", "--model", "studio-tiny", "--device", "cpu"])
    assert (o.replicas, o.gpus_per_replica, o.data_dir, o.port, o.ray_port, o.pg_port) == \
        (3, 0.5, Path("/srv/s"), 8000, 7000, 6000)
    assert o.app_args == ["--model", "studio-tiny", "--device", "cpu"]


@pytest.mark.parametrize("gpus, per_replica, expected", [
    (0, None, 1), (0, 0.0, 1), (1, None, 1), (4, None, 4), (4, 1.0, 4), (4, 2.0, 2), (2, 0.5, 4), (1, 2.0, 1),
])
def test_the_default_replicas_are_one_per_gpu_at_least_one(monkeypatch, gpus, per_replica, expected):
    monkeypatch.setattr(cluster, "gpu_count", lambda: gpus)
    argv = [] if per_replica is None else ["--gpus-per-replica", str(per_replica)]
    assert parse_options(argv).replicas == expected


@pytest.mark.parametrize("visible, expected", [("", 0), ("0", 1), ("0,1,3", 3), ("-1", 0), ("GPU-a1b2,GPU-c3d4", 2)])
def test_the_gpus_are_counted_as_cuda_visible_devices_says(monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert cluster.gpu_count() == expected


@pytest.mark.parametrize("argv, says", [
    (["--", "--database-url", "sqlite:///x.db"], "--database-url after `--`: the cluster sets it"),
    (["--", "--workers=local"], "--workers after `--`"),
    (["--", "--port", "80"], "the cluster sets it (--port)"),
    (["--", "--ray-replicas", "2"], "(--replicas)"),
    (["--replicas", "0"], "--replicas: 1 or more"),
    (["--gpus-per-replica", "-1"], "--gpus-per-replica: 0 or more"),
    (["--pg-port", "70000"], "a port, 1 to 65535"),
    (["--ray-port", "16380"], "--ray-port 16380: Ray's workers use ports 10002-19999: choose one outside"),
])
def test_bad_options_are_refused_in_one_line(monkeypatch, capsys, argv, says):
    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    with pytest.raises(SystemExit) as exc:
        parse_options(argv)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err


def test_the_ray_head_announces_loopback_and_blocks_in_the_foreground():
    argv = ray_start_argv(options(ray_port=7000), "/venv/bin/ray", lambda: 40000)
    assert argv[:4] == ["/venv/bin/ray", "start", "--head", "--block"]
    assert {"--port=7000", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
            "--disable-usage-stats"} <= set(argv)
    assert not any(a.startswith("--num-gpus") for a in argv)  # Ray counts the GPUs itself
    assert "--ray-client-server-port=40000" in argv and "--dashboard-agent-listen-port=40000" in argv


def test_a_host_that_exposes_the_studio_exposes_the_ray_head_on_this_machines_address():
    o = options(host="0.0.0.0")
    assert o.node_ip not in {"127.0.0.1", "0.0.0.0"}
    assert f"--node-ip-address={o.node_ip}" in ray_start_argv(o, "ray", lambda: 1)
    assert options(host="localhost").node_ip == "127.0.0.1"


def test_the_studio_joins_this_ray_head_with_the_replicas_asked_for():
    argv = studio_argv(options(replicas=3, gpus_per_replica=0.0, app_args=["--model", "studio-tiny"]))
    assert argv[:2] == [sys.executable, str(ROOT / "app.py")]
    pairs = dict(zip(argv[2:-2:2], argv[3:-2:2]))
    assert pairs == {"--data-dir": "/srv/studio", "--host": "127.0.0.1", "--port": "7860",
                     "--workers": "ray:127.0.0.1:6379", "--ray-replicas": "3", "--ray-gpus": "0",
                     "--device": "cpu"}  # the studio's copy of the model never takes a worker's GPU memory
    assert argv[-2:] == ["--model", "studio-tiny"]
    mine = studio_argv(options(app_args=["--device", "cuda:1"]))
    assert mine.count("--device") == 1 and mine[-2:] == ["--device", "cuda:1"]  # a person's choice wins
    assert "--database-url" not in argv  # its password goes in STUDIO_DATABASE_URL, out of `ps`
    assert "--ray-gpus" not in studio_argv(options())  # the studio's default: 1 when the cluster has GPUs


# ---- the order of the starts and the stops ---------------------------------------------------------------------
class FakePart:
    def __init__(self, name: str, log: list[str], exits_after: int | None = None, code: int = 0):
        self.name, self.log, self.exits_after, self.code, self.polls = name, log, exits_after, code, 0

    def poll(self):
        self.polls += 1
        return self.code if self.exits_after is not None and self.polls > self.exits_after else None

    def stop(self):
        self.log.append(f"stop {self.name}")


class FakeLauncher:
    """Records the starts; `fail` makes that step raise, `studio_exits` makes the studio stop on its own."""

    def __init__(self, fail: str | None = None, studio_exits: int | None = 2, studio_code: int = 0,
                 ray_exits: int | None = None, interrupt: str | None = None):
        self.log: list[str] = []
        self.fail, self.interrupt = fail, interrupt
        self.studio_exits, self.studio_code, self.ray_exits = studio_exits, studio_code, ray_exits
        self.logs, self.password_file = Path("/srv/studio/logs"), Path("/srv/studio/postgres.password")
        self.shown_database_url = "postgresql://postgres@127.0.0.1:5433/text2song"

    def _start(self, name: str, part):
        self.log.append(f"start {name}")
        if self.fail == name:
            raise ClusterError(f"{name} failed")
        if self.interrupt == name:
            raise KeyboardInterrupt
        return part

    def check(self):
        self._start("check", None)

    def postgres(self):
        return self._start("postgres", FakePart("postgres", self.log))

    def ray_head(self):
        return self._start("ray", FakePart("ray", self.log, self.ray_exits, code=1))

    def studio(self):
        return self._start("studio", FakePart("studio", self.log, self.studio_exits, self.studio_code))


def _run(launcher) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return run(options(), launcher, out, err, poll_s=0), out.getvalue(), err.getvalue()


def test_the_studio_exiting_stops_the_studio_then_ray_then_postgresql():
    launcher = FakeLauncher(studio_exits=2, studio_code=3)
    status, out, err = _run(launcher)
    assert launcher.log == ["start check", "start postgres", "start ray", "start studio",
                            "stop studio", "stop ray", "stop postgres"]
    assert status == 3 and err == ""  # the studio said why itself
    assert "http://127.0.0.1:7860" in out and "ray start" not in out  # a head on 127.0.0.1 is not joined
    assert "postgresql://postgres@127.0.0.1:5433/text2song" in out


def test_an_exposed_head_says_how_other_machines_join_it():
    o = options(host="0.0.0.0")
    said = cluster.summary(o, FakeLauncher())
    assert f"other machines join with: ray start --address {o.node_ip}:6379" in said
    assert f"http://{o.node_ip}:7860" in said


def test_ctrl_c_stops_all_three_in_the_same_order(monkeypatch):
    launcher = FakeLauncher(studio_exits=None)

    def sleep(_s):
        raise KeyboardInterrupt  # where a Ctrl-C lands: in the wait

    monkeypatch.setattr(cluster.time, "sleep", sleep)
    status, _, err = _run(launcher)
    assert status == 0 and err == ""
    assert launcher.log == ["start check", "start postgres", "start ray", "start studio",
                            "stop studio", "stop ray", "stop postgres"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup (a closed terminal)"])
def test_sigterm_stops_them_like_ctrl_c(monkeypatch, sig):
    launcher = FakeLauncher(studio_exits=None)

    def sleep(_s):
        os.kill(os.getpid(), sig)  # the handler run() installs raises where the signal lands

    monkeypatch.setattr(cluster.time, "sleep", sleep)
    before = signal.getsignal(sig)
    status, _, _ = _run(launcher)
    assert status == 0
    assert launcher.log[-3:] == ["stop studio", "stop ray", "stop postgres"]
    assert signal.getsignal(sig) is before


@pytest.mark.parametrize("fail, stopped", [
    ("check", []),
    ("postgres", []),
    ("ray", ["stop postgres"]),
    ("studio", ["stop ray", "stop postgres"]),
])
def test_a_failing_step_stops_what_was_started_and_says_why_in_one_line(fail, stopped):
    launcher = FakeLauncher(fail=fail)
    status, out, err = _run(launcher)
    assert status == 1
    assert [e for e in launcher.log if e.startswith("stop")] == stopped
    assert err == f"studio.cluster: {fail} failed\n"
    assert out == ""


def test_ctrl_c_while_a_part_starts_stops_those_already_started():
    launcher = FakeLauncher(interrupt="ray")
    status, _, err = _run(launcher)
    assert status == 0 and err == ""
    assert [e for e in launcher.log if e.startswith("stop")] == ["stop postgres"]


def test_the_ray_head_stopping_on_its_own_stops_the_studio_and_postgresql():
    launcher = FakeLauncher(studio_exits=None, ray_exits=1)
    status, _, err = _run(launcher)
    assert status == 1
    assert "ray stopped (exit status 1); stopping the rest" in err
    assert launcher.log[-3:] == ["stop studio", "stop ray", "stop postgres"]


def test_a_part_that_cannot_be_stopped_does_not_keep_the_others_running():
    launcher = FakeLauncher()
    real = launcher.ray_head

    def ray_head():
        part = real()
        part.stop = lambda: (_ for _ in ()).throw(RuntimeError("already gone\nmore"))
        return part

    launcher.ray_head = ray_head
    status, _, err = _run(launcher)
    assert launcher.log[-2:] == ["stop studio", "stop postgres"]
    assert "studio.cluster: could not stop ray: already gone\n" in err


def test_a_ray_head_that_did_not_start_is_said_in_its_exceptions_line(tmp_path):
    log = tmp_path / "ray-head.log"
    log.write_text("Usage stats collection is disabled.\nTraceback (most recent call last):\n  File \"x\", line 1\n"
                   "ValueError: Ray component worker_ports is trying to use a port number 16380\nPort information: "
                   "{'gcs': 'random'}\nIf you allocate ports, please make sure...\n")
    assert cluster.last_line(log) == "ValueError: Ray component worker_ports is trying to use a port number 16380"
    log.write_text("one\nlast words\n\n")
    assert cluster.last_line(log) == "last words"
    assert cluster.last_line(tmp_path / "none.log") == "no output"


# ---- the refusals when something is missing --------------------------------------------------------------------
def _checked(tmp_path, monkeypatch, which: dict[str, str | None], find_spec=True) -> str:
    monkeypatch.setattr(shutil, "which", lambda name: which.get(name))
    monkeypatch.setattr(pg_local.glob, "glob", lambda _pattern: [])  # no Debian folder either
    monkeypatch.setattr(cluster.importlib.util, "find_spec", lambda name: object() if find_spec else None)
    monkeypatch.setattr(cluster.sys, "executable", str(tmp_path / "bin" / "python"))  # no `ray` beside it
    with pytest.raises(ClusterError) as exc:
        cluster.Launcher(options(data_dir=tmp_path, port=_free(), ray_port=_free(), pg_port=_free())).check()
    return str(exc.value)


def test_without_postgresql_it_says_to_install_it(tmp_path, monkeypatch):
    said = _checked(tmp_path, monkeypatch, {"ray": "/usr/bin/ray"})
    assert said == pg_local.INSTALL_HINT
    assert "apt-get install postgresql" in said


def test_without_ray_it_says_to_install_the_extra(tmp_path, monkeypatch):
    pg = {"initdb": "/usr/bin/initdb", "pg_ctl": "/usr/bin/pg_ctl"}
    assert _checked(tmp_path, monkeypatch, pg) == "Ray is not installed: pip install -r requirements-ray.txt"
    assert _checked(tmp_path, monkeypatch, {**pg, "ray": "/usr/bin/ray"}, find_spec=False) == cluster.RAY_HINT


def test_a_port_in_use_is_named_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "find_binaries", lambda: Path("/usr/bin"))
    monkeypatch.setattr(cluster, "ray_cli", lambda: "/usr/bin/ray")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ClusterError, match=f"^--pg-port {port} is in use on this machine: choose another$"):
            cluster.Launcher(options(data_dir=tmp_path, port=_free(), ray_port=_free(), pg_port=port)).check()


def test_the_local_postgresql_says_it_is_not_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(pg_local, "find_binaries", lambda: None)
    with pytest.raises(pg_local.PostgresError, match="apt-get install postgresql"):
        pg_local.LocalPostgres(tmp_path / "pg", 5433)


def _free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the cluster's PostgreSQL: made once, kept between runs -------------------------------------------------------
def test_the_database_is_made_once_with_a_password_and_kept_between_runs():
    import psycopg

    if pg_local.find_binaries() is None:
        pytest.skip(pg_local.INSTALL_HINT)
    root = Path(tempfile.mkdtemp(prefix="studio-cluster-pg-"))  # not pytest's tmp: postgres must enter it
    root.chmod(0o755)
    o = options(data_dir=root / "data", pg_port=_free())
    try:
        first = cluster.Launcher(o)
        part = first.postgres()
        try:
            assert first.shown_database_url == f"postgresql://postgres@127.0.0.1:{o.pg_port}/text2song"
            assert first.password_file.stat().st_mode & 0o777 == 0o600
            with psycopg.connect(first.database_url, autocommit=True) as conn:
                conn.execute("CREATE TABLE kept (n int)")
            with pytest.raises(psycopg.OperationalError, match="password"):  # a password, even on 127.0.0.1
                psycopg.connect(first.shown_database_url, connect_timeout=5)
        finally:
            part.stop()
        assert not part.server.running()

        again = cluster.Launcher(o)
        part = again.postgres()  # no initdb: the same server, the same password
        try:
            assert again.database_url == first.database_url
            with psycopg.connect(again.database_url) as conn:
                assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        finally:
            part.stop()

        again.password_file.unlink()
        with pytest.raises(ClusterError, match="postgres.password is missing: restore it, or move .* away"):
            cluster.Launcher(o).postgres()
    finally:
        pg_local.LocalPostgres(o.data_dir / "postgres", o.pg_port).stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# ---- deploy/ray-cluster.yaml ---------------------------------------------------------------------------------------
def test_the_ray_cluster_configuration_parses_and_installs_the_studio_everywhere():
    config = yaml.safe_load((ROOT / "deploy" / "ray-cluster.yaml").read_text(encoding="utf-8"))
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]
    setup = "\n".join(config["setup_commands"])
    for needed in ("torch==2.13.0", "requirements.txt", "requirements-ray.txt"):
        assert needed in setup
    assert any("ray start --head --port=6379" in c for c in config["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in config["worker_start_ray_commands"])


def test_the_ray_cluster_configuration_passes_rays_own_checks():
    pytest.importorskip("ray", reason="Ray is an optional extra (requirements-ray.txt)")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "deploy" / "ray-cluster.yaml").read_text(encoding="utf-8"))
    validate_config(config)
    validate_config(prepare_config(config))  # what `ray up` does with it: one node type for the worker_ips


# ---- the real thing: PostgreSQL, a Ray head and the studio, one generation, then Ctrl-C ---------------------------
@pytest.mark.ray
def test_one_command_runs_a_studio_on_ray_and_postgresql_and_ctrl_c_stops_all_three(tiny_folder):
    pytest.importorskip("ray", reason="Ray is an optional extra (requirements-ray.txt)")
    import httpx
    import psutil

    if pg_local.find_binaries() is None:
        pytest.skip(pg_local.INSTALL_HINT)
    root = Path(tempfile.mkdtemp(prefix="sc-", dir="/tmp"))  # short (Ray's socket names); postgres must enter it
    root.chmod(0o755)
    data, ray_tmp = root / "data", root / "r"
    (data / "models").mkdir(parents=True)
    ray_tmp.mkdir()
    shutil.copytree(tiny_folder, data / "models" / "studio-tiny")
    port, ray_port, pg_port = _free(), _free(), _free()
    # RAY_TMPDIR: this head's files apart from any other Ray of the machine (its ray_current_cluster too)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(ray_tmp), "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    log = root / "cluster.log"
    command = [sys.executable, "-m", "studio.cluster", "--replicas", "1", "--gpus-per-replica", "0", "--data-dir",
               str(data), "--port", str(port), "--ray-port", str(ray_port), "--pg-port", str(pg_port), "--",
               "--model", "studio-tiny", "--device", "cpu", "--hf-cache-dir", str(root / "hf")]
    started = time.monotonic()
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    ours: list[psutil.Process] = []

    def said() -> str:
        return log.read_text(errors="replace")[-3000:]

    def until(what: str, check, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the cluster stopped while waiting for {what}:\n{said()}"
            value = check()
            if value:
                return value
            time.sleep(0.5)
        pytest.fail(f"no {what} within {timeout:.0f} s:\n{said()}")

    def get(path: str):
        try:
            return httpx.get(base + path, timeout=10)
        except httpx.HTTPError:
            return None

    try:
        def model_ready():
            answer = get("/api/models/current")
            return answer is not None and answer.status_code == 200 and \
                (answer.json()["model"] or {}).get("id") == "studio-tiny" and answer.json()["state"] == "idle"

        until("studio with studio-tiny loaded", model_ready, 240)
        ready_s = time.monotonic() - started
        accepted = httpx.post(base + "/api/jobs", json={"prompt": "a short test tune", "duration_s": 1, "seed": 3},
                              timeout=30)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]

        def finished():
            answer = get(f"/api/jobs/{job_id}")
            return answer is not None and answer.json()["status"] not in {"queued", "running"} and answer.json()

        job = until(f"end of job {job_id}", finished, 240)
        assert job["status"] == "succeeded", job
        assert httpx.get(f"{base}/api/jobs/{job_id}/audio", timeout=10).status_code == 200
        generated_s = time.monotonic() - started
        assert f"postgresql://postgres@127.0.0.1:{pg_port}/text2song  " in log.read_text()  # without its password
        assert (data / "postgres.password").stat().st_mode & 0o077 == 0

        ours = psutil.Process(proc.pid).children(recursive=True) + _processes_naming(root)
        assert any("raylet" in " ".join(p.cmdline()) for p in ours if p.is_running())
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        proc.wait(timeout=120)
        stopped_s = time.monotonic() - started - generated_s
        assert proc.returncode == 0, said()
        deadline = time.monotonic() + 15
        while [p for p in ours if _alive(p)] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [(p.pid, p.name()) for p in ours if _alive(p)], "left running after the cluster stopped"
        assert not _processes_naming(root), "a process of this cluster is left"
        for closed in (port, ray_port, pg_port):
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", closed)) != 0, f"port {closed} still answers"
        print("\n" + "\n".join(log.read_text().splitlines()[:6]))
        print(f"ready {ready_s:.1f} s, generated at {generated_s:.1f} s, stopped in {stopped_s:.1f} s")
        assert stopped_s < 30, f"stopping took {stopped_s:.0f} s"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
        for p in ours:  # what the cluster failed to stop: ours alone, by pid
            if _alive(p):
                p.kill()
        try:
            pg_local.LocalPostgres(data / "postgres", pg_port).stop("immediate")
        except pg_local.PostgresError:
            pass
        shutil.rmtree(root, ignore_errors=True)


def _processes_naming(folder: Path) -> list:
    """Processes whose command line names `folder` (Ray's under RAY_TMPDIR, the PostgreSQL server's data)."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(folder) in " ".join(p.info["cmdline"] or ()) and p.pid != os.getpid():
                found.append(p)
        except psutil.Error:
            pass
    return found


def _alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_ray_token_authentication_is_on_unless_the_caller_chose(monkeypatch):
    from studio.cluster import ray_auth_env

    calls = []
    monkeypatch.setattr("studio.cluster.subprocess.run", lambda argv, **kw: calls.append(argv))
    assert ray_auth_env({}, "ray") == {"RAY_AUTH_MODE": "token"}  # some Ray ports listen on every interface
    assert calls == [["ray", "get-auth-token", "--generate"]]  # the token made once, in ~/.ray/auth_token
    assert ray_auth_env({"RAY_AUTH_MODE": "disabled"}, "ray") == {} and len(calls) == 1

