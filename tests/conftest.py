"""Fixtures: a full studio context in a temp directory with the tiny model and a test registry.

Never the user's data directory, never the network (hub tests use the fake hub on 127.0.0.1).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# One CPU thread per test process (and the studios and trainers it starts): the tiny models gain nothing from more,
# and CI's two cores run two xdist workers, so two threads each meant four OpenMP threads on two cores spinning at
# every barrier of every op: a 40-frame decode took 2-20 times as long as on one thread (8.5 s instead of 0.4 s on
# a loaded machine). Tests of the thread policy itself set their own counts.
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

# torch is already imported by pytest's plugins, so OpenMP read the environment before this file: set the count
# torch gives every thread on its first parallel op (the studio's worker, switch and server threads too).
torch.set_num_threads(1)

from studio.config import Settings  # noqa: E402
from studio.context import AppContext, build_context  # noqa: E402
from studio.registry import Registry, parse_registry  # noqa: E402
from studio.runtime.tiny import build_tiny_model  # noqa: E402

# TestClient's default host "testserver" is not a loopback name, which a studio bound to 127.0.0.1 refuses
# (DNS rebinding): reach it as a browser on this machine would.
LOCAL = "http://127.0.0.1"

TINY = {
    "id": "studio-tiny", "display_name": "Studio Tiny", "backend": "transformers", "source": {"builtin": "studio-tiny"},
    "parameters": 740798, "sample_rate": 32000, "channels": 1, "frame_rate": 50, "max_duration_s": 30,
    "memory_gb": 0.1, "generation": {"top_k": 250, "top_p": 0.0, "temperature": 1.0, "guidance_scale": 3.0},
}

# Evaluation models of the test registry: studio-tiny-clap (built here), and 'tiny-clap-hub', its copy on the fake
# hub, which is the default evaluation model: not downloaded, so a test studio has no evaluation model unless asked
TINY_CLAP = {"id": "studio-tiny-clap", "display_name": "Studio Tiny CLAP", "kind": "clap",
             "source": {"builtin": "studio-tiny-clap"}, "parameters": 11845, "sample_rate": 48000, "memory_gb": 0.1}


def registry_dict(**extra_models) -> dict:
    """The test registry: studio-tiny, a hub copy of it ('tiny-hub', served by the fake hub), a model too big
    for any machine ('huge'), and any extra entries given as id=overrides of TINY."""
    models = [dict(TINY),
              {**TINY, "id": "tiny-hub", "display_name": "Tiny Hub", "source": {"hub": "test-org/tiny-musicgen"},
               "max_duration_s": 8, "download_gb": 0.01},
              {**TINY, "id": "huge", "display_name": "Huge Model", "source": {"hub": "test-org/huge"},
               "memory_gb": 100000}]
    for model_id, overrides in extra_models.items():
        models.append({**TINY, "id": model_id, "display_name": model_id, **overrides})
    return {"default_model": "studio-tiny", "models": models, "default_evaluation_model": "tiny-clap-hub",
            "evaluation_models": [dict(TINY_CLAP), {**TINY_CLAP, "id": "tiny-clap-hub", "display_name": "Tiny CLAP Hub",
                                                    "source": {"hub": "test-org/tiny-clap"}, "download_gb": 0.001}]}


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """studio-tiny built once per test session; each context gets a copy."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-build") / "studio-tiny")


def _context_factory(root: Path, tiny_folder: Path):
    """make(registry=None, **settings overrides) -> a context in its own data dir under root; and what it made."""
    made: list[AppContext] = []

    def make(registry: Registry | dict | None = None, **overrides) -> AppContext:
        data_dir = overrides.pop("data_dir", root / f"data{len(made)}")
        (data_dir / "models").mkdir(parents=True, exist_ok=True)
        if not (data_dir / "models" / "studio-tiny").exists():
            shutil.copytree(tiny_folder, data_dir / "models" / "studio-tiny")
        overrides.setdefault("hf_cache_dir", root / "hf-cache")
        settings = Settings(data_dir=data_dir, load_at_start=False, device="cpu", **overrides)
        reg = registry if isinstance(registry, Registry) else parse_registry(registry or registry_dict())
        ctx = build_context(settings, reg)
        made.append(ctx)
        return ctx

    return make, made


# ---- the databases: SQLite (the default) and a throwaway PostgreSQL server (tests/postgres.py) -----------------
DATABASES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server per test process, started when a test first asks for it."""
    from tests.postgres import PostgresServer, binaries, unavailable

    bindir = binaries()
    if bindir is None:
        unavailable("PostgreSQL is not installed (no initdb/pg_ctl): apt-get install postgresql")
    server = PostgresServer(bindir)
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - said once, as a skip (or a failure where PostgreSQL is required)
        server.stop()
        unavailable(f"a PostgreSQL server could not be started: {exc}")
    yield server
    server.stop()


def _database_url(request) -> str | None:
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_server").create_database()


@pytest.fixture(params=DATABASES)
def db_url(request) -> str | None:
    """Each database in turn: None (SQLite in the data directory) or a fresh PostgreSQL database at the newest
    schema. A test (or a module, with usefixtures) that asks for it gets its make_ctx contexts on that database."""
    return _database_url(request)


@pytest.fixture(scope="module", params=DATABASES)
def module_db_url(request) -> str | None:
    """db_url for make_module_ctx: one database per module and database kind."""
    return _database_url(request)


@pytest.fixture(params=DATABASES)
def engine_url(request, tmp_path) -> str:
    """Each database in turn, EMPTY (no table yet): a SQLite file in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studio.db'}"
    return request.getfixturevalue("postgres_server").create_database(migrated=False)


def _with_database(make, url: str | None):
    def on_database(registry=None, **overrides):
        if url is not None:
            overrides.setdefault("database_url", url)
        return make(registry, **overrides)

    return on_database


@pytest.fixture
def make_ctx(request, tmp_path, tiny_folder):
    """Factory: a context in its own temp data dir. Keyword args override Settings fields. On the test's db_url
    when it asks for one (contexts of one test share that database, as studios sharing a server do)."""
    make, made = _context_factory(tmp_path, tiny_folder)
    if "db_url" in request.fixturenames:
        make = _with_database(make, request.getfixturevalue("db_url"))
    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture(scope="module")
def make_module_ctx(tmp_path_factory, tiny_folder):
    """make_ctx for a whole module: contexts shared by tests that change nothing (tables of refusals, which
    assert that nothing changed) or that each make their own records."""
    make, made = _context_factory(tmp_path_factory.mktemp("module"), tiny_folder)
    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture(scope="module")
def make_module_db_ctx(module_db_url, tmp_path_factory, tiny_folder):
    """make_module_ctx on each database in turn (the module's tests run once per database)."""
    make, made = _context_factory(tmp_path_factory.mktemp("module"), tiny_folder)
    make = _with_database(make, module_db_url)
    yield make
    for ctx in made:
        ctx.close()


def rest_client(ctx: AppContext):
    """A TestClient on the REST API alone (no page: building it costs a second that REST tests do not need)."""
    from fastapi.testclient import TestClient

    from studio.server import build_api

    return TestClient(build_api(ctx, load_model=False), base_url=LOCAL)


@pytest.fixture
def ctx(make_ctx) -> AppContext:
    """A context with studio-tiny loaded."""
    context = make_ctx()
    final = context.manager.switch_and_wait("studio-tiny")
    assert final.stage == "ready", final.message
    return context


@pytest.fixture
def client(ctx):
    """The REST API of a studio with studio-tiny loaded."""
    with rest_client(ctx) as c:
        yield c


@pytest.fixture(scope="module")
def shared_client(make_module_ctx):
    """The REST API of one studio (studio-tiny loaded) shared by a module's tables of refusals."""
    context = make_module_ctx()
    assert context.manager.switch_and_wait("studio-tiny").stage == "ready"
    with rest_client(context) as c:
        c.ctx = context
        yield c


@pytest.fixture
def browser():
    """Debian's Chromium through Playwright (browser tests skip themselves when either is missing)."""
    from playwright.sync_api import sync_playwright

    from tests.live import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


# ---- History: jobs recorded as if generated (no decoding), for tests of filters, ratings and visibility --------
def seed_history(ctx: AppContext) -> dict[str, int]:
    """Records straight into the database: a live adapter 'lofi v1' and a deleted 'gone v1'; an A/B test and an
    evaluation run; jobs, oldest first (ids by name): piano (alice, no adapter, 2 s, rated 5 by alice and 3 by bob),
    drone (bob, lofi, 5 s, rated 2 by alice), jazz (local, gone, 1 s, on tiny-hub), failed (alice, 3 s), waiting
    (queued, 4 s), and two clips that History never lists by default: ab (of the A/B test) and eval (of the run).
    Succeeded jobs get small real files (audio and codes) in outputs/."""
    from datetime import datetime, timedelta, timezone

    import numpy as np

    from studio.db.adapters import add_adapter
    from studio.db.engine import session_scope
    from studio.db.models import ABTest, Adapter, Evaluation, Job, Rating, Score
    from studio.services.audio_out import write_audio

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    outputs = ctx.settings.data_dir / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    ids: dict[str, int] = {}
    with session_scope(ctx.engine) as s:
        live = add_adapter(s, Adapter(name="lofi", version=1, base_model="studio-tiny", path="adapters/lofi-v1",
                                      source="test"))
        gone = add_adapter(s, Adapter(name="gone", version=1, base_model="studio-tiny", path="adapters/gone-v1",
                                      source="test", deleted_at=t0))
        ab = ABTest(name="blind", model_id="studio-tiny", prompts=["ab piano"], seeds_per_prompt=1, duration_s=1,
                    secret="s")
        ev = Evaluation(model_id="studio-tiny", scorer="clap-tiny", duration_s=1)
        s.add_all([ab, ev])
        s.commit()
        rows = [("piano", "Lo-Fi piano 50% beat", "studio-tiny", None, "succeeded", 2.0, "alice", {}),
                ("drone", "dark_ambient drone", "studio-tiny", live.id, "succeeded", 5.0, "bob", {}),
                ("jazz", "Jazz trio at the Café", "tiny-hub", gone.id, "succeeded", 1.0, "local", {}),
                ("failed", "noise that failed", "studio-tiny", None, "failed", 3.0, "alice", {}),
                ("waiting", "still waiting", "studio-tiny", None, "queued", 4.0, "local", {}),
                ("ab", "ab piano secret", "studio-tiny", None, "succeeded", 1.0, "local", {"abtest_id": ab.id}),
                ("eval", "eval piano", "studio-tiny", None, "succeeded", 1.0, "local", {"evaluation_id": ev.id})]
        for i, (name, prompt, model, adapter, status, duration, who, extra) in enumerate(rows):
            job = Job(prompt=prompt, model_id=model, settings={"top_k": 250, "temperature": 1.0}, seed=100 + i,
                      duration_s=duration, sample_rate=32000, status=status, submitted_by=who, adapter_id=adapter,
                      created_at=t0 + timedelta(minutes=i), **extra)
            if status == "succeeded":
                job.started_at, job.finished_at, job.elapsed_s = t0 + timedelta(minutes=i, seconds=1), \
                    t0 + timedelta(minutes=i, seconds=3), 2.0
            s.add(job)
            s.commit()
            s.refresh(job)
            ids[name] = job.id
            if status == "succeeded":
                audio = write_audio(outputs / f"{name}_job{job.id}.wav", np.zeros((3200, 1), np.float32), 32000,
                                    "wav")
                codes = outputs / f"{name}_job{job.id}.codes.safetensors"
                codes.write_bytes(b"codes")
                job.output_file = audio.relative_to(ctx.settings.data_dir).as_posix()
                job.codes_file = codes.relative_to(ctx.settings.data_dir).as_posix()
                s.add(job)
        s.add_all([Rating(job_id=ids["piano"], user="alice", stars=5), Rating(job_id=ids["piano"], user="bob", stars=3),
                   Rating(job_id=ids["drone"], user="alice", stars=2),
                   Score(job_id=ids["piano"], scorer="clap-tiny", value=0.25)])
        s.commit()
    ids.update(lofi=live.id, gone=gone.id, abtest=ab.id, evaluation=ev.id)
    return ids


SEEDED_JOBS = ("piano", "drone", "jazz", "failed", "waiting", "ab", "eval")  # seed_history's jobs (other ids: records)


def job_names(ids: dict[str, int]) -> dict[int, str]:
    """{job id: its name in seed_history} (the adapter, test and evaluation ids left out: they may be equal)."""
    return {ids[name]: name for name in SEEDED_JOBS}


# The longest files first (measured, longest first): `--dist loadfile --no-loadscope-reorder` hands whole files to
# the workers in collection order as they free up, so a long file handed out last runs alone at the end while the
# other worker sits idle (xdist's default order, most tests first, put the one-test browser files there). Files not
# listed keep their order after these; a file's own tests keep theirs.
LONGEST_FIRST = (
    "ui/test_browser_training.py", "ui/test_browser_adapters.py", "ui/test_browser.py", "ui/test_browser_queue.py",
    "ui/test_browser_datasets.py", "ui/test_browser_history.py", "services/test_training_recovery.py",
    "ui/test_browser_gen_config.py", "ui/test_page_inputs_browser.py", "ui/test_browser_abtests.py", "test_app.py",
    "training/test_run.py", "runtime/test_manager.py", "runtime/test_decode.py", "services/test_adapters.py",
    "ui/test_gradio_client.py", "api/test_fuzz.py", "ui/test_browser_metrics.py", "api/test_browser_login.py",
    "ui/test_browser_evaluation.py", "training/test_trainer.py", "services/test_training_runs.py",
    "ui/test_browser_longform.py", "ui/test_browser_custom_models.py", "ui/test_browser_melody.py",
    "ui/test_browser_stacks.py", "runtime/test_longform.py", "api/test_longform.py", "runtime/test_stacks.py",
    "runtime/test_melody_decode.py", "services/test_custom_models.py",
)


def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).parent
    rank = {(tests / name).resolve(): i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(item.fspath).resolve(), len(rank)))  # stable: the rest keep order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A browser test that fails (a page waiting for the studio) reports where every thread of the studio it
    drives was at that moment (its fixtures are still up): the evidence a flaky failure on CI needs."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and item.get_closest_marker("browser"):
        import faulthandler
        import tempfile

        with tempfile.TemporaryFile("w+") as f:
            faulthandler.dump_traceback(f, all_threads=True)
            f.seek(0)
            report.sections.append(("threads at the failure", f.read()))
