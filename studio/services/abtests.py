"""Blind A/B tests: two sides (the base model or an adapter version, plus optional setting overrides) on one base
model, every (prompt, seed) generated for both with the same seed and settings apart from the side's own, the two
clips of each pair loudness-matched for listening, presented blind in a random order per listener, voted on, and
judged with an exact sign test (studio.services.stats.sign_test).

Blinding: before a listener has voted on every pair (or a person closed the test), nothing this service returns to
a listener says which side a clip is: no field, no URL (clips are addressed by test, pair and the listener's own
slot, 'first' or 'second'), no file name (random tokens), no size (both clips of a pair are WAV files of the same
length and format), no order (pairs and first/second are shuffled per listener by an HMAC of the test's secret,
stable for that listener). Votes are final: a changed vote after a reveal would no longer be blind, and the reveal
happens only once the listener has voted on every pair (never pair by pair: knowing one pair's sides would teach the
sound of a side for the next pairs).

Generation goes through the job queue like anyone's: a feeder thread per test submits a few pairs at a time (A and B
of a pair next to each other, so the worker decodes them in one batch), leaves half of --max-queue to people, and
follows each job's end through JobEvents without holding a database session while the model decodes. After a restart
resume() takes the tests that were generating up again: jobs the queue resumed are followed, interrupted ones are
generated again, and a pair that cannot be made fails the test with the reason (POST .../resume tries again).
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import threading
import time
import unicodedata
from collections import deque
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import soundfile as sf
from pydantic import BaseModel, ConfigDict, Field

from studio.db.abtests import (create_test, delete_test, get_test, jobs_of, list_tests, lock_test, pairs_of,
                               tests_with_status, votes_of)
from studio.db.engine import session_scope
from studio.db.evaluation import scores_of
from studio.db.jobs import get_job
from studio.db.models import ABPair, ABTest, ABVote, UTCTimestamp, utcnow
from studio.errors import Conflict, InvalidValues, NoModelLoaded, NotFound, QueueFull, StudioError
from studio.gen_settings import MAX_SEED
from studio.services.adapters import AdapterService
from studio.services.audio_out import integrated_loudness, normalize_loudness, write_audio
from studio.services.gen_config import GenerationConfigService
from studio.services.generation import MAX_ID, GenerateRequest, GenerationService, acting_for
from studio.services.queue import JobQueue
from studio.services.stats import SignTest, sign_test
from studio.users import LOCAL_USER

log = logging.getLogger(__name__)

MAX_PROMPTS = 50
MAX_SEEDS_PER_PROMPT = 10
MAX_PAIRS = 100  # 200 clips: a long listening session already
MAX_NAME_CHARS = 100
MAX_LISTENER_CHARS = 60
FOLLOW_POLL_S = 1.0  # how often a feeder waiting for room in the queue looks again
BASE_LABEL = "Base model"
Slot = Literal["first", "second"]
Choice = Literal["first", "second", "none"]
TestStatus = Literal["generating", "ready", "failed", "cancelled"]


# ---- requests ------------------------------------------------------------------------------------------------


class ABSideSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    adapter_id: int | None = Field(None, ge=1, le=MAX_ID, description="an adapter version; none: the base model")
    overrides: dict[str, Any] | None = Field(None, description=(
        "generation settings of this side only, over the test's common settings (validated like a request's)"))


class ABTestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    name: str = Field(description=f"for people, 1-{MAX_NAME_CHARS} characters")
    model_id: str | None = Field(None, description=(
        "the base model both sides run on: the model the next job runs on (none: that model)"))
    side_a: ABSideSpec
    side_b: ABSideSpec
    prompts: list[str] = Field(description=f"1-{MAX_PROMPTS} prompts")
    seeds_per_prompt: int = Field(1, ge=1, le=MAX_SEEDS_PER_PROMPT, description="pairs made from each prompt")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description=(
        "the first seed (then +1, +2, ... for each prompt's next seeds); none: random"))
    duration_s: float | None = Field(None, description="seconds per clip; none: the model's default_duration_s")
    settings: dict[str, Any] | None = Field(None, description="settings common to both sides (over the stored ones)")


# ---- answers -------------------------------------------------------------------------------------------------


class ABSideInfo(BaseModel):
    side: Literal["A", "B"]
    adapter_id: int | None
    label: str = Field(description="the adapter version ('name vN') or 'Base model', with the overrides")
    overrides: dict[str, Any]
    mean_scores: dict[str, float] = Field(description="scorer -> mean automatic score of this side's clips")
    scored_clips: dict[str, int] = Field(description="scorer -> clips scored")


class ListenerResult(BaseModel):
    listener: str
    votes: int
    test: SignTest


class RawVote(BaseModel):
    """One vote as recorded: the side preferred (what the listener's first/second meant), for recomputing by hand."""
    pair: int
    prompt: str
    seed: int
    listener: str
    choice: Literal["a", "b", "none"]


class ABResults(BaseModel):
    side_a: ABSideInfo
    side_b: ABSideInfo
    overall: SignTest
    verdict: str = Field(description="the verdict as a sentence, with the sides' names")
    listeners: list[ListenerResult]
    votes: list[RawVote] = Field(description="every vote, by pair then listener")


class ABTestSummary(BaseModel):
    id: int
    name: str
    model_id: str
    status: TestStatus
    error: str | None
    pairs: int
    clips_ready: int = Field(description="pairs whose two loudness-matched clips are ready")
    listeners: int
    votes: int
    closed: bool
    created_by: str
    created_at: UTCTimestamp


class ABTestView(ABTestSummary):
    prompts: list[str]
    seeds_per_prompt: int
    duration_s: float
    votes_per_listener: dict[str, int]
    your_votes: int | None = Field(description="this listener's votes (none: no listener given)")
    revealed: bool = Field(description="results are shown: the test is closed, or this listener voted on every pair")
    results: ABResults | None
    closed_at: UTCTimestamp | None


class BlindPair(BaseModel):
    """A pair as a listener gets it: nothing here says which clip is which side."""
    pair: int = Field(description="the pair's number in the test (1, 2, ...)")
    index: int = Field(description="its place in this listener's order (1 = first)")
    total: int
    prompt: str
    duration_s: float
    first_url: str
    second_url: str


class NextPair(BaseModel):
    test_id: int
    listener: str
    voted: int
    total: int
    done: bool = Field(description=("no pair left for this listener: they voted on every pair, or the test is closed; "
                                    "either way the results are revealed to them"))
    pair: BlindPair | None
    message: str


class VoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    pair: int = Field(ge=1, le=MAX_PAIRS, description="the pair's number (BlindPair.pair)")
    choice: Choice = Field(description="the clip preferred: first, second, or none (no preference)")
    listener: str | None = Field(None, description="without --auth: the listener's name (with --auth: the user)")


class VoteResult(BaseModel):
    pair: int
    choice: Choice
    next: NextPair


# ---- helpers -------------------------------------------------------------------------------------------------


def _refuse(field: str, message: str, code: str, **extra) -> InvalidValues:
    return InvalidValues(message, code=code, errors=[{"field": field, "message": message}], **extra)


def check_listener(name: str | None) -> str:
    """A listener's name: required, 1-60 characters of text (no control characters), NFC, trimmed."""
    text = unicodedata.normalize("NFC", (name or "")).strip()
    if not text:
        raise _refuse("listener", "Say who is listening: a listener name is required.", "listener_required")
    if len(text) > MAX_LISTENER_CHARS:
        raise _refuse("listener", f"The listener name is {len(text)} characters long; the limit is "
                                  f"{MAX_LISTENER_CHARS}.", "invalid_listener")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Cf", "Zl", "Zp") for ch in text):
        raise _refuse("listener", "The listener name holds a control or invisible character.", "invalid_listener")
    return text


def _keyed(secret: str, *parts: object) -> bytes:
    return hmac.new(secret.encode(), "\x1f".join(map(str, parts)).encode(), hashlib.sha256).digest()


def listener_order(secret: str, listener: str, pair_ids: list[int]) -> list[int]:
    """This listener's order of the pairs: random, the same on every call, independent between listeners."""
    return sorted(pair_ids, key=lambda pid: _keyed(secret, "order", listener, pid))


def first_is_b(secret: str, listener: str, pair_id: int) -> bool:
    """Whether this listener hears side B first on this pair (a fair coin per listener and pair, stable)."""
    return bool(_keyed(secret, "flip", listener, pair_id)[0] & 1)


def clip_url(test_id: int, pair: int, slot: Slot, listener: str | None) -> str:
    from urllib.parse import quote

    query = f"?listener={quote(listener, safe='')}" if listener else ""
    return f"/api/abtests/{test_id}/pairs/{pair}/{slot}{query}"


def _side_label(adapter_label: str | None, overrides: dict) -> str:
    base = adapter_label or BASE_LABEL
    if overrides:
        base += " (" + ", ".join(f"{k}={v}" for k, v in overrides.items()) + ")"
    return base


def _prefixed(exc: InvalidValues, prefix: str) -> InvalidValues:
    """The same refusal, its fields named from the A/B request's root (side_a.overrides.top_k)."""
    errors = [{**e, "field": f"{prefix}.{e['field']}" if e.get("field") not in (None, "settings")
               else prefix} for e in exc.extra.get("errors", [])]
    return InvalidValues(f"{prefix}: {exc.message}", code=exc.code,
                         **{**{k: v for k, v in exc.extra.items() if k != "errors"}, "errors": errors})


class _Stop(Exception):
    """The feeder stops: the test was cancelled or deleted, or the studio closes."""


# ---- the service ---------------------------------------------------------------------------------------------


class ABTestService:
    def __init__(self, engine, generation: GenerationService, queue: JobQueue, adapters: AdapterService,
                 configs: GenerationConfigService, data_dir: Path, *, auth: bool = False):
        self.engine, self.generation, self.queue = engine, generation, queue
        self.adapters, self.configs = adapters, configs
        self.registry = queue.registry
        self.data_dir = Path(data_dir)
        self.clips_dir = self.data_dir / "abtests"
        self.auth = auth
        self._lock = threading.Lock()  # guards _feeders, _stopping, _pair_ready
        self._feeders: dict[int, threading.Thread] = {}
        self._stopping: set[int] = set()
        self._closed = False
        self._pair_ready: list[Callable[[int, list[int]], None]] = []

    def on_pair_ready(self, callback: Callable[[int, list[int]], None]) -> None:
        """callback(test_id, [job_a_id, job_b_id]) once a pair's clips are ready (e.g. to score them); called on
        the test's feeder thread, outside any database session. Its errors are logged, never the test's."""
        with self._lock:
            self._pair_ready.append(callback)

    # ---- creating ----------------------------------------------------------------------------------------
    def create(self, req: ABTestCreate, user: str = LOCAL_USER) -> ABTestView:
        name = " ".join(req.name.split())
        if not name:
            raise _refuse("name", "Give the test a name.", "empty_name")
        if len(name) > MAX_NAME_CHARS:
            raise _refuse("name", f"The name is {len(name)} characters long; the limit is {MAX_NAME_CHARS}.",
                          "name_too_long")
        if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
            raise _refuse("name", "The name holds a control character or a lone surrogate.", "invalid_name")
        if not req.prompts:
            raise _refuse("prompts", "Give at least one prompt.", "no_prompts")
        if len(req.prompts) > MAX_PROMPTS:
            raise _refuse("prompts", f"{len(req.prompts)} prompts; the limit is {MAX_PROMPTS}.", "too_many_prompts")
        pairs_n = len(req.prompts) * req.seeds_per_prompt
        if pairs_n > MAX_PAIRS:
            raise _refuse("seeds_per_prompt", f"{len(req.prompts)} prompts x {req.seeds_per_prompt} seeds make "
                                              f"{pairs_n} pairs; the limit is {MAX_PAIRS}.", "too_many_pairs",
                          max_pairs=MAX_PAIRS)
        if self.queue.max_queue < 2:
            raise Conflict(f"The queue holds at most {self.queue.max_queue} job (--max-queue); an A/B test needs "
                           "room for the two clips of a pair: start the studio with --max-queue 2 or more.",
                           code="queue_too_small")
        target = self.queue.target_model()
        if target is None:
            raise NoModelLoaded("No model is loaded. Choose a model in Settings before creating an A/B test.")
        model_id = req.model_id or target
        spec = self.registry.get(model_id)  # NotFound for an unknown model
        if spec.id != target:
            raise Conflict(f"The test is for {spec.display_name}, but the studio runs "
                           f"{self.registry.get(target).display_name}: switch to {spec.display_name} first.",
                           code="model_not_loaded", model_id=spec.id)
        # The common settings are resolved once, now: every pair runs with the same ones even if the model's stored
        # settings change while the test generates.
        try:
            common = self.configs.resolve(spec, req.settings)
        except InvalidValues as exc:
            raise _prefixed(exc, "settings") from None
        duration = req.duration_s if req.duration_s is not None else common.default_duration_s
        prompts = []
        for i, prompt in enumerate(req.prompts):
            for side, field in ((req.side_a, "side_a"), (req.side_b, "side_b")):
                try:  # the exact check a generation gets: prompt, duration, settings, adapter
                    self.generation.plan(GenerateRequest(prompt=prompt, duration_s=duration, seed=0,
                                                         settings={**common.model_dump(), **(side.overrides or {})},
                                                         adapter_id=side.adapter_id), acting_for(user))
                except InvalidValues as exc:
                    fields = {e.get("field") for e in exc.extra.get("errors", [])}
                    if fields & {"prompt"}:
                        raise _refuse(f"prompts.{i}", f"Prompt {i + 1}: {exc.message}", exc.code) from None
                    if fields & {"duration_s"}:
                        raise _refuse("duration_s", exc.message, exc.code) from None
                    raise _prefixed(exc, f"{field}.overrides") from None
                except NotFound as exc:
                    raise type(exc)(f"{field}: {exc.message}", code=exc.code, **exc.extra) from None
                except StudioError as exc:
                    if exc.code.startswith("adapter"):
                        raise type(exc)(f"{field}: {exc.message}", code=exc.code, **exc.extra) from None
                    raise
            prompts.append(prompt.strip())
        first = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED + 1)
        pairs = [(prompt, (first + j) % (MAX_SEED + 1)) for prompt in prompts for j in range(req.seeds_per_prompt)]
        test = ABTest(name=name, model_id=spec.id, prompts=prompts, seeds_per_prompt=req.seeds_per_prompt,
                      duration_s=float(duration), settings=common.model_dump(), secret=secrets.token_hex(32),
                      side_a={"adapter_id": req.side_a.adapter_id, "overrides": dict(req.side_a.overrides or {})},
                      side_b={"adapter_id": req.side_b.adapter_id, "overrides": dict(req.side_b.overrides or {})},
                      created_by=user, runner=self.queue.runner)
        with session_scope(self.engine) as session:
            test = create_test(session, test, pairs)
        self._start(test.id)
        return self.get(test.id)

    # ---- generating --------------------------------------------------------------------------------------
    def resume(self) -> list[int]:
        """After a restart (after the job queue resumed its jobs): take up the tests that were generating."""
        with session_scope(self.engine) as session:
            ids = [t.id for t in tests_with_status(session, "generating", self.queue.runner)]  # this studio's
        for test_id in ids:
            self._start(test_id)
        return ids

    def retry(self, test_id: int) -> ABTestView:
        """Generate what is missing of a failed (or cancelled) test again."""
        with session_scope(self.engine) as session:
            test = self._test(session, test_id)
            if test.status in ("generating", "ready"):
                raise Conflict(f"A/B test {test_id} is {test.status}: nothing to resume.", code="test_not_failed")
            if test.closed_at is not None:
                raise Conflict(f"A/B test {test_id} is closed.", code="test_closed")
            test.status, test.error, test.runner = "generating", None, self.queue.runner  # generated here now
            session.add(test)
            session.commit()
        self._start(test_id)
        return self.get(test_id)

    def _start(self, test_id: int) -> None:
        with self._lock:
            if self._closed or (test_id in self._feeders and self._feeders[test_id].is_alive()):
                return
            self._stopping.discard(test_id)
            thread = threading.Thread(target=self._feed, args=(test_id,), name=f"abtest-{test_id}", daemon=True)
            self._feeders[test_id] = thread
        thread.start()

    def _stopped(self, test_id: int) -> bool:
        with self._lock:
            return self._closed or test_id in self._stopping

    def _window(self, model_id: str) -> int:
        """Pairs of a test in the queue at once: two batches' worth (one decoding, one waiting)."""
        return max(1, self.registry.get(model_id).max_batch)

    def _room(self, wanted_pairs: int) -> int:
        """How many pairs may be queued now: the test leaves half of --max-queue to people (and always fits one
        pair in an empty queue)."""
        pending = self.queue.worker.pending_jobs()
        free = (self.queue.max_queue - self.queue.max_queue // 2) - pending
        if pending == 0:
            free = max(free, 2)
        return max(0, min(wanted_pairs, free // 2))

    def _feed(self, test_id: int) -> None:
        try:
            self._generate(test_id)
        except _Stop:
            return
        except Exception as exc:  # noqa: BLE001 - the test says why it stopped, never stays 'generating' silently
            if self._stopped(test_id):  # the studio closing (or the test stopped) under the feeder: not a failure,
                return  # the test stays as it was and resume() takes it up at the next start
            if not isinstance(exc, StudioError):
                log.exception("A/B test %s: generation failed", test_id)
            self._fail(test_id, exc.message if isinstance(exc, StudioError) else f"Generation failed: {exc}")
        finally:
            with self._lock:
                if self._feeders.get(test_id) is threading.current_thread():
                    self._feeders.pop(test_id, None)

    def _generate(self, test_id: int) -> None:
        with session_scope(self.engine) as session:
            test = self._test(session, test_id)
            todo = deque(p for p in pairs_of(session, test_id) if p.clip_a is None or p.clip_b is None)
        window = self._window(test.model_id)
        inflight: deque[ABPair] = deque()
        while todo or inflight:
            if self._stopped(test_id):
                raise _Stop
            fresh: list[ABPair] = []
            while todo and len(inflight) + len(fresh) < window:
                pair = todo[0]
                state = self._jobs_state(pair)
                if state == "usable":  # queued by the studio (resumed after a restart), running or done
                    inflight.append(todo.popleft())
                    continue
                if len(fresh) >= self._room(window - len(inflight)):
                    break
                fresh.append(todo.popleft())
            if fresh:
                try:
                    self._submit(test, fresh)
                except QueueFull:  # someone else took the room meanwhile: try again shortly
                    todo.extendleft(reversed(fresh))
                    fresh = []
                inflight.extend(fresh)
            if not inflight:
                time.sleep(FOLLOW_POLL_S)
                continue
            pair = inflight.popleft()
            outcome = self._follow(pair)
            if outcome == "succeeded":
                self._make_clips(test, pair)
            elif outcome == "again":  # interrupted by a restart, or lost: the pair is generated again
                pair.job_a_id = pair.job_b_id = None
                todo.appendleft(pair)
            else:
                if self._stopped(test_id):
                    raise _Stop
                for other in inflight:
                    for job_id in (other.job_a_id, other.job_b_id):
                        if job_id is not None:
                            self.queue.cancel(job_id)
                raise Conflict(f"Pair {pair.position + 1} could not be generated: {outcome}", code="pair_failed")
        with session_scope(self.engine) as session:
            test = self._test(session, test_id)
            if test.status == "generating":
                test.status, test.error = "ready", None
                session.add(test)
                session.commit()

    def _jobs_state(self, pair: ABPair) -> Literal["usable", "new"]:
        if pair.job_a_id is None or pair.job_b_id is None:
            return "new"
        with session_scope(self.engine) as session:
            jobs = [get_job(session, pair.job_a_id), get_job(session, pair.job_b_id)]
        for job in jobs:
            if job is None or job.status in ("interrupted", "failed", "cancelled"):
                return "new"
            if job.status in ("queued", "running") and not self.generation.events.known(job.id):
                return "new"  # recorded as queued, but no studio runs it (its resumption failed)
        return "usable"

    def _submit(self, test: ABTest, pairs: list[ABPair]) -> None:
        """Queue the pairs' jobs in one go: A and B of each pair next to each other (decoded in one batch)."""
        plans = []
        for pair in pairs:
            for side in (test.side_a, test.side_b):
                req = GenerateRequest(prompt=pair.prompt, duration_s=test.duration_s, seed=pair.seed,
                                      settings={**test.settings, **(side.get("overrides") or {})},
                                      adapter_id=side.get("adapter_id"))
                plan = self.generation.plan(req, acting_for(test.created_by))[0]
                if plan.model_id != test.model_id:
                    now, mine = (self.registry.get(m).display_name for m in (plan.model_id, test.model_id))
                    raise Conflict(f"The studio now runs {now}; this test is for {mine}: switch back to it and "
                                   "resume the test.", code="model_not_loaded")
                plans.append(plan)
        try:
            ids = self.queue.accept([dataclasses.replace(p, abtest_id=test.id) for p in plans])
        except Conflict as exc:
            if exc.code != "model_changed":
                raise
            now = exc.extra.get("model_id")
            now = self.registry.get(now).display_name if now else "no model"
            raise Conflict(f"The studio now runs {now}; this test is for "
                           f"{self.registry.get(test.model_id).display_name}: switch back to it and resume the test.",
                           code="model_not_loaded") from None
        with session_scope(self.engine) as session:
            for i, pair in enumerate(pairs):
                row = session.get(ABPair, pair.id)
                row.job_a_id, row.job_b_id = ids[2 * i], ids[2 * i + 1]
                pair.job_a_id, pair.job_b_id = row.job_a_id, row.job_b_id
                session.add(row)
            session.commit()

    def _follow(self, pair: ABPair) -> str:
        """Wait (no database session held) for both jobs of the pair: 'succeeded', 'again', or why it failed."""
        for job_id in (pair.job_a_id, pair.job_b_id):
            for item in self.generation.follow(job_id, keepalive_s=FOLLOW_POLL_S):
                if item is None and self._stopped(pair.abtest_id):  # the studio closes: the job stays queued
                    raise _Stop
        with session_scope(self.engine) as session:
            jobs = [get_job(session, pair.job_a_id), get_job(session, pair.job_b_id)]
        if all(j is not None and j.status == "succeeded" for j in jobs):
            return "succeeded"
        if any(j is None or j.status in ("interrupted", "queued", "running") for j in jobs):
            return "again"
        bad = next(j for j in jobs if j.status != "succeeded")
        return bad.error or bad.status

    def _make_clips(self, test: ABTest, pair: ABPair) -> None:
        """Copies of the pair's two clips at the same integrated loudness (the quieter one's), with the true peak
        under the ceiling, as WAV files of the same length, format and channels, under random names."""
        with session_scope(self.engine) as session:
            jobs = [get_job(session, pair.job_a_id), get_job(session, pair.job_b_id)]
        audio, rates = [], []
        for job in jobs:
            data, rate = sf.read(self.data_dir / job.output_file, dtype="float32", always_2d=True)
            audio.append(data)
            rates.append(rate)
        if rates[0] != rates[1]:
            raise Conflict(f"Pair {pair.position + 1}: the clips have different sample rates.", code="pair_failed")
        matched = match_loudness(audio[0], audio[1], rates[0])
        folder = self.clips_dir / str(test.id)
        names = [f"{secrets.token_hex(16)}.wav" for _ in matched]
        paths = [write_audio(folder / name, clip, rates[0], "wav") for name, clip in zip(names, matched)]
        now = time.time()
        for path in paths:
            os.utime(path, (now, now))  # the same times: a file's age says nothing about its side
        try:
            with session_scope(self.engine) as session:
                row = session.get(ABPair, pair.id)
                t = get_test(session, test.id)
                if row is None or t is None or t.status != "generating":
                    raise _Stop
                row.clip_a, row.clip_b = (p.relative_to(self.data_dir).as_posix() for p in paths)
                session.add(row)
                session.commit()
        except BaseException:
            for path in paths:
                path.unlink(missing_ok=True)
            raise
        with self._lock:
            callbacks = list(self._pair_ready)
        for callback in callbacks:
            try:
                callback(test.id, [pair.job_a_id, pair.job_b_id])
            except Exception:  # noqa: BLE001 - a scorer's trouble is not the test's
                log.exception("A/B test %s: a pair-ready callback failed", test.id)

    def _fail(self, test_id: int, message: str) -> None:
        with session_scope(self.engine) as session:
            test = get_test(session, test_id)
            if test is not None and test.status == "generating":
                test.status, test.error = "failed", message
                session.add(test)
                session.commit()

    def cancel(self, test_id: int) -> ABTestView:
        """Stop generating: the test's waiting and running jobs are cancelled; the pairs made so far stay."""
        with session_scope(self.engine) as session:
            test = self._test(session, test_id)
            if test.status != "generating":
                raise Conflict(f"A/B test {test_id} is {test.status}, not generating.", code="test_not_generating")
            test.status, test.error = "cancelled", "Cancelled."
            session.add(test)
            session.commit()
        self._stop(test_id)
        return self.get(test_id)

    def _stop(self, test_id: int) -> None:
        """Stop the test's feeder and cancel its jobs (those it queues while stopping too)."""
        with self._lock:
            self._stopping.add(test_id)
            thread = self._feeders.get(test_id)
        deadline = time.monotonic() + 30
        while True:
            with session_scope(self.engine) as session:
                job_ids = [j.id for j in jobs_of(session, test_id) if j.status in ("queued", "running")]
            waiting = [job_id for job_id in job_ids if self.queue.cancel(job_id) is not None]
            feeding = thread is not None and thread is not threading.current_thread() and thread.is_alive()
            if not feeding and not waiting:  # the feeder is gone and no job of the test is still in the queue
                return
            if time.monotonic() > deadline:
                log.warning("A/B test %s: its feeder or jobs did not stop within 30 s", test_id)
                return
            if feeding:
                thread.join(timeout=0.2)
            else:
                time.sleep(0.05)  # a running job stops at its next decoding step

    def close(self) -> None:
        """The studio stops: feeders stop at their next step (the jobs stay queued; resume() takes them up)."""
        with self._lock:
            self._closed = True

    # ---- deleting ----------------------------------------------------------------------------------------
    def delete(self, test_id: int) -> None:
        """The test, its votes, pairs, clip jobs (and their scores and ratings) and every file they had."""
        with session_scope(self.engine) as session:
            self._test(session, test_id)
        self._stop(test_id)
        with session_scope(self.engine) as session:
            test = self._test(session, test_id)
            files = [f for j in jobs_of(session, test_id) for f in (j.output_file, j.codes_file) if f]
            delete_test(session, test)
        for rel in files:
            (self.data_dir / rel).unlink(missing_ok=True)
        shutil.rmtree(self.clips_dir / str(test_id), ignore_errors=True)

    # ---- reading -----------------------------------------------------------------------------------------
    def _test(self, session, test_id: int) -> ABTest:
        test = get_test(session, test_id)
        if test is None:
            raise NotFound(f"There is no A/B test {test_id}.", code="abtest_not_found", abtest_id=test_id)
        return test

    def _summary_fields(self, test: ABTest, pairs: list[ABPair], votes: list[ABVote]) -> dict:
        return dict(id=test.id, name=test.name, model_id=test.model_id, status=test.status, error=test.error,
                    pairs=len(pairs), clips_ready=sum(p.clip_a is not None and p.clip_b is not None for p in pairs),
                    listeners=len({v.listener for v in votes}), votes=len(votes), closed=test.closed_at is not None,
                    created_by=test.created_by, created_at=test.created_at)

    def list(self, limit: int = 50, offset: int = 0) -> list[ABTestSummary]:
        """Tests, newest first, with their progress (never their sides)."""
        out = []
        with session_scope(self.engine) as session:
            for test in list_tests(session, limit, offset):
                out.append(ABTestSummary(**self._summary_fields(test, pairs_of(session, test.id),
                                                                votes_of(session, test.id))))
        return out

    def get(self, test_id: int, listener: str | None = None) -> ABTestView:
        """Progress (clips ready, votes per listener); the results once revealed: the test is closed, or this
        listener voted on every pair."""
        if listener is not None:
            listener = check_listener(listener)
        with session_scope(self.engine) as session:
            test = self._test(session, test_id)
            pairs = pairs_of(session, test_id)
            votes = votes_of(session, test_id)
            per: dict[str, int] = {}
            for v in votes:
                per[v.listener] = per.get(v.listener, 0) + 1
            mine = per.get(listener, 0) if listener is not None else None
            revealed = test.closed_at is not None or (mine is not None and mine == len(pairs) and len(pairs) > 0)
            results = self._results(session, test, pairs, votes) if revealed else None
        return ABTestView(**self._summary_fields(test, pairs, votes), prompts=test.prompts,
                          seeds_per_prompt=test.seeds_per_prompt, duration_s=test.duration_s,
                          votes_per_listener=dict(sorted(per.items())), your_votes=mine, revealed=revealed,
                          results=results, closed_at=test.closed_at)

    def results(self, test_id: int) -> ABResults:
        """The results whatever the reveal (for the studio's own figures, e.g. an adapter's A/B record; never for
        a listener)."""
        with session_scope(self.engine) as session:
            test = self._test(session, test_id)
            return self._results(session, test, pairs_of(session, test_id), votes_of(session, test_id))

    def _results(self, session, test: ABTest, pairs: list[ABPair], votes: list[ABVote]) -> ABResults:
        def counts(vs: list[ABVote]) -> SignTest:
            return sign_test(sum(v.choice == "a" for v in vs), sum(v.choice == "b" for v in vs),
                             sum(v.choice == "none" for v in vs))

        overall = counts(votes)
        by_listener: dict[str, list[ABVote]] = {}
        for v in votes:
            by_listener.setdefault(v.listener, []).append(v)
        sides = []
        for letter, side, attr in (("A", test.side_a, "job_a_id"), ("B", test.side_b, "job_b_id")):
            job_ids = [getattr(p, attr) for p in pairs if getattr(p, attr) is not None and p.clip_a is not None]
            per_scorer: dict[str, list[float]] = {}
            for s in scores_of(session, job_ids):
                per_scorer.setdefault(s.scorer, []).append(s.value)
            overrides = side.get("overrides") or {}
            sides.append(ABSideInfo(side=letter, adapter_id=side.get("adapter_id"), overrides=overrides,
                                    label=_side_label(self.adapters.label(side.get("adapter_id")), overrides),
                                    mean_scores={k: sum(v) / len(v) for k, v in per_scorer.items()},
                                    scored_clips={k: len(v) for k, v in per_scorer.items()}))
        by_pair = {p.id: p for p in pairs}
        raw = sorted((RawVote(pair=by_pair[v.pair_id].position + 1, prompt=by_pair[v.pair_id].prompt,
                              seed=by_pair[v.pair_id].seed, listener=v.listener, choice=v.choice)
                      for v in votes if v.pair_id in by_pair), key=lambda r: (r.pair, r.listener))
        return ABResults(side_a=sides[0], side_b=sides[1], overall=overall,
                         verdict=verdict_sentence(overall, sides[0].label, sides[1].label),
                         listeners=[ListenerResult(listener=name, votes=len(vs), test=counts(vs))
                                    for name, vs in sorted(by_listener.items())], votes=raw)

    # ---- listening ---------------------------------------------------------------------------------------
    def _listening(self, session, test_id: int, listener: str) -> tuple[ABTest, list[ABPair], dict[int, ABVote]]:
        test = self._test(session, test_id)
        if test.status != "ready":
            what = {"generating": "its clips are still being generated",
                    "failed": f"its generation failed ({test.error})",
                    "cancelled": "its generation was cancelled"}.get(test.status, test.status)
            raise Conflict(f"A/B test {test_id} cannot be listened to yet: {what}.", code="test_not_ready",
                           status=test.status)
        pairs = pairs_of(session, test_id)
        mine = {v.pair_id: v for v in votes_of(session, test_id, listener)}
        return test, pairs, mine

    def _next(self, test: ABTest, pairs: list[ABPair], mine: dict[int, ABVote], listener: str,
              url_listener: str | None) -> NextPair:
        order = listener_order(test.secret, listener, [p.id for p in pairs])
        by_id = {p.id: p for p in pairs}
        total = len(order)
        if test.closed_at is not None:  # no pair to vote on: a vote would be refused
            return NextPair(test_id=test.id, listener=listener, voted=len(mine), total=total, done=True, pair=None,
                            message=f"The test is closed: it takes no more votes (you voted on {len(mine)} of "
                                    f"{total} pairs). Its results are revealed to everyone.")
        for index, pair_id in enumerate(order, start=1):
            if pair_id in mine:
                continue
            pair = by_id[pair_id]
            number = pair.position + 1
            blind = BlindPair(pair=number, index=index, total=total, prompt=pair.prompt, duration_s=test.duration_s,
                              first_url=clip_url(test.id, number, "first", url_listener),
                              second_url=clip_url(test.id, number, "second", url_listener))
            return NextPair(test_id=test.id, listener=listener, voted=len(mine), total=total, done=False, pair=blind,
                            message=f"Pair {index} of {total}.")
        return NextPair(test_id=test.id, listener=listener, voted=len(mine), total=total, done=True, pair=None,
                        message=f"You voted on all {total} pairs: the results are revealed to you.")

    def next_pair(self, test_id: int, listener: str) -> NextPair:
        """The next pair this listener has not voted on, in their own order; done once they voted on all."""
        listener = check_listener(listener)
        with session_scope(self.engine) as session:  # a read: no lock (votes and closes lock the test)
            test, pairs, mine = self._listening(session, test_id, listener)
        return self._next(test, pairs, mine, listener, None if self.auth else listener)

    def clip(self, test_id: int, pair: int, slot: Slot, listener: str) -> Path:
        """The loudness-matched clip this listener hears in `slot` of pair number `pair`."""
        listener = check_listener(listener)
        with session_scope(self.engine) as session:
            test, pairs, _ = self._listening(session, test_id, listener)
        row = next((p for p in pairs if p.position + 1 == pair), None)
        if row is None:
            raise NotFound(f"A/B test {test_id} has no pair {pair}.", code="pair_not_found", pair=pair)
        b_first = first_is_b(test.secret, listener, row.id)
        rel = row.clip_b if (slot == "first") == b_first else row.clip_a
        path = (self.data_dir / rel).resolve() if rel else None
        if path is None or not path.is_file() or not path.is_relative_to(self.clips_dir.resolve()):
            raise NotFound(f"The clip of pair {pair} is missing.", code="clip_not_found", pair=pair)
        return path

    def vote(self, test_id: int, listener: str, pair: int, choice: Choice) -> VoteResult:
        """Record this listener's vote on a pair (first/second are this listener's slots; stored as the side).
        Votes are final: a second vote on the same pair is refused."""
        listener = check_listener(listener)
        with session_scope(self.engine) as session:
            lock_test(session, test_id)  # a close cannot commit between the check below and this vote
            test, pairs, mine = self._listening(session, test_id, listener)
            if test.closed_at is not None:
                raise Conflict(f"A/B test {test_id} is closed: it takes no more votes.", code="test_closed")
            row = next((p for p in pairs if p.position + 1 == pair), None)
            if row is None:
                raise NotFound(f"A/B test {test_id} has no pair {pair}.", code="pair_not_found", pair=pair)
            if row.id in mine:
                raise Conflict(f"You already voted on pair {pair}; votes are final (the vote stays blind).",
                               code="already_voted", pair=pair)
            side = "none"
            if choice != "none":
                side = "b" if (choice == "first") == first_is_b(test.secret, listener, row.id) else "a"
            vote = ABVote(abtest_id=test.id, pair_id=row.id, listener=listener, choice=side)
            session.add(vote)
            try:
                session.commit()
            except Exception as exc:  # the unique (pair, listener): a vote sent twice at once
                from sqlalchemy.exc import IntegrityError

                if not isinstance(exc, IntegrityError):
                    raise
                raise Conflict(f"You already voted on pair {pair}; votes are final.", code="already_voted",
                               pair=pair) from None
            mine[row.id] = vote
        return VoteResult(pair=pair, choice=choice,
                          next=self._next(test, pairs, mine, listener, None if self.auth else listener))

    def close_test(self, test_id: int) -> ABTestView:
        """Close the test and reveal its results to everyone (it takes no more votes)."""
        with session_scope(self.engine) as session:
            lock_test(session, test_id)  # after the votes being recorded, before any later one
            test = self._test(session, test_id)
            if test.status == "generating":
                raise Conflict(f"A/B test {test_id} is still generating: cancel it first, or wait.",
                               code="test_generating")
            if test.closed_at is None:
                test.closed_at = utcnow()
                session.add(test)
                session.commit()
        return self.get(test_id)


def match_loudness(a: np.ndarray, b: np.ndarray, sample_rate: int) -> list[np.ndarray]:
    """Two (samples, channels) clips as the same length and channels, at the same integrated loudness: the quieter
    one's, so the louder is only turned down (BS.1770 measurement, the true-peak limiter keeps both under the
    ceiling). Clips whose loudness is undefined (silence, under 0.4 s) are left at their level."""
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    channels = max(a.shape[1], b.shape[1])
    a, b = (np.repeat(x, channels, axis=1) if x.shape[1] != channels else x for x in (a, b))
    levels = [integrated_loudness(x, sample_rate) for x in (a, b)]
    if any(level is None for level in levels):
        return [a.astype(np.float32), b.astype(np.float32)]
    target = min(levels)
    return [normalize_loudness(x, sample_rate, target) for x in (a, b)]


def verdict_sentence(test: SignTest, label_a: str, label_b: str) -> str:
    """stats' summary with the sides named."""
    return f"{test.summary} (A = {label_a}; B = {label_b}.)"
