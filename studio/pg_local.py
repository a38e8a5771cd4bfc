"""A PostgreSQL server run from this machine's own binaries, listening on 127.0.0.1 only: the database of
`python -m studio.cluster` (its data kept between runs) and the tests' throwaway server (tests/postgres.py).

Debian's binaries refuse to run as root: as root, initdb and pg_ctl run as the `postgres` user (runuser), which must
be able to enter the folder."""
from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = ("PostgreSQL is not installed (no initdb/pg_ctl on the PATH or in /usr/lib/postgresql/*/bin): "
                "apt-get install postgresql")
SERVER_USER = "postgres"  # the superuser's name, and the system user the binaries run as under root
START_TIMEOUT_S = 120  # a server that was killed replays its log first


class PostgresError(Exception):
    """PostgreSQL could not be found, initialised, started or stopped: one line for a person."""


def find_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl: on the PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def as_root() -> bool:
    return os.geteuid() == 0


def give_to_server_user(path: Path) -> None:
    """Under root the server runs as `postgres`: it must own the folders it writes (its data, socket, log)."""
    if as_root():
        shutil.chown(path, SERVER_USER)


class LocalPostgres:
    """A server whose data is in `folder` (initdb once, then started and stopped as often as needed) on
    127.0.0.1:`port`. socket_dir: where its Unix socket goes (None: no socket, TCP only: a long folder path would
    not fit a socket's name). log: the server's log (default: server.log in the folder)."""

    def __init__(self, folder: Path, port: int, bindir: Path | None = None, *, socket_dir: Path | None = None,
                 log: Path | None = None):
        bindir = bindir or find_binaries()
        if bindir is None:
            raise PostgresError(INSTALL_HINT)
        self.folder, self.port, self.bindir = Path(folder), port, Path(bindir)
        self.socket_dir = socket_dir
        self.log = log or self.folder / "server.log"

    @property
    def initialized(self) -> bool:
        return (self.folder / "PG_VERSION").exists()

    def init(self, *, password: str | None = None, no_sync: bool = False) -> None:
        """Create the database cluster. password: the superuser's, asked of every connection (None: trust, for the
        tests' throwaway server). no_sync: skip initdb's fsync (a server thrown away after the tests)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        give_to_server_user(self.folder)
        args = ["-D", str(self.folder), "-U", SERVER_USER, "-E", "UTF8", "--locale=C.UTF-8"]
        args += ["--no-sync"] if no_sync else []
        if password is None:
            self._run("initdb", *args, "-A", "trust")
            return
        fd, pwfile = tempfile.mkstemp(prefix="studio-pw-")  # initdb reads it as the server user
        try:
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            give_to_server_user(Path(pwfile))
            self._run("initdb", *args, "-A", "scram-sha-256", f"--pwfile={pwfile}")
        finally:
            os.unlink(pwfile)

    def running(self) -> bool:
        """pg_ctl status: 0 when a server runs on the folder."""
        return self.initialized and self._run("pg_ctl", "status", "-D", str(self.folder), check=False) == 0

    def start(self, *settings: str) -> None:
        """Start and wait until it accepts connections. settings: further `-c name=value` options."""
        if self.running():
            raise PostgresError(f"a PostgreSQL server already runs on {self.folder} (stop it: pg_ctl -D "
                                f"{self.folder} stop)")
        sockets = shlex.quote(str(self.socket_dir)) if self.socket_dir is not None else "''"
        options = " ".join([f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={sockets}",
                            *settings])
        try:
            self._run("pg_ctl", "-D", str(self.folder), "-w", "-t", str(START_TIMEOUT_S), "-l", str(self.log),
                      "-o", options, "start", timeout=START_TIMEOUT_S + 30)
        except PostgresError:
            raise PostgresError(f"PostgreSQL did not start on 127.0.0.1:{self.port}: {self._last_log_line()}") \
                from None

    def stop(self, mode: str = "fast") -> None:
        """Stop it if it runs (fast: sessions are ended, the data is flushed; immediate: no flush, for a server
        thrown away)."""
        if (self.folder / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.folder), "-m", mode, "-w", "stop", timeout=90)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{SERVER_USER}{secret}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str, check: bool = True, timeout: float = 60) -> int:
        command = [str(self.bindir / program), *args]
        if as_root():  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, start_new_session=True)  # not stopped by a Ctrl-C
        except subprocess.TimeoutExpired:
            raise PostgresError(f"{program} did not finish within {timeout:.0f} s") from None
        if check and done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines() or [f"exit status {done.returncode}"]
            hint = (f" (it runs as the {SERVER_USER} user under root: that user must be able to enter "
                    f"{self.folder.parent})") if as_root() and "ermission denied" in lines[-1] else ""
            raise PostgresError(f"{program} failed: {lines[-1].strip()}{hint}")
        return done.returncode

    def _last_log_line(self) -> str:
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        return lines[-1].strip() if lines else "see its log"
