"""`python -m studio.cluster`: a team's studio on this machine in one command: a PostgreSQL server (its data in
<data-dir>/postgres, kept between runs, on 127.0.0.1 only), a Ray head, and the studio with its GPU workers on that
Ray (app.py --workers ray:... --database-url ...), in the foreground. Ctrl-C, SIGTERM or the studio (or the Ray head)
exiting stops all three, last started first; a step that fails stops what was started and says why in one line.

    python -m studio.cluster [--replicas N] [--gpus-per-replica G] [--data-dir FOLDER] [--host HOST] [--port PORT]
                             [--ray-port PORT] [--pg-port PORT] [-- APP.PY OPTIONS...]

Other machines join the Ray head with `ray start --address HEAD:PORT` (the studio's --host must expose it)."""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence, TextIO

from studio.config import LOOPBACK, PROJECT_ROOT
from studio.pg_local import INSTALL_HINT, LocalPostgres, PostgresError, find_binaries

DATABASE = "text2song"
RAY_HINT = "Ray is not installed: pip install -r requirements-ray.txt"
RAY_READY = "Ray runtime started."  # what `ray start` prints once the head is up (ray 2.60, pinned)
RAY_START_TIMEOUT_S = 180  # ~20 s on two busy cores
STUDIO_GRACE_S = 30  # a studio stopping closes its streams and the Ray handle
RAY_GRACE_S = 30  # `ray start --block` kills its node's processes on SIGTERM
RAY_WORKER_PORTS = range(10002, 20000)  # Ray's workers' ports (its defaults): the head's port may not be one
# app.py options the cluster sets itself: the same option twice would be ambiguous
OWN_OPTIONS = {"--database-url": "the cluster's PostgreSQL", "--workers": "the cluster's Ray head",
               "--ray-replicas": "--replicas", "--ray-gpus": "--gpus-per-replica", "--data-dir": "--data-dir",
               "--host": "--host", "--port": "--port"}


class ClusterError(Exception):
    """A step could not be done: one line for a person."""


@dataclass
class Options:
    data_dir: Path
    replicas: int
    gpus_per_replica: float | None
    host: str
    port: int
    ray_port: int
    pg_port: int
    app_args: list[str] = field(default_factory=list)

    @property
    def node_ip(self) -> str:
        """The address the Ray head announces (and the studio joins): 127.0.0.1 unless --host exposes it."""
        return node_ip(self.host)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m studio.cluster", allow_abbrev=False,
        description="Start PostgreSQL, a Ray head and the studio with its GPU workers on this machine, in the "
                    "foreground; Ctrl-C stops all three. Options after `--` go to app.py.",
        epilog="Other machines join with `ray start --address HEAD:RAY_PORT` (use --host to expose the head).")
    p.add_argument("--replicas", type=_positive_int, metavar="N",
                   help="GPU workers (Ray Serve replicas) (default: one per GPU of this machine, at least 1)")
    p.add_argument("--gpus-per-replica", type=float, metavar="G",
                   help="GPUs per replica, 0 for CPU replicas (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--data-dir", type=Path, metavar="FOLDER",
                   default=Path(os.environ.get("STUDIO_DATA_DIR") or PROJECT_ROOT / "adapters_db"),
                   help="the studio's data directory; PostgreSQL's data goes in its postgres/ folder "
                        "(default: STUDIO_DATA_DIR, else adapters_db next to app.py)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface the studio and the Ray head bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=7860, help="the studio's port (default 7860)")
    p.add_argument("--ray-port", type=_port, default=6379, metavar="PORT", help="the Ray head's port (GCS; default 6379)")
    p.add_argument("--pg-port", type=_port, default=5433, metavar="PORT", help="PostgreSQL's port on 127.0.0.1 (default 5433)")
    return p


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """The cluster's options, and app.py's after `--`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, app_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = build_parser()
    ns = parser.parse_args(ours)
    for arg in app_args:
        flag = arg.split("=", 1)[0]
        if flag in OWN_OPTIONS:
            parser.error(f"{flag} after `--`: the cluster sets it ({OWN_OPTIONS[flag]})")
    if ns.ray_port in RAY_WORKER_PORTS:
        parser.error(f"--ray-port {ns.ray_port}: Ray's workers use ports {RAY_WORKER_PORTS.start}-"
                     f"{RAY_WORKER_PORTS.stop - 1}: choose one outside")
    if ns.gpus_per_replica is not None and ns.gpus_per_replica < 0:
        parser.error("--gpus-per-replica: 0 or more")
    replicas = ns.replicas if ns.replicas is not None else default_replicas(gpu_count(), ns.gpus_per_replica)
    return Options(data_dir=ns.data_dir.expanduser().resolve(), replicas=replicas,
                   gpus_per_replica=ns.gpus_per_replica, host=ns.host, port=ns.port, ray_port=ns.ray_port,
                   pg_port=ns.pg_port, app_args=app_args)


def default_replicas(gpus: int, per_replica: float | None) -> int:
    """One replica per GPU (or per_replica's share of them), at least one."""
    if gpus and per_replica:
        return max(1, int(gpus / per_replica))
    return max(1, gpus)


def gpu_count() -> int:
    """The NVIDIA GPUs this machine shows (CUDA_VISIBLE_DEVICES first, as Ray reads it), without importing torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0


def node_ip(host: str) -> str:
    """The IP a Ray node on `host` announces: loopback stays on 127.0.0.1; 0.0.0.0 is this machine's outward
    address (the route a UDP socket would take: no packet is sent); a name is resolved."""
    if host in LOOPBACK:
        return "127.0.0.1"
    if host in {"0.0.0.0", "::", ""}:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.connect(("10.255.255.255", 1))
                return s.getsockname()[0]
            except OSError:
                return socket.gethostbyname(socket.gethostname())
    try:
        return socket.gethostbyname(host)
    except OSError:
        raise ClusterError(f"--host {host}: not an address of this machine") from None


# ---- the command lines ---------------------------------------------------------------------------------------------
def ray_cli() -> str | None:
    """The `ray` command of this Python's environment (the one whose Ray the studio imports)."""
    if importlib.util.find_spec("ray") is None:
        return None
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else shutil.which("ray")


def ray_start_argv(options: Options, ray: str, free_port: Callable[[], int]) -> list[str]:
    """`ray start --head`, blocking: the cluster holds its process, and stopping it stops this head alone (never
    `ray stop`, which stops every Ray of the machine)."""
    return [ray, "start", "--head", "--block", f"--port={options.ray_port}",
            f"--node-ip-address={options.node_ip}", "--include-dashboard=false", "--disable-usage-stats",
            # Ray's fixed defaults (10001, 52365) would collide with another Ray on this machine; the studio uses
            # neither (it joins as a driver through the GCS port)
            f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}"]


def studio_argv(options: Options) -> list[str]:
    """app.py on the cluster's Ray head and data directory; the database URL (with its password) goes in the
    environment, never on a command line every user of the machine can read."""
    argv = [sys.executable, str(PROJECT_ROOT / "app.py"), "--data-dir", str(options.data_dir), "--host",
            options.host, "--port", str(options.port), "--workers", f"ray:{options.node_ip}:{options.ray_port}",
            "--ray-replicas", str(options.replicas)]
    if options.gpus_per_replica is not None:
        argv += ["--ray-gpus", f"{options.gpus_per_replica:g}"]
    if not any(a == "--device" or a.startswith("--device=") for a in options.app_args):
        # the studio keeps a copy of the model for its pages: on the CPU, so that it never takes a worker's GPU memory
        argv += ["--device", "cpu"]
    return argv + options.app_args


def ray_auth_env(environ: Mapping[str, str], ray: str) -> dict[str, str]:
    """Ray's token authentication on for the head and the studio: some of Ray's ports listen on every interface,
    and without a token anyone who reaches them runs code here. The token is made once, in ~/.ray/auth_token
    (copy it to the machines that join). An explicit RAY_AUTH_MODE (disabled, in tests) is left as it is."""
    if "RAY_AUTH_MODE" in environ:
        return {}
    subprocess.run([ray, "get-auth-token", "--generate"], check=True, capture_output=True, timeout=60)
    return {"RAY_AUTH_MODE": "token"}


# ---- the parts -----------------------------------------------------------------------------------------------------
class Part(Protocol):
    name: str

    def poll(self) -> int | None:
        """Its exit status once it stopped on its own; None while it runs."""

    def stop(self) -> None:
        """Stop it (and whatever it started), within its grace period."""


class ProcessPart:
    """A child in its own session (a Ctrl-C at the terminal reaches the cluster alone, which stops the children in
    order): stopped with `signal`, then its whole process group is killed after `grace` seconds."""

    def __init__(self, name: str, process: subprocess.Popen, signal_: int, grace: float):
        self.name, self.process, self.signal, self.grace = name, process, signal_, grace

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(self.signal)
            try:
                self.process.wait(self.grace)
            except subprocess.TimeoutExpired:
                pass
        try:  # what it left behind (Ray's workers, a studio's subprocesses): its group is ours
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


class PostgresPart:
    name = "PostgreSQL"

    def __init__(self, server: LocalPostgres):
        self.server = server

    def poll(self) -> int | None:
        return None  # not our child (pg_ctl detaches it); the studio says so if it goes

    def stop(self) -> None:
        self.server.stop("fast")


class Launcher:
    """Starts each part for real, on `options`."""

    def __init__(self, options: Options):
        self.options = options
        self.logs = options.data_dir / "logs"
        self.password_file = options.data_dir / "postgres.password"
        self.database_url = ""  # with its password: for the studio's environment only
        self.shown_database_url = ""  # without it: for the console

    def check(self) -> None:
        """What is missing or taken, before anything starts."""
        if find_binaries() is None:
            raise ClusterError(INSTALL_HINT)
        if ray_cli() is None:
            raise ClusterError(RAY_HINT)
        o = self.options
        for what, host, port in (("--port", o.host, o.port), ("--ray-port", "0.0.0.0", o.ray_port),
                                 ("--pg-port", "127.0.0.1", o.pg_port)):
            if not port_free(host, port):
                raise ClusterError(f"{what} {port} is in use on this machine: choose another")

    def postgres(self) -> PostgresPart:
        o = self.options
        try:
            server = LocalPostgres(o.data_dir / "postgres", o.pg_port)
            password = self._password(server)
            part = PostgresPart(server)
            try:
                server.start()
                ensure_database(server.url("postgres", password), DATABASE)
            except BaseException:  # a Ctrl-C too: a server half started is stopped
                part.stop()
                raise
        except PostgresError as exc:
            raise ClusterError(str(exc)) from None
        self.database_url = server.url(DATABASE, password)
        self.shown_database_url = server.url(DATABASE)
        return part

    def _password(self, server: LocalPostgres) -> str:
        """The superuser's password: made with the database cluster, kept beside it (readable by this user only)."""
        if server.initialized:
            try:
                return self.password_file.read_text().strip()
            except OSError:
                raise ClusterError(f"{self.password_file} is missing: restore it, or move {server.folder} away to "
                                   "start with an empty database") from None
        password = secrets.token_urlsafe(24)
        self.options.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        server.init(password=password)
        return password

    def ray_head(self) -> ProcessPart:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / "ray-head.log"
        # no drain on SIGTERM (Ray waits up to 30 s for it): the studio, Serve's one caller, has stopped already
        self.auth = ray_auth_env(os.environ, ray_cli() or "ray")
        env = {**os.environ, **self.auth, "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        with open(log, "w") as sink:
            process = subprocess.Popen(ray_start_argv(self.options, ray_cli() or "ray", free_port), stdout=sink,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        part = ProcessPart("the Ray head", process, signal.SIGTERM, RAY_GRACE_S)
        deadline = time.monotonic() + RAY_START_TIMEOUT_S
        try:
            while RAY_READY not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise ClusterError(f"the Ray head did not start: {last_line(log)} (its log: {log})")
                time.sleep(0.3)
        except BaseException:  # a Ctrl-C too: a head half started is stopped
            part.stop()
            raise
        return part

    def studio(self) -> ProcessPart:
        env = {**os.environ, **getattr(self, "auth", {}), "STUDIO_DATABASE_URL": self.database_url}
        process = subprocess.Popen(studio_argv(self.options), env=env, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        # SIGTERM: uvicorn stops as on Ctrl-C once it serves, and a studio still starting ends without a traceback
        return ProcessPart("the studio", process, signal.SIGTERM, STUDIO_GRACE_S)


def run(options: Options, launcher, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
        poll_s: float = 0.5) -> int:
    """Start PostgreSQL, the Ray head and the studio; wait until a signal or until the studio or the head stops;
    stop what runs, last started first. The exit status: the studio's when it stopped on its own, 1 on a failure."""
    parts: list[Part] = []
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM as Ctrl-C: the same orderly stop
    previous_hup = signal.signal(signal.SIGHUP, _interrupt)  # and a closed terminal (an ssh logout)
    status = 0
    try:
        launcher.check()
        parts.append(launcher.postgres())
        parts.append(launcher.ray_head())
        parts.append(launcher.studio())
        print(summary(options, launcher), file=out, flush=True)
        while True:
            ended = next(((p, code) for p in parts if (code := p.poll()) is not None), None)
            if ended is not None:
                part, code = ended
                if part is not parts[-1]:
                    print(f"studio.cluster: {part.name} stopped (exit status {code}); stopping the rest",
                          file=err, flush=True)
                status = code or (1 if part is not parts[-1] else 0)
                break
            time.sleep(poll_s)
    except ClusterError as exc:
        print(f"studio.cluster: {exc}", file=err, flush=True)
        status = 1
    except OSError as exc:  # a data directory this user cannot write, ...
        print(f"studio.cluster: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=err, flush=True)
        status = 1
    except KeyboardInterrupt:
        status = 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C must not cut the stops short
            signal.signal(sig, signal.SIG_IGN)
        for part in reversed(parts):
            try:
                part.stop()
            except Exception as exc:  # noqa: BLE001 - the others are still stopped
                line = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
                print(f"studio.cluster: could not stop {part.name}: {line}", file=err, flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)
    return status


def summary(options: Options, launcher) -> str:
    """What runs where."""
    o = options
    shown = node_ip(o.host) if o.host in {"0.0.0.0", "::"} else o.host
    head = f"{o.node_ip}:{o.ray_port}"
    join = (f"other machines join with: ray start --address {head}" if o.node_ip != "127.0.0.1" else
            "for this machine's studio (--host lets other machines join)")
    auth = getattr(launcher, "auth", None)
    if auth is not None and not auth:  # RAY_AUTH_MODE given: token authentication as the caller set it
        join += f"; Ray's token authentication: {os.environ.get('RAY_AUTH_MODE')}"
    return "\n".join([
        "Text2Song cluster (Ctrl-C stops all three):",
        f"  studio      http://{shown}:{o.port}  ({o.replicas} worker replica{'s' if o.replicas != 1 else ''} on Ray Serve)",
        f"  Ray head    {head}  {join}",
        f"  PostgreSQL  {launcher.shown_database_url}  (data in {o.data_dir / 'postgres'}; password in {launcher.password_file})",
        f"  logs        {launcher.logs / 'ray-head.log'}; the studio's below",
    ])


def ensure_database(admin_url: str, name: str) -> None:
    """Create the studio's database on the first start."""
    import psycopg

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise PostgresError(f"the database {name} could not be made: {str(exc).strip().splitlines()[0]}") from None


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free to listen on
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def last_line(path: Path) -> str:
    """What a failed program said last: its exception's line when it ended in a traceback."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", line)]
    return (errors or lines or ["no output"])[-1]


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("1 or more")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port, 1 to 65535")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    return run(options, Launcher(options))


if __name__ == "__main__":
    sys.exit(main())
