"""`python -m studio.training.run <run folder>`: one start of a training run, in its own process.

Reads spec.json (layout.RunSpec), takes its share of the machine (CPU: config.threads, 0 = half the cores, at a lower
OS priority so generation keeps the rest), trains, and reports only through the run folder (events.jsonl,
checkpoints/). Stop: the `stop` file or SIGTERM (a checkpoint is saved first). Exit status: 0 when the run succeeded
or stopped, 1 when it failed (its done event says why), 2 when the folder or spec could not be read at all.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from studio.training.config import cpu_threads

CPU_NICENESS = 10  # below the studio's own priority: generation is what a person waits for


def take_share(device: str, threads: int) -> None:
    import torch

    if not device.startswith("cuda"):
        try:
            os.nice(CPU_NICENESS)
        except OSError:  # not permitted here: train at normal priority rather than not at all
            pass
    torch.set_num_threads(cpu_threads(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (parallel work ran before)
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m studio.training.run <run folder>", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    if not folder.is_dir():
        print(f"{folder} is not a run folder", file=sys.stderr)
        return 2

    from pydantic import ValidationError

    from studio.training import layout

    events = folder / layout.EVENTS_FILE
    try:
        spec = layout.RunSpec.model_validate_json((folder / layout.SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, ValidationError) as exc:
        message = f"The run's spec.json could not be used: {exc}"
        print(message, file=sys.stderr)
        layout.append_event(events, layout.DoneEvent(status="failed", step=0, code="bad_spec", message=message[:2000],
                                                     time=time.time()))
        return 1

    signalled = []
    signal.signal(signal.SIGTERM, lambda *_: signalled.append(True))  # like the stop file: save, then end
    # The studio that started this trainer died (kill -9, a crash): it is re-parented, so save a checkpoint and end
    # rather than train on unwatched; the studio's next start resumes the run from that checkpoint.
    parent = os.getppid()

    def stop_requested() -> bool:
        return bool(signalled) or (parent != 1 and os.getppid() != parent)
    take_share(spec.device, spec.config.threads)

    from studio.training.trainer import Trainer

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    done = Trainer(folder, spec, stop_requested=stop_requested, log=log).run()
    print(f"{done.status}: {done.message}", flush=True)
    return 1 if done.status == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
