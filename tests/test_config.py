"""The studio's options: declared once (studio/config.py), documented in the README, read from the command line
and STUDIO_* variables (the command line wins), auth kept out of `ps`, exposure narrowing what may be read."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from studio.config import PROJECT_ROOT, Settings, build_parser, options, parse_settings, shown_default

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `(--[\w-]+)(?: [^`]*)?` \| `(\w+)` \| (.*?) \| (.*?) \|$", re.M)
DOCUMENTED = {flag: (env, default, text) for flag, env, default, text in
              ROW.findall(README.split("| Option | Environment | Default | |")[1].split("\n\n")[0])}
OPTIONS = options()


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_the_readme_documents_every_option_as_declared(name):
    option = OPTIONS[name]
    assert option.flag in DOCUMENTED, f"add `{option.flag}` to the README's options table"
    assert DOCUMENTED[option.flag] == (option.env, shown_default(name), option.help)


def test_the_readme_documents_no_option_that_does_not_exist():
    assert set(DOCUMENTED) == {o.flag for o in OPTIONS.values()}


def test_help_lists_every_option_with_its_variable_and_default():
    text = build_parser().format_help()
    for name, option in OPTIONS.items():
        assert option.flag in text and option.env in text, name
    assert "(default: 127.0.0.1) [STUDIO_HOST]" in " ".join(text.split())


def test_defaults():
    s = parse_settings([], environ={})
    assert (s.host, s.port, s.device, s.dtype) == ("127.0.0.1", 7860, "auto", "auto")
    assert s.data_dir == PROJECT_ROOT / "adapters_db" and s.registry_path == PROJECT_ROOT / "registry.yaml"
    assert s.registry_path.is_file()
    assert s.model is None and s.share is False and s.auth is None and s.load_at_start is True
    assert s.tmp_dir == s.data_dir / "tmp"


# (option, environment value, command line, value from the environment, value when both are given)
PRECEDENCE = [
    ("host", "0.0.0.0", ["--host", "::1"], "0.0.0.0", "::1"),
    ("port", "9000", ["--port", "9100"], 9000, 9100),
    ("data_dir", "/tmp/x", ["--data-dir", "/tmp/y"], Path("/tmp/x"), Path("/tmp/y")),
    ("registry_path", "r.yaml", ["--registry", "s.yaml"], Path("r.yaml"), Path("s.yaml")),
    ("model", "studio-tiny", ["--model", "musicgen-small"], "studio-tiny", "musicgen-small"),
    ("eval_model", "studio-tiny-clap", ["--eval-model", "clap-music"], "studio-tiny-clap", "clap-music"),
    ("share", "1", ["--share"], True, True),
    ("auth", "a:b", ["--auth", "c:d"], ("a", "b"), ("c", "d")),
    ("database_url", "postgresql://a@h/db", ["--database-url", "sqlite:////tmp/s.db"], "postgresql://a@h/db",
     "sqlite:////tmp/s.db"),
    ("session_hours", "12", ["--session-hours", "0.5"], 12.0, 0.5),
    ("device", "cpu", ["--device", "cuda:1"], "cpu", "cuda:1"),
    ("dtype", "float16", ["--dtype", "bfloat16"], "float16", "bfloat16"),
    ("hf_cache_dir", "/tmp/hf", ["--hf-cache-dir", "/tmp/hf2"], Path("/tmp/hf"), Path("/tmp/hf2")),
    ("import_roots", "/a:/b", ["--import-root", "/c", "--import-root", "/d"], (Path("/a"), Path("/b")),
     (Path("/c"), Path("/d"))),
    ("load_at_start", "1", ["--no-load-at-start"], False, False),
    ("max_queue", "8", ["--max-queue", "100"], 8, 100),
    ("stream_every_s", "2", ["--stream-every", "0.5"], 2.0, 0.5),
    ("fast_path", "1", ["--no-fast-path"], False, False),
    ("custom_models", "1", ["--no-custom-models"], False, False),
    ("workers", "ray:local", ["--workers", "ray:10.0.0.5:6379"], "ray:local", "ray:10.0.0.5:6379"),
    ("ray_replicas", "2", ["--ray-replicas", "4"], 2, 4),
    ("ray_gpus", "0", ["--ray-gpus", "0.5"], 0.0, 0.5),
]


@pytest.mark.parametrize("value,address", [("local", None), ("ray", "auto"), ("ray:auto", "auto"),
                                           ("ray:local", "local"), ("ray:head.lan:6379", "head.lan:6379")])
def test_workers_name_where_generations_decode(value, address):
    assert parse_settings(["--workers", value], environ={}).ray_address == address


@pytest.mark.parametrize("value", ["ray://head:10001", "ray:head", "gpu", "ray:", "ray:a b:1"])
def test_workers_refuse_what_they_cannot_reach(value, capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--workers", value], environ={})
    err = capsys.readouterr().err
    assert "--workers" in err and "Traceback" not in err
    if value.startswith("ray://"):  # Ray Client addresses: says what to give instead
        assert "ray:HOST:6379" in err


@pytest.mark.parametrize("value,share,load_at_start", [
    ("1", True, False), ("true", True, False), ("YES", True, False), ("on", True, False),
    ("0", False, True), ("false", False, True), ("no", False, True), ("off", False, True),
])
def test_switches_in_the_environment(value, share, load_at_start):
    s = parse_settings([], environ={"STUDIO_SHARE": value, "STUDIO_NO_LOAD_AT_START": value})
    assert (s.share, s.load_at_start) == (share, load_at_start)


def test_precedence_covers_every_option_but_the_auth_file():
    assert {case[0] for case in PRECEDENCE} == set(OPTIONS) - {"auth_file"}


@pytest.mark.parametrize("name,env_value,argv,from_env,from_both", PRECEDENCE, ids=[c[0] for c in PRECEDENCE])
def test_environment_then_command_line(name, env_value, argv, from_env, from_both):
    env = {OPTIONS[name].env: env_value}
    assert getattr(parse_settings([], environ=env), name) == from_env
    assert getattr(parse_settings(argv, environ=env), name) == from_both  # the command line wins


@pytest.mark.parametrize("argv,env,message", [
    (["--auth", "nopassword"], {}, "--auth (STUDIO_AUTH): must look like USER:PASS"),
    (["--auth", ":p"], {}, "must look like USER:PASS"),
    ([], {"STUDIO_AUTH": "u:"}, "must look like USER:PASS"),
    (["--port", "http"], {}, "--port (STUDIO_PORT)"),
    (["--port", "70000"], {}, "--port (STUDIO_PORT)"),
    (["--dtype", "int4"], {}, "--dtype (STUDIO_DTYPE)"),
    (["--device", "gpu"], {}, "--device (STUDIO_DEVICE)"),
    ([], {"STUDIO_SHARE": "maybe"}, "STUDIO_SHARE='maybe': expected 1, true, yes or on (or 0, false, no, off)"),
    ([], {"STUDIO_NO_LOAD_AT_START": "2"}, "STUDIO_NO_LOAD_AT_START='2': expected 1, true"),
    (["--unknown"], {}, "unrecognized arguments: --unknown"),
    (["--data", "/tmp/x"], {}, "unrecognized arguments: --data"),  # no abbreviations: only the documented flags
])
def test_bad_values_exit_with_a_usage_line_naming_the_option(argv, env, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv, environ=env)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def _auth_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "auth"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_auth_from_a_file_keeps_the_password_out_of_the_command_line(tmp_path):
    path = _auth_file(tmp_path, "alice:s3cret:with-colon\n")
    assert parse_settings(["--auth-file", str(path)], environ={}).auth == ("alice", "s3cret:with-colon")
    assert parse_settings([], environ={"STUDIO_AUTH_FILE": str(path)}).auth == ("alice", "s3cret:with-colon")
    # A file named on the command line replaces STUDIO_AUTH, and --auth replaces STUDIO_AUTH_FILE.
    assert parse_settings(["--auth-file", str(path)], environ={"STUDIO_AUTH": "bob:x"}).auth[0] == "alice"
    assert parse_settings(["--auth", "bob:x"], environ={"STUDIO_AUTH_FILE": str(path)}).auth == ("bob", "x")


@pytest.mark.parametrize("text,mode,message", [
    ("alice:secret\n", 0o644, "can be read by other users of this machine: run chmod 600"),
    ("alice:secret\n", 0o640, "can be read by other users of this machine: run chmod 600"),
    ("alice\n", 0o600, "must look like USER:PASS"),
    ("alice:a\nbob:b\n", 0o600, "must hold one line USER:PASS"),
    ("", 0o600, "must hold one line USER:PASS"),
    (None, 0o600, "cannot read --auth-file"),
])
def test_bad_auth_files_are_refused(tmp_path, text, mode, message, capsys):
    path = _auth_file(tmp_path, text, mode) if text is not None else tmp_path / "missing"
    with pytest.raises(SystemExit):
        parse_settings(["--auth-file", str(path)], environ={})
    assert message in capsys.readouterr().err


def test_the_password_never_shows_in_the_settings_repr():
    s = parse_settings(["--auth", "alice:s3cret"], environ={})
    assert s.auth == ("alice", "s3cret") and "s3cret" not in repr(s) and "s3cret" not in str(s)


def test_auth_and_auth_file_together_are_refused(tmp_path, capsys):
    path = _auth_file(tmp_path, "alice:secret")
    with pytest.raises(SystemExit):
        parse_settings(["--auth", "a:b", "--auth-file", str(path)], environ={})
    assert "not both" in capsys.readouterr().err


@pytest.mark.parametrize("host,share,exposed", [
    ("127.0.0.1", False, False), ("localhost", False, False), ("::1", False, False),
    ("127.0.0.1", True, True), ("0.0.0.0", False, True), ("192.168.1.20", False, True),
])
def test_only_a_studio_private_to_this_machine_may_read_the_home_folder(tmp_path, host, share, exposed):
    s = Settings(data_dir=tmp_path, host=host, share=share)
    assert s.exposed is exposed
    assert (Path.home().resolve() in s.allowed_import_roots) is (not exposed)
    assert (tmp_path / "imports").resolve() in s.allowed_import_roots


def test_a_hugging_face_space_serves_the_network_unless_told_otherwise():
    assert parse_settings([], environ={"SPACE_ID": "me/studio"}).host == "0.0.0.0"
    assert parse_settings(["--host", "127.0.0.1"], environ={"SPACE_ID": "me/studio"}).host == "127.0.0.1"


def test_settings_built_in_code_ignore_the_environment(monkeypatch, tmp_path):
    """Tests and benchmarks construct Settings directly: a developer's STUDIO_* must not leak into them."""
    monkeypatch.setenv("STUDIO_PORT", "1234")
    monkeypatch.setenv("STUDIO_AUTH", "a:b")
    s = Settings(data_dir=tmp_path)
    assert s.port == 7860 and s.auth is None
