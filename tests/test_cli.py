"""`python -m studio.cli user ...`: the first admin and lost passwords from the server's command line, beside a
running studio, on the database the studio made (never a new empty one)."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from studio.cli import main
from studio.users import Actor
from tests.conftest import LOCAL  # noqa: F401 - the fixtures' module


def run(*argv: str, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), stdin=io.StringIO(stdin), stdout=out)
    return code, out.getvalue()


def test_the_first_admin_and_a_new_password_beside_a_running_studio(make_ctx, capsys):
    ctx = make_ctx()  # running: it holds its data directory
    data = str(ctx.settings.data_dir)
    assert not ctx.accounts.has_accounts()
    assert run("--data-dir", data, "user", "add", "boss", "--role", "admin", "--password-stdin",
               stdin="first-password\n") == (0, "Created admin boss.\n")
    assert run("--data-dir", data, "user", "add", "mia", "--password-stdin", stdin="mia-password\n")[0] == 0
    assert ctx.accounts.authenticate("boss", "first-password") == Actor("boss", "admin")
    assert run("--data-dir", data, "user", "list") == (0, "boss\tadmin\tenabled\nmia\tmember\tenabled\n")
    assert run("--data-dir", data, "user", "passwd", "boss", "--password-stdin", stdin="second-password\n")[0] == 0
    assert ctx.accounts.authenticate("boss", "first-password") is None
    assert ctx.accounts.authenticate("boss", "second-password") == Actor("boss", "admin")
    capsys.readouterr()
    for argv, stdin, said in [(("user", "add", "boss"), "another-password", "already a user 'boss'"),
                              (("user", "add", "neo"), "short", "too short"),
                              (("user", "add", "local"), "long-enough", "reserved"),
                              (("user", "passwd", "ghost"), "long-enough", "no user 'ghost'")]:
        assert run("--data-dir", data, *argv, "--password-stdin", stdin=stdin)[0] == 1, argv
        assert said in capsys.readouterr().err, argv


def test_a_missing_database_is_refused_not_created(tmp_path):
    with pytest.raises(SystemExit) as refused:
        run("--data-dir", str(tmp_path / "nowhere"), "user", "list")
    assert "There is no studio database" in str(refused.value)
    assert not (tmp_path / "nowhere").exists()


def test_it_runs_as_a_module_with_the_studios_environment(make_ctx):
    ctx = make_ctx(auth=("root", "root-password"))
    env = {**os.environ, "STUDIO_DATA_DIR": str(ctx.settings.data_dir)}
    done = subprocess.run([sys.executable, "-m", "studio.cli", "user", "list"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "root\tadmin\tenabled\n", done.stderr
