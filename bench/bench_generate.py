"""Benchmark: generation through the studio's REST API vs a direct model.generate() on the same loaded model.

Run from the repo root:  python bench/bench_generate.py [--runs 7] [--durations 2 8] [--no-backend]

The real app (studio.server.build_app) is served by uvicorn in a thread on 127.0.0.1 (free port) with a context
in a temporary data dir and studio-tiny loaded on CPU. For each duration the paths run interleaved (the order
flips every round) after one warm-up of each, with the same prompt, seed and number of decoding steps:

  direct: processor(text=[prompt]) + model.generate(do_sample=True, max_new_tokens=tokens_for(duration),
          top_k=250, guidance_scale=3.0) under torch.inference_mode, holding the manager's lock (manager.use()).
  studio: POST /api/generate {"prompt", "duration_s", "seed"}; wall time of the whole HTTP request (validation,
          job row, decoding with the per-step hook, WAV written, job finished, JSON answer).
  backend (diagnostic, --no-backend skips it): the studio's TransformersMusicgen.generate called in-process,
          i.e. the studio's own code on the model without HTTP, database or WAV, to tell where overhead sits.

Prints the median of each and `generate overhead ratio (studio API / direct) = X.XX (goal <= 1.10)`.
Timings are only printed, never asserted: the machine is noisy, read the ratio of one run.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/x.py` from the repo root

import httpx  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402

from studio.config import Settings  # noqa: E402
from studio.context import build_context  # noqa: E402
from studio.registry import parse_registry  # noqa: E402
from studio.runtime.backend import SamplingParams  # noqa: E402
from studio.server import build_app  # noqa: E402

GOAL = 1.10
PROMPT = "calm lofi piano beat"
SEED = 1234
TINY = {
    "id": "studio-tiny", "display_name": "Studio Tiny", "backend": "transformers", "source": {"builtin": "studio-tiny"},
    "parameters": 740798, "sample_rate": 32000, "channels": 1, "frame_rate": 50, "max_duration_s": 30,
    "memory_gb": 0.1, "generation": {"top_k": 250, "top_p": 0.0, "temperature": 1.0, "guidance_scale": 3.0},
}


class ServerThread:
    """uvicorn serving `app` in a daemon thread on a socket bound to a free port of 127.0.0.1."""

    def __init__(self, app):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this whole process: the server runs in it too."""
    t = os.times()
    return t.user + t.system


CPU: dict[str, list[float]] = {}  # path -> CPU seconds of each measured run


def _record_cpu(path: str, since: float) -> None:
    CPU.setdefault(path, []).append(cpu_seconds() - since)


def time_direct(ctx, duration_s: float) -> tuple[float, int]:
    """Seconds for processor + generate on the studio's loaded model, and the audio samples produced."""
    with ctx.manager.use("benchmark (direct generate)") as loaded:
        model, processor = loaded.model, loaded.processor
        tokens = loaded.tokens_for(duration_s)
        cpu0, started = cpu_seconds(), time.perf_counter()
        inputs = processor(text=[PROMPT], padding=True, return_tensors="pt").to(loaded.device)
        torch.manual_seed(SEED)
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=True, max_new_tokens=tokens, top_k=250, guidance_scale=3.0)
        elapsed = time.perf_counter() - started
        _record_cpu("direct", cpu0)
    return elapsed, int(out.shape[-1])


def time_studio(client: httpx.Client, duration_s: float) -> tuple[float, float]:
    """Wall seconds of POST /api/generate, and the elapsed_s the studio reports for its own generation."""
    cpu0, started = cpu_seconds(), time.perf_counter()
    r = client.post("/api/generate", json={"prompt": PROMPT, "duration_s": duration_s, "seed": SEED})
    elapsed = time.perf_counter() - started
    _record_cpu("studio", cpu0)
    if r.status_code != 200:
        raise RuntimeError(f"POST /api/generate answered {r.status_code}: {r.text[:500]}")
    return elapsed, float(r.json()["elapsed_s"])


def time_backend(ctx, duration_s: float) -> float:
    """Seconds for the studio's own TransformersMusicgen.generate (per-step hook, trimming) without HTTP/DB/WAV."""
    with ctx.manager.use("benchmark (backend generate)") as loaded:
        g = ctx.gen_config.settings_for(loaded.spec)  # the stored settings, as the REST request uses
        params = SamplingParams(g.do_sample, g.top_k, g.top_p, g.temperature, g.guidance_scale)
        cpu0, started = cpu_seconds(), time.perf_counter()
        loaded.generate(PROMPT, duration_s, params, SEED, on_step=lambda done, total: None,
                        should_stop=ctx.manager.should_stop)
        elapsed = time.perf_counter() - started
        _record_cpu("backend", cpu0)
        return elapsed


def bench_duration(ctx, client: httpx.Client, duration_s: float, runs: int, with_backend: bool) -> float:
    with ctx.manager.use("benchmark") as loaded:
        tokens = loaded.tokens_for(duration_s)
    print(f"\n-- {duration_s:g} s of audio: {tokens} decoding steps, {runs} runs per path after 1 warm-up each")
    time_direct(ctx, duration_s)  # warm-ups (first calls pay for lazy inits and allocator growth)
    time_studio(client, duration_s)
    if with_backend:
        time_backend(ctx, duration_s)
    CPU.clear()  # warm-ups do not count
    direct, studio, inner, backend, samples = [], [], [], [], 0
    for i in range(runs):
        # Interleaved, with the order flipped every round so that neither path always runs first.
        def run_direct():
            nonlocal samples
            d, samples = time_direct(ctx, duration_s)
            direct.append(d)

        def run_studio():
            s, e = time_studio(client, duration_s)
            studio.append(s)
            inner.append(e)

        steps = [run_direct, run_studio] if i % 2 == 0 else [run_studio, run_direct]
        if with_backend:
            steps.insert(1, lambda: backend.append(time_backend(ctx, duration_s)))
        for step in steps:
            step()
        extra = f"   backend.generate {backend[-1]:7.3f} s" if with_backend else ""
        print(f"  run {i + 1}: direct {direct[-1]:7.3f} s   studio API {studio[-1]:7.3f} s "
              f"(studio's own elapsed_s {inner[-1]:.3f} s){extra}   pair ratio {studio[-1] / direct[-1]:.3f}")
    md, ms, me = statistics.median(direct), statistics.median(studio), statistics.median(inner)
    ratio = ms / md
    pair = statistics.median(s / d for s, d in zip(studio, direct))
    print(f"  direct output: {samples} samples; median direct {md:.3f} s ({md / tokens * 1000:.1f} ms/step), "
          f"median studio API {ms:.3f} s (generation inside: {me:.3f} s, HTTP+JSON+rest: {ms - me:.3f} s)")
    if with_backend:
        mb = statistics.median(backend)
        print(f"  median backend.generate (studio code on the model, no HTTP/DB/WAV) {mb:.3f} s: "
              f"backend / direct = {mb / md:.2f}, studio API / backend = {ms / mb:.2f}")
    print(f"  median of pair ratios: {pair:.3f}; ratio of the fastest runs (min studio / min direct): "
          f"{min(studio) / min(direct):.3f}")
    cpu = {k: statistics.median(v) for k, v in CPU.items()}
    print("  process CPU seconds per run (median; less sensitive to other load than wall time): "
          + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items())
          + f"; CPU ratio studio API / direct = {cpu['studio'] / cpu['direct']:.2f}")
    verdict = "OK" if ratio <= GOAL else "ABOVE GOAL"
    print(f"generate overhead ratio (studio API / direct) at {duration_s:g} s = {ratio:.2f} (goal <= {GOAL:.2f}) "
          f"[{verdict}]")
    return ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="measured runs per path and duration (default 7)")
    p.add_argument("--durations", type=float, nargs="+", default=[2.0, 8.0], help="seconds of audio (default 2 8)")
    p.add_argument("--no-backend", dest="with_backend", action="store_false",
                   help="skip the diagnostic third path (the studio's backend.generate called directly)")
    args = p.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
          f"cuda available: {torch.cuda.is_available()}; device cpu, model studio-tiny")
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", hf_cache_dir=Path(tmp) / "hf-cache", load_at_start=False,
                            device="cpu")
        ctx = build_context(settings, parse_registry({"default_model": "studio-tiny", "models": [TINY]}))
        started = time.perf_counter()
        final = ctx.manager.switch_and_wait("studio-tiny")
        if final.stage != "ready":
            raise SystemExit(f"could not load studio-tiny: {final.message}")
        print(f"studio-tiny built and loaded in {time.perf_counter() - started:.1f} s")
        app = build_app(ctx, load_model=False)
        ratios = {}
        try:
            with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=600) as client:
                print(f"studio serving on {server.url}")
                cpu0 = cpu_seconds()
                time.sleep(2.0)
                print(f"idle studio process with the server up: {(cpu_seconds() - cpu0) / 2.0:.1%} of a core "
                      f"(background work that every generation in this process shares)")
                for duration in args.durations:
                    ratios[duration] = bench_duration(ctx, client, duration, args.runs, args.with_backend)
        finally:
            ctx.engine.dispose()
    print("\nSUMMARY")
    for duration, ratio in ratios.items():
        print(f"generate overhead ratio (studio API / direct) = {ratio:.2f} (goal <= {GOAL:.2f}) "
              f"[studio-tiny, {duration:g} s, median of {args.runs}]")


if __name__ == "__main__":
    main()
