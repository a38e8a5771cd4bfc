"""The Generate tab's "Continue a clip" input and "Extend this": what a generation continues (an uploaded clip, or
a finished job from its codes), and the duration limits of long pieces (one window, or many)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from studio.context import AppContext
from studio.services.models import ModelInfo
from studio.ui.common import md_escape


@dataclass
class ContinueInput:
    clip: gr.Audio  # a clip to continue (saved as an upload when Generate runs)
    include: gr.Checkbox  # the clip (or the extended job) at the start of the result
    extend_job: gr.State  # "Extend this": the finished job the next Generate continues (None: none)
    extend_note: gr.Markdown  # says which job Generate extends
    clear_btn: gr.Button  # stop extending it


def limit_s(model: ModelInfo) -> float:
    """The longest new music a request may ask of this model: one window, or its extended limit."""
    return model.max_extended_duration_s or model.max_duration_s


def window_count(seconds: float, model: ModelInfo) -> int:
    from studio.runtime.decode import plan_windows

    frames = round(seconds * model.frame_rate)
    if frames < 1:
        return 1
    return len(plan_windows(0, frames, model.max_tokens, max(1, min(round(model.window_stride_s * model.frame_rate),
                                                                     model.max_tokens - 1))))


def windows_hint(seconds: float | None, model: ModelInfo | None) -> str:
    """'generated in N windows' for a piece longer than one window, else ''."""
    if model is None or seconds is None or seconds <= model.max_duration_s:
        return ""
    n = window_count(seconds, model)
    return (f"ℹ️ Longer than one {model.max_duration_s:g} s window: generated in {n} windows, each continuing the "
            f"end of the one before.")


def build_continue_input() -> ContinueInput:
    with gr.Row(equal_height=True):  # outside the accordion: "Extend this" is said even when it is closed
        extend_note = gr.Markdown(elem_id="extend-note")
        clear_btn = gr.Button("Don't extend", size="sm", visible=False, scale=0, min_width=120,
                              elem_id="extend-clear")
    with gr.Accordion("Continue a clip", open=False, elem_id="continue-accordion"):
        clip = gr.Audio(label="Clip to continue (wav, flac, ogg, mp3)", sources=["upload"], type="filepath",
                        elem_id="continue-clip")
        include = gr.Checkbox(value=True, label="Include the clip at the start", elem_id="continue-include",
                              info="Also for Extend this. Off: the result is the new music only")
    return ContinueInput(clip, include, gr.State(None), extend_note, clear_btn)


def extend_note(job_id: int | None, seconds: float | None = None) -> str:
    if job_id is None:
        return ""
    length = f" ({seconds:g} s)" if seconds is not None else ""
    return (f"🔁 **Extending job {int(job_id)}**{length}: Generate continues it from its codes; the duration is the "
            "new music.")


def extend_updates(ctx: AppContext, job_id: int | None) -> list:
    """[extend state, note, clear button, clip] for extending job_id (None: extending nothing)."""
    if job_id is None:
        return [None, "", gr.Button(visible=False), gr.skip()]
    try:
        job = ctx.jobs.get(int(job_id))
        seconds = round(job.duration_s + kept_seconds(job.continuation), 3)
    except Exception:  # noqa: BLE001 - gone meanwhile: the service refuses it at Generate with the reason
        seconds = None
    return [int(job_id), extend_note(job_id, seconds), gr.Button(visible=True), gr.Audio(value=None)]


def continuation_fields(ctx: AppContext, clip: str | None, include: bool | None, extend_job: int | None,
                        user: str) -> dict:
    """The request's continuation fields: "Extend this" (a job), or the clip saved as an upload. A file the
    studio cannot read is refused here with the upload's own message (nothing is queued)."""
    include = True if include is None else bool(include)
    if extend_job is not None:
        return {"continue_job_id": int(extend_job), "include_continued": include}
    if not clip:
        return {}
    source = Path(clip)
    with ctx.uploads.incoming() as staged:
        staged.write_bytes(source.read_bytes())
        info = ctx.uploads.save(staged, source.name, user)
    return {"continue_upload_id": info.id, "include_continued": include}


def kept_seconds(continuation: dict | None) -> float:
    """Seconds of continued audio at the start of a job's file: 0 when not included; an upload's part the model
    saw; a job's whole audio (trimmed_from_s when only its end was the model's context)."""
    if not continuation or not continuation.get("included"):
        return 0.0
    if continuation.get("source") == "job" and continuation.get("trimmed_from_s"):
        return float(continuation["trimmed_from_s"])
    return float(continuation.get("seconds") or 0.0)


def length_text(duration_s: float, continuation: dict | None) -> str:
    """A job's length as its file has it: '6 s (3 s continued + 3 s new)' when the continued audio is included."""
    kept = kept_seconds(continuation)
    if not kept:
        return f"{duration_s:g} s"
    return f"{round(kept + duration_s, 3):g} s ({kept:g} s continued + {duration_s:g} s new)"


def continued_line(continuation: dict | None) -> str:
    """The result line's words for what a job continued."""
    if not continuation:
        return ""
    what = (f"job {continuation.get('job_id')}" if continuation.get("source") == "job"
            else "the uploaded clip")
    cut = (f" (the last {continuation['seconds']:g} s of {continuation['trimmed_from_s']:g} s as context)"
           if continuation.get("trimmed_from_s") else "")
    where = "included at the start" if continuation.get("included") else "not included"
    return md_escape(f"Continues {what}{cut}, {where}.")


def wire_continue_input(ctx: AppContext, cont: ContinueInput, extend_btn: gr.Button, result_jobs: gr.State,
                        after_run) -> None:
    """Extend this (the first take of the last Generate), Don't extend, and a new clip replacing the extension.
    after_run: the Generate event's chain, to show Extend this once a take succeeded."""
    targets = [cont.extend_job, cont.extend_note, cont.clear_btn, cont.clip]
    private = dict(queue=False, show_progress="hidden", api_visibility="private")

    def can_extend(ids):
        ok = False
        if ids:
            try:
                ok = ctx.jobs.get(int(ids[0])).status == "succeeded"
            except Exception:  # noqa: BLE001 - deleted meanwhile: nothing to extend
                ok = False
        return gr.Button(visible=ok)

    after_run.then(can_extend, result_jobs, extend_btn, **private)
    extend_btn.click(lambda ids: extend_updates(ctx, ids[0] if ids else None), result_jobs, targets, **private)
    cont.clear_btn.click(lambda: extend_updates(ctx, None), None, targets, **private)

    def clip_changed(clip, job):
        if clip and job is not None:  # a clip chosen now replaces the job it was going to extend
            return [None, "", gr.Button(visible=False), gr.skip()]
        return [gr.skip()] * 4

    cont.clip.change(clip_changed, [cont.clip, cont.extend_job], targets, **private)
