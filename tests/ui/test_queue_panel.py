"""The queue panel's table and the Generate tab's status texts, without a browser: a person reads where their job
stands in their own words (place, ETA, seconds of music), user text is shown as written, nothing is hidden; the panel
asks for the jobs the person may see, with the User filter that admins alone are shown."""
from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest

from studio.services.generation import GenerationResult
from studio.services.job_events import AudioChunk, JobEvent
from studio.services.queue import QueueItem, QueueView
from studio.ui.generate_tab import job_status, pcm16, position_text, result_summary, take_label, takes_problem
from studio.ui.queue_panel import EVERYONE, fmt_eta, queue_markdown, queue_rows, render_queue, shorten, user_dropdown
from studio.users import Actor

NAMES = {"studio-tiny": "Studio Tiny", "tiny-b": "Tiny B"}


def _view(*items: QueueItem, nxt: str = "Generating 1 job(s) with Studio Tiny. Nothing waits.") -> QueueView:
    waiting = sum(i.kind == "generate" and i.state == "queued" for i in items)
    return QueueView(items=list(items), waiting=waiting, max_queue=64, next=nxt)


def _read(markdown: str) -> str:
    """As read on the page: Markdown's escapes resolved (the studio's own bold and code marks dropped)."""
    text = re.sub(r"(?<!\\)(\*\*|`)", "", markdown)
    return html.unescape(text.replace("\\", ""))


RUNNING = QueueItem(kind="generate", state="running", position=0, model_id="studio-tiny", job_id=7,
                    prompt="warm lo-fi piano", submitted_by="ana", eta_s=4.2, fraction=0.5, batch_size=2)
WAITING = QueueItem(kind="generate", state="queued", position=1, model_id="studio-tiny", job_id=8,
                    prompt="fast drums", submitted_by="local", eta_s=12.0)
SWITCH = QueueItem(kind="switch", state="queued", position=2, model_id="tiny-b")


def test_rows_say_place_job_prompt_model_who_state_and_eta():
    rows = queue_rows(_view(RUNNING, WAITING, SWITCH), NAMES.get, mine=[8])
    assert rows[0] == ["▶", "7", "warm lo-fi piano", "Studio Tiny", "ana", "generating 50 % (batch of 2)",
                       "about 4 s"]
    assert rows[1][:2] == ["1", "8"] and rows[1][5:] == ["waiting", "about 12 s"]
    assert "(this page)" in rows[1][4] and "(this page)" not in rows[0][4]  # a person finds their own job
    assert rows[2][1] == "—" and "switch to Tiny B" in rows[2][2] and rows[2][5] == "waiting"


def test_a_job_on_a_gpu_worker_says_which():
    on_ray = RUNNING.model_copy(update={"replica": "8ws21cie", "batch_size": 1})
    assert queue_rows(_view(on_ray), NAMES.get)[0][5] == "generating 50 % on worker 8ws21cie"
    assert queue_rows(_view(RUNNING), NAMES.get)[0][5] == "generating 50 % (batch of 2)"  # in process: no worker


def test_the_table_escapes_user_text_and_ends_with_what_happens_next():
    evil = RUNNING.model_copy(update={"prompt": "a | b <img src=x onerror=alert(1)> **loud** [x](http://e.vil)",
                                      "submitted_by": "<b>mallory</b>"})
    text = queue_markdown(_view(evil, nxt="Idle. Next: generate job 8 with Studio Tiny; 1 task(s) wait."),
                          NAMES.get)
    table_row = text.splitlines()[2]
    assert table_row.count(" | ") == 6  # the prompt's '|' is escaped: no extra cell
    for raw in ("<img", "**loud**", "](http", "<b>"):  # each only escaped: never markup
        assert not re.search(r"(?<!\\)" + re.escape(raw), text), raw
    assert "a | b <img src=x onerror=alert(1)> **loud**" in _read(text)
    assert _read(text).rstrip().endswith("Idle. Next: generate job 8 with Studio Tiny; 1 task(s) wait.")
    assert "0 job(s) waiting, at most 64." in text


def test_an_empty_queue_says_so():
    text = queue_markdown(_view(nxt="Idle. Nothing waits."), NAMES.get)
    assert text.startswith("Nothing runs or waits.") and "Idle. Nothing waits." in text and "|" not in text


@pytest.mark.parametrize("text,limit,shown", [
    ("short", 48, "short"),
    ("a\nprompt  over\tlines", 48, "a prompt over lines"),
    ("x" * 60, 10, "x" * 9 + "…"),
    (None, 48, ""),
])
def test_prompts_are_shortened_to_one_line(text, limit, shown):
    assert shorten(text, limit) == shown


@pytest.mark.parametrize("eta,said", [(None, ""), (0.4, "under a second"), (39.6, "about 40 s"),
                                      (200, "about 3 min")])
def test_eta_in_words(eta, said):
    assert fmt_eta(eta) == said


STATUS = [
    # (case, event, what the page says)
    ("third in the queue", JobEvent(job_id=3, event="queued", status="queued", message="", position=3, eta_s=40),
     "Waiting: number 3 in the queue, ready in about 40 s"),
    ("next, no ETA yet", JobEvent(job_id=3, event="queued", status="queued", message="", position=1),
     "Waiting: next to start"),
    ("running", JobEvent(job_id=3, event="running", status="running", message="", step=100, total=400,
                         fraction=0.25, eta_s=6), "Generating: 2.0 of 8 s (25 %), ready in about 6 s"),
    ("starting", JobEvent(job_id=3, event="running", status="running", message="", step=0), "Starting"),
    ("over", JobEvent(job_id=3, event="succeeded", status="succeeded", message="Done."), ""),
]


@pytest.mark.parametrize("event,said", [s[1:] for s in STATUS], ids=[s[0] for s in STATUS])
def test_job_status_says_place_eta_and_seconds_of_music(event, said):
    text = job_status(event, 8.0)
    assert (said in text) if said else text == ""
    assert "step" not in text  # a musician's words


def test_several_takes_are_said_in_the_status():
    event = JobEvent(job_id=3, event="queued", status="queued", message="", position=2, eta_s=None)
    assert job_status(event, 8.0, takes=3) == "⏳ Waiting: number 2 in the queue (3 takes together)"
    assert position_text(0, None) == "Waiting: about to start"


@pytest.mark.parametrize("value,ok", [(1, True), (4, True), (2.0, True), (0, False), (5, False), (2.5, False),
                                      (None, False), ("2", False), (True, False)])
def test_takes_are_checked_by_the_studio(value, ok):
    problem = takes_problem(value)
    assert (problem is None) is ok
    if problem:
        assert "whole number from 1 to 4" in problem


def test_streamed_chunks_become_int16_for_gradio():
    audio = np.array([[0.0], [0.5], [-1.0], [2.0]], dtype=np.float32)  # (samples, channels); 2.0 clipped
    rate, pcm = pcm16(AudioChunk(job_id=1, seq=0, start_sample=0, sample_rate=32000, audio=audio))
    assert rate == 32000 and pcm.dtype == np.int16 and pcm.shape == (4,)  # mono: one column, flat
    assert pcm.tolist() == [0, 16384, -32767, 32767]
    stereo = pcm16(AudioChunk(1, 1, 4, 32000, np.zeros((3, 2), dtype=np.float32)))[1]
    assert stereo.shape == (3, 2)


def _result(**extra) -> GenerationResult:
    base = dict(job_id=12, model_id="studio-tiny", prompt="p", seed=42, duration_s=8.0, sample_rate=32000,
                settings={}, adapter_id=None, adapter_label=None, output_file=Path("/x/p_job12.wav"), elapsed_s=3.24,
                wait_s=5.01, batch_size=1, submitted_by="local", loudness_lufs=-14.04, true_peak_dbtp=-1.0,
                loudness_note=None)
    return GenerationResult(**{**base, **extra})


def test_the_summary_names_job_model_adapter_seed_loudness_wait_and_batch():
    text = _read(result_summary(_result(), "Studio Tiny"))
    for part in ("Job 12 ", "Studio Tiny", "no adapter (base model)", "8 s at 32 kHz", "WAV", "seed 42",
                 "-14.0 LUFS", "waited 5.0 s", "3.2 s to generate"):
        assert part in text, part
    assert "batch" not in text
    batched = _read(result_summary(_result(batch_size=3, adapter_label="lo*fi* v2"), "Studio Tiny"))
    assert "in a batch of 3" in batched and "adapter lo*fi* v2" in batched
    assert take_label(2, _result()) == "Take 2 · seed 42 · job 12"


class _Queue:
    """A queue service stand-in that answers one view and records who asked, with which filter."""

    def __init__(self, view: QueueView):
        self.asked, self._view = [], view

    def view(self, actor=None, user=None) -> QueueView:
        self.asked.append((actor, user))
        return self._view


class _Jobs:
    def submitters(self, actor) -> list[str]:
        return ["alice", "bob"] if actor.is_admin else [actor.name]


class _Ctx:
    def __init__(self, view: QueueView):
        self.queue, self.jobs = _Queue(view), _Jobs()
        self.registry = type("R", (), {"get": staticmethod(lambda m: type("S", (), {"display_name": m})())})()


@pytest.mark.parametrize("actor, chosen, asked", [
    (Actor("alice", "member"), EVERYONE, None),  # everyone: no filter (the service keeps a member to their own)
    (Actor("root", "admin"), "bob", "bob"),
    (Actor("root", "admin"), None, None),
])
def test_the_panel_asks_the_queue_as_the_person_with_the_user_filter(actor, chosen, asked):
    ctx = _Ctx(_view(QueueItem(kind="generate", state="running", position=0, model_id="studio-tiny", job_id=8,
                               prompt="mine", submitted_by=actor.name)))
    assert "mine" in render_queue(ctx, actor, [8], chosen)
    assert ctx.queue.asked == [(actor, asked)]


def test_the_user_filter_is_shown_to_admins_only_with_the_people_who_generated():
    ctx = _Ctx(_view())
    admin = user_dropdown(ctx, Actor("root", "admin"))
    assert admin.visible is True and admin.choices == [("Everyone", EVERYONE), ("alice", "alice"), ("bob", "bob")]
    assert user_dropdown(ctx, Actor("alice", "member")).visible is False
