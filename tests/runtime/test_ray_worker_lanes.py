"""RayWorker's own logic, with a stand-in for the Serve handle (no cluster: part of the default run): every job is
told how it ended whatever the stream does (ends early, replica lost before or after starting, cancelled while it
waits), a lost replica's unstarted jobs go back once and no more, batches hold one adapter set, and a cancel finds a
job waiting or running, never neither."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-ray.txt")

from ray.exceptions import RayActorError  # noqa: E402
from ray.serve.exceptions import RequestCancelledError  # noqa: E402

from studio.runtime.backend import Row, RowResult, SamplingParams  # noqa: E402
from studio.runtime.ray_worker import RayWorker, adapters_of, multiplexed_id, take_batch  # noqa: E402
from studio.runtime.worker import GenerateTask  # noqa: E402

PARAMS = SamplingParams(do_sample=True, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)


def task(job_id: int, adapter: str | None = None, adapters=()) -> GenerateTask:
    row = Row(f"p{job_id}", 10, job_id, PARAMS, adapter, adapters=tuple(adapters))
    return GenerateTask(job_id, "studio-tiny", row, Path("/x") if adapter else None,
                        stack_folders=tuple(Path("/x") for _ in adapters))


class Listener:
    def __init__(self):
        self.ends: dict[int, tuple] = {}
        self.started_ids: list[int] = []
        self.done = threading.Condition()

    def _end(self, job_id, *what):
        with self.done:
            assert job_id not in self.ends, f"job {job_id} told twice: {self.ends[job_id]} then {what}"
            self.ends[job_id] = what
            self.done.notify_all()

    def wait(self, n: int, timeout: float = 10) -> dict:
        with self.done:
            assert self.done.wait_for(lambda: len(self.ends) >= n, timeout), self.ends
        return self.ends

    def started(self, job_ids, batch_size):
        self.started_ids += job_ids

    def progress(self, *a): ...
    def audio(self, *a): ...
    def switch_progress(self, *a): ...
    def queue_changed(self): ...

    def finished(self, job_id, result):
        self._end(job_id, "finished")

    def failed(self, job_id, code, message):
        self._end(job_id, "failed", code, message)

    def cancelled(self, job_id):
        self._end(job_id, "cancelled")


class Local:
    def submit(self, *t): ...
    def cancel(self, job_id): return None
    def snapshot(self): return []
    def target_model(self): return "studio-tiny"
    def share_cpu(self, n): ...
    def close(self, timeout=None): ...


class Response:
    """A streamed Serve response: `script` yields events; 'block' waits until cancel(); an exception raises."""

    def __init__(self, script):
        self.script, self.cancelled = script, threading.Event()

    def cancel(self):
        self.cancelled.set()

    def __iter__(self):
        for step in self.script:
            if step == "block":
                self.cancelled.wait(10)
                raise RequestCancelledError("cancelled")
            if isinstance(step, BaseException):
                raise step
            yield step


class Handle:
    """What RayWorker calls: options(...).generate.remote(spec, batch) -> a Response from `scripts` in turn."""

    def __init__(self, *scripts):
        self.scripts, self.calls, self.sent = list(scripts), [], threading.Event()
        self.generate = self

    def options(self, **kw):
        self.calls.append(kw["multiplexed_model_id"])
        return self

    def remote(self, spec, batch):
        self.batch = batch
        self.response = Response(self.scripts.pop(0))
        self.sent.set()
        return self.response


def result(frames=10):
    return RowResult(audio=np.zeros((320, 1), np.float32), codes=np.zeros((4, frames), np.int64))


def worker(handle, listener, replicas=1) -> RayWorker:
    return RayWorker(handle, listener, Local(), lambda m: None, replicas=replicas, max_batch=lambda m: 4)


def decoded(*job_ids):
    n = len(job_ids)
    return [("placed", "r1", True), ("started", list(job_ids)), ("plan", [10] * n, 10), ("step", 10, 10),
            ("results", [result() for _ in job_ids])]


def test_a_batch_that_decodes_finishes_each_job():
    listener = Listener()
    w = worker(Handle(decoded(1, 2)), listener)
    w.submit(task(1), task(2))
    assert listener.wait(2) == {1: ("finished",), 2: ("finished",)}
    assert w.stats.placements[0][:3] == ([1, 2], "r1", True)
    w.close()


def test_a_stream_that_ends_before_the_decode_fails_its_jobs_with_the_reason():
    listener = Listener()  # the replica could not load the model: it sends decode_failed alone
    w = worker(Handle([("decode_failed", "model studio-tiny is not on this machine")]), listener)
    w.submit(task(1), task(2))
    ends = listener.wait(2)
    assert ends[1][:2] == ("failed", "generation_failed") and "not on this machine" in ends[1][2]
    w.close()


def test_every_row_cancelled_while_waiting_for_a_replica_ends_cancelled():
    listener = Listener()
    handle = Handle(["block"])
    w = worker(handle, listener)
    w.submit(task(1), task(2))
    assert handle.sent.wait(5)
    assert w.cancel(1) == "running" and not handle.response.cancelled.is_set()  # one row: the batch goes on
    assert w.cancel(2) == "running" and handle.response.cancelled.wait(5)  # the last open row: closed
    assert listener.wait(2) == {1: ("cancelled",), 2: ("cancelled",)}
    w.close()


def test_a_waiting_job_is_cancelled_at_once_and_never_sent():
    listener = Listener()
    handle = Handle(["block"], decoded(3))
    w = worker(handle, listener)
    w.submit(task(1, "a"), task(2, "b"), task(3, "a"))  # 1 and 3 go together (adapter a); 2 waits
    assert handle.sent.wait(5) and [t.job_id for t in handle.batch] == [1, 3]
    assert w.cancel(2) == "queued" and listener.wait(1)[2] == ("cancelled",)
    assert w.cancel(99) is None
    w.close()


def test_a_replica_lost_before_starting_puts_its_jobs_back_once_then_interrupts_them():
    listener = Listener()
    lost = RayActorError()
    w = worker(Handle([lost], [lost]), listener)
    w.submit(task(1), task(2))
    ends = listener.wait(2)
    assert {e[:2] for e in ends.values()} == {("failed", "interrupted")}  # tried twice, then said so
    assert w.stats.lost == 2
    w.close()


def test_a_replica_lost_mid_decode_interrupts_the_started_jobs_and_requeues_the_others():
    listener = Listener()
    mid = [("placed", "r1", False), ("failed", 2, "adapter_load_failed", "bad files"), ("started", [1]),
           ("plan", [10], 10), ("step", 3, 10), RayActorError()]
    w = worker(Handle(mid, decoded(3)), listener)
    w.submit(task(1), task(2), task(3))
    ends = listener.wait(3)
    assert ends[1][:2] == ("failed", "interrupted") and "submit it again" in ends[1][2]
    assert ends[2][:2] == ("failed", "adapter_load_failed")
    assert ends[3] == ("finished",)  # not started on the lost replica: sent again, and decoded
    w.close()


def test_batches_hold_one_adapter_set_and_route_by_it():
    pending = [task(1, "a"), task(2, "b"), task(3, None, [("a", 0.5)]), task(4, "a"), task(5, None, [("a", 0.5)])]
    assert [t.job_id for t in take_batch(pending, lambda m: 4)] == [1, 4]
    assert [t.job_id for t in take_batch(pending[2:], lambda m: 4)] == [3, 5]
    assert take_batch(pending, lambda m: 1) == [pending[0]]
    ids = {multiplexed_id(t) for t in pending}
    assert len(ids) == 3 and multiplexed_id(task(6)) == "studio-tiny|"
    assert adapters_of(multiplexed_id(task(7, None, [("a", 0.5), ("b", 1.25)]))) == ["a", "b"]
    assert multiplexed_id(task(8, None, [("a", 0.5000001)])) != multiplexed_id(task(9, None, [("a", 0.5)]))


def test_the_queue_shows_a_job_running_once_a_replica_has_it_and_names_the_replica():
    listener = Listener()
    handle = Handle(["block"], [("placed", "r7", True), ("started", [2]), ("plan", [10], 10), ("step", 4, 10),
                                "block"])
    w = worker(handle, listener)
    w.submit(task(1))
    assert handle.sent.wait(5)
    [entry] = w.snapshot()  # sent, but Serve has not given it a replica yet
    assert (entry.state, entry.position, entry.replica) == ("queued", 1, None)
    w.cancel(1)
    listener.wait(1)
    handle.sent.clear()
    w.submit(task(2))
    assert handle.sent.wait(5)
    deadline = time.monotonic() + 5
    while (entry := w.snapshot()[0]).state != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (entry.state, entry.replica, entry.done) == ("running", "r7", 4)
    w.cancel(2)
    assert listener.wait(2)[2] == ("cancelled",)
    w.close()
