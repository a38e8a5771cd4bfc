"""Generate tab: prompt, duration limited by the loaded model, settings, seed, progress in seconds of music, audio."""
from __future__ import annotations

import html
import shutil
from dataclasses import dataclass
from typing import Iterator

import gradio as gr
import numpy as np
from pydantic import ValidationError

from studio.context import AppContext
from studio.errors import Cancelled, InvalidValues, StudioError
from studio.gen_settings import MAX_SEED, RANDOM_SEED, field_errors
from studio.services.adapters import AdapterInfo
from studio.services.gen_config import ConfigView
from studio.services.generation import (MAX_VARIATIONS, GenerateRequest, GenerationResult, JobRequest,
                                        duration_over_limit)
from studio.services.job_events import AudioChunk, JobEvent, music_progress
from studio.services.jobs import MAX_STARS, MIN_STARS
from studio.services.models import ModelInfo
from studio.ui.access import admin_only
from studio.ui.adapter_stack import (StackWidgets, build_stack, build_strength, request_fields, stack_text,
                                     wire_stack)
from studio.ui.common import NO_ADAPTER, failed_status, md_escape, page_actor, page_user, plain_status, user_errors
from studio.ui.continue_input import (ContinueInput, build_continue_input, continuation_fields, continued_line,
                                      length_text, limit_s, windows_hint, wire_continue_input)
from studio.ui.melody_input import (MelodyInput, build_melody_input, melody_line, melody_updates,
                                     wire_melody_input)
from studio.ui.queue_panel import QueuePanel, build_queue_panel, fmt_eta, render_queue, wire_queue_panel
from studio.ui.settings_form import FieldSpec, coerce, field_specs, make_widget, widget_update
from studio.ui.settings_tab import model_choices
from studio.users import Actor

NEAR_LIMIT = 0.9  # warn from 90 % of the model's max duration
# The stored settings a person tunes per generation here; the others (output format, loudness, seed policy) apply
# as stored in the Settings tab.
SAMPLING_FIELDS = ("do_sample", "top_k", "top_p", "temperature", "guidance_scale")


@dataclass
class GenerateTab:
    model: gr.Dropdown  # the loaded model; choosing another switches, like the Settings tab's dropdown
    model_status: gr.Markdown  # the progress of a switch started here
    prompt: gr.Textbox
    duration: gr.Number
    duration_hint: gr.Markdown
    adapter: gr.Dropdown
    adapter_hint: gr.Markdown
    sampling: dict[str, gr.components.Component]  # SAMPLING_FIELDS, built from the settings schema
    specs: dict[str, FieldSpec]
    seed: gr.Number
    problems: gr.Markdown  # above Generate: what in the seed and settings boxes keeps it disabled, and why
    fields_ok: gr.State  # the seed and sampling boxes hold values the studio accepts (set by their check)
    generate_btn: gr.Button
    cancel_btn: gr.Button
    audio: gr.Audio  # the first take's final file (the full decode, not the stream)
    result: gr.Markdown
    takes: gr.Number  # how many takes (variations) one Generate asks for
    job_status: gr.Markdown  # this page's job: its place in the queue, then its progress
    stream: gr.Audio  # the first take as it decodes (hidden where ffmpeg is missing: Gradio encodes with it)
    take_players: list[gr.Audio]  # the takes side by side, hidden when unused
    jobs: gr.State  # this page's own job ids while they wait or run: Cancel cancels these and nothing else
    queue_table: gr.Markdown
    result_jobs: gr.State  # the last Generate's job ids, in take order (what the rating radios rate)
    rate_result: gr.Radio  # the person's stars for the result (one take)
    take_rates: list[gr.Radio]  # the person's stars for each take (several takes)
    continuation: ContinueInput | None = None  # "Continue a clip" and "Extend this" (studio/ui/continue_input.py)
    extend_btn: gr.Button | None = None  # under the result: continue the first take
    melody: MelodyInput | None = None  # melody models only (studio/ui/melody_input.py)
    stack: StackWidgets | None = None  # the adapter's strength and "Stack adapters" (studio/ui/adapter_stack.py)
    queue_user: gr.Dropdown | None = None  # the queue panel's User filter (admins only)

    @property
    def settings(self) -> list:
        """The widgets that follow the loaded model and its stored settings (see model_updates)."""
        return [self.seed, *self.sampling.values(), *self.melody.widgets]


def duration_problem(value: float | None, model: ModelInfo | None) -> str | None:
    """Why Generate cannot run with this duration (the service's own wording), or None."""
    if model is None:
        return None
    if value is None:
        return "Enter a duration in seconds."
    if value <= 0:
        return "The duration must be more than 0 s."
    if value > limit_s(model):
        return duration_over_limit(value, model.display_name, limit_s(model))
    return None


def duration_hint(value: float | None, model: ModelInfo | None) -> str:
    if model is None:
        return ""
    problem = duration_problem(value, model)
    if problem:
        return f"⚠️ {problem}"
    if value >= NEAR_LIMIT * limit_s(model):
        where = "at" if value >= limit_s(model) else "near"
        return (f"⚠️ {value:g} s is {where} {model.display_name}'s limit of {limit_s(model):g} s: "
                "long clips take longer and need more memory." + (" " + windows_hint(value, model)
                                                                  if value > model.max_duration_s else ""))
    return windows_hint(value, model)


def buttons(running: bool, prompt: str | None, duration: float | None, model: ModelInfo | None,
            fields_ok: bool | None = True) -> list:
    """[Generate, Cancel]: only what can be done now is enabled. Generate wants a prompt, a duration within the
    limit of the model the next job runs on, a seed and settings the studio accepts (fields_ok), and none of this
    page's own jobs running (other people's jobs never lock it: a job waits its turn in the queue); Cancel wants
    one of this page's jobs (running: this page's jobs are queued or running)."""
    if running:
        return [gr.Button(interactive=False, value="Generating…"), gr.Button(interactive=True)]
    ready = (model is not None and bool((prompt or "").strip()) and duration_problem(duration, model) is None
             and fields_ok is not False)
    return [gr.Button(interactive=ready, value="Generate"), gr.Button(interactive=False)]


def next_model(ctx: AppContext) -> ModelInfo | None:
    """The model a job submitted now runs on: the loaded one, or the one a switch waiting in the queue loads. The
    page's limits follow it, so a job is checked against the model it will really run on."""
    model_id = ctx.queue.target_model()
    return ctx.models.get(model_id) if model_id else None


def seed_problem(value) -> str | None:
    """Why the seed box cannot be used (the studio's words, at the field), or None. Empty: the seed policy."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "The seed must be a whole number."
    if value != int(value):
        return f"The seed must be a whole number, not {value:g}."
    if not RANDOM_SEED <= value <= MAX_SEED:
        return f"The seed {value:.0f} is out of range: use -1 (random) or 0 to {MAX_SEED}."
    return None


def takes_problem(value) -> str | None:
    """Why the Takes box cannot be used (the studio's words, at the field), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"Takes must be a whole number from 1 to {MAX_VARIATIONS}."
    if value != int(value) or not 1 <= value <= MAX_VARIATIONS:
        return f"Takes must be a whole number from 1 to {MAX_VARIATIONS}, not {value:g}."
    return None


def position_text(position: int | None, eta_s: float | None) -> str:
    """Where a waiting job stands, for a person: 'Waiting: number 3 in the queue, ready in about 40 s'."""
    if not position:
        place = "about to start"
    elif position == 1:
        place = "next to start"
    else:
        place = f"number {position} in the queue"
    eta = fmt_eta(eta_s)
    return f"Waiting: {place}" + (f", ready in {eta}" if eta else "")


def job_status(event: JobEvent, duration_s: float, takes: int = 1) -> str:
    """This page's job as its latest event tells it: place and ETA while queued, seconds of music made and ETA
    while running (a musician's words, not decoding steps); '' once it is over (the result line says how)."""
    several = f" ({takes} takes together)" if takes > 1 else ""
    if event.event == "queued":
        return f"⏳ {position_text(event.position, event.eta_s)}{several}"
    if event.event == "running":
        if not event.total:
            return f"🎵 Starting{several}"
        eta = fmt_eta(event.eta_s)
        return (f"🎵 Generating{several}: {music_progress(event.step or 0, event.total, duration_s)}"
                + (f", ready in {eta}" if eta else ""))
    return ""


def pcm16(chunk: AudioChunk) -> tuple[int, np.ndarray]:
    """A streamed chunk as Gradio's streaming audio takes it: (sample rate, int16 samples), mono as one column."""
    audio = np.clip(chunk.audio, -1.0, 1.0)
    if audio.ndim == 2 and audio.shape[1] == 1:
        audio = audio[:, 0]
    return chunk.sample_rate, (audio * 32767).round().astype(np.int16)


def result_summary(r: GenerationResult, model_name: str) -> str:
    """The line under the result: job, model, adapter, length, format, seed, loudness, time waited and taken."""
    used = f"adapter **{md_escape(r.adapter_label)}**" if r.adapter_label else "no adapter (base model)"
    if r.adapter_stack:
        used = f"adapter{'s' if len(r.adapter_stack) > 1 else ''} {stack_text(r.adapter_stack)}"
    loud = f" · {r.loudness_lufs:.1f} LUFS" if r.loudness_lufs is not None else ""
    batch = f" · in a batch of {r.batch_size}" if r.batch_size > 1 else ""
    length = length_text(r.duration_s, r.continuation)
    info = (f"**Job {r.job_id}** · {md_escape(model_name)} · {used} · {length} at "
            f"{r.sample_rate / 1000:g} kHz · {r.output_file.suffix.lstrip('.').upper()} · seed `{r.seed}`{loud} · "
            f"waited {r.wait_s:.1f} s · {r.elapsed_s:.1f} s to generate{batch}")
    if r.loudness_note:
        info += f"  \n⚠️ {md_escape(r.loudness_note)}"
    return info + melody_line(r.melody)


def take_label(number: int, r: GenerationResult) -> str:
    return f"Take {number} · seed {r.seed} · job {r.job_id}"


def sampling_problems(ctx: AppContext, model: ModelInfo | None, specs: dict[str, FieldSpec],
                      values: dict) -> dict[str, str]:
    """{setting: what is wrong} for the sampling boxes, in the Settings tab's words (the model's own rules)."""
    if model is None:
        return {}
    try:
        ctx.gen_config.validate_changes(model.id, {k: coerce(specs[k], v) for k, v in values.items()})
    except InvalidValues as exc:
        return {e["field"]: e["message"] for e in exc.extra.get("errors", []) if e["field"] in values}
    return {}


def seed_value(values: dict) -> int:
    return values["seed"] if values["seed_policy"] == "fixed" else RANDOM_SEED


def duration_info(model: ModelInfo) -> str:
    if model.max_extended_duration_s:
        return (f"{model.display_name} allows up to {model.max_extended_duration_s:g} s (one window is "
                f"{model.max_duration_s:g} s; longer pieces are generated window by window)")
    return f"{model.display_name} allows up to {model.max_duration_s:g} s"


def model_updates(model: ModelInfo | None, config: ConfigView | None) -> list:
    """Limits and starting values of the tab's widgets [duration, hint, seed, *sampling] for the loaded model and
    its stored settings (when either changes)."""
    if model is None or config is None:
        return [gr.Number(interactive=False), "", gr.skip(), *[gr.skip()] * len(SAMPLING_FIELDS),
                *melody_updates(None)]
    v = config.values
    value = min(v["default_duration_s"], model.max_duration_s)
    return [gr.Number(value=value, interactive=True, info=duration_info(model)),
            duration_hint(value, model), seed_value(v), *[gr.update(value=v[name]) for name in SAMPLING_FIELDS],
            *melody_updates(model)]


# ---- the adapter dropdown ---------------------------------------------------------------------------------------
SOME_NEED_OTHER_MODEL = "Some adapters need another model: change it in Settings."
ADAPTER_INFO = "A LoRA adapter gives the model a style it was trained on. Manage adapters in the Adapters tab."
REQUIRES = " — Requires "  # the suffix of an adapter that needs another model (greyed by CSS, refused by the server)
NOT_USABLE = " — Not usable: "  # same base model, other revision or weights


def no_adapters_hint(model_name: str) -> str:
    return f"No adapters available for {model_name}. Train or import adapters, or change model in Settings."


def adapter_label(a: AdapterInfo) -> str:
    return a.label  # 'name vN', made in one place (studio.db.models.version_label)


def adapter_choice_label(a: AdapterInfo, model: ModelInfo | None) -> str:
    """'name vN' for an adapter usable with the loaded model, else with the reason as a suffix."""
    if a.compatible:
        return adapter_label(a)
    if model is None or a.base_model != model.id:
        return f"{adapter_label(a)}{REQUIRES}{a.base_model_name}"
    return f"{adapter_label(a)}{NOT_USABLE}{a.compatibility_note or 'incompatible'}"


def _usable(adapters: list[AdapterInfo]) -> tuple[list[AdapterInfo], list[AdapterInfo]]:
    """(compatible, incompatible) among the active, not deleted adapters, each sorted by name then version."""
    live = sorted((a for a in adapters if a.active and not a.deleted), key=lambda a: (a.name.casefold(), a.version))
    return [a for a in live if a.compatible], [a for a in live if not a.compatible]


def adapter_choices(adapters: list[AdapterInfo], model: ModelInfo | None) -> list[tuple[str, str]]:
    """The dropdown's (label, value) choices: the base model, the compatible active adapters (value: the id as a
    string), then the active ones that need another model, marked with a suffix. With none compatible (or no model
    loaded), only the base model."""
    compatible, incompatible = _usable(adapters)
    if model is None or not compatible:
        return [(NO_ADAPTER, NO_ADAPTER)]
    return [(NO_ADAPTER, NO_ADAPTER), *[(adapter_label(a), str(a.id)) for a in compatible],
            *[(adapter_choice_label(a, model), str(a.id)) for a in incompatible]]


def adapter_hint(adapters: list[AdapterInfo], model: ModelInfo | None) -> str:
    """The line under the dropdown: why adapters are missing or greyed, and what to do."""
    if model is None:
        return "No model is loaded: adapters can be chosen once one is."
    compatible, incompatible = _usable(adapters)
    if not compatible:
        hint = no_adapters_hint(md_escape(model.display_name))  # names are the user's text (an import's name)
        needed = sorted({md_escape(a.base_model_name) for a in incompatible})
        if needed:
            hint += f" Your active adapters need {', '.join(needed)}."
        return "ℹ️ " + hint
    if incompatible:
        return "ℹ️ " + SOME_NEED_OTHER_MODEL
    return ""


UNAVAILABLE = " — Unavailable: "  # the person's choice, no longer usable: kept, said, greyed, refused by the server


def _chosen_label(current: str, adapters: list[AdapterInfo], model: ModelInfo | None) -> tuple[str, str]:
    """(dropdown label, why it cannot be used) for a chosen adapter that is no longer among the usable ones."""
    a = next((a for a in adapters if str(a.id) == current), None)
    if a is None:
        return f"adapter {current}{UNAVAILABLE}deleted", "was deleted"
    if not a.active:
        return f"{adapter_label(a)}{UNAVAILABLE}deactivated", "was deactivated"
    if model is None or a.base_model != model.id:
        return adapter_choice_label(a, model), f"needs {a.base_model_name}"
    return adapter_choice_label(a, model), a.compatibility_note or "does not fit this model"


def adapter_widgets(adapters: list[AdapterInfo], model: ModelInfo | None, current: str | None) -> list:
    """Updates for [dropdown, hint]. The person's choice is never changed behind their back: an adapter deactivated,
    deleted or made unusable by a model switch stays selected, marked unavailable, and the hint says why (Generate
    is then refused by the server, with the reason)."""
    choices = adapter_choices(adapters, model)
    hint = adapter_hint(adapters, model)
    if current in (None, "", NO_ADAPTER):
        return [gr.Dropdown(choices=choices, value=NO_ADAPTER), hint]
    usable = {str(a.id) for a in adapters if a.active and not a.deleted and a.compatible}
    if current in usable:
        return [gr.Dropdown(choices=choices, value=current), hint]
    label, why = _chosen_label(current, adapters, model)
    choices = [(lab, value) for lab, value in choices if value != current] + [(label, current)]
    warning = (f"⚠️ Your choice, {md_escape(label.split(' — ')[0])}, {md_escape(why)}: Generate will refuse it. "
               f"Choose another adapter or {NO_ADAPTER}.")
    return [gr.Dropdown(choices=choices, value=current), warning]


def adapter_id_from(value: str | int | None, adapters: list[AdapterInfo] | None = None) -> int | None:
    """The adapter a page or script asked for: None for the base model, an id (as sent by the dropdown) or,
    for scripts, a label 'name vN' of an active adapter. Anything else is refused (gr.Error)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", NO_ADAPTER)):
        return None
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    label = text.split(REQUIRES)[0].split(NOT_USABLE)[0].split(UNAVAILABLE)[0]
    for a in adapters or []:
        if adapter_label(a) == label:
            return a.id
    raise gr.Error(f"Unknown adapter {text!r}: choose one from the Adapter list (scripts: an adapter id, or "
                   f"{NO_ADAPTER!r}).", print_exception=False)


def build_generate_tab(ctx: AppContext) -> GenerateTab:
    current = ctx.models.current().model
    model_id = current.id if current else ctx.registry.default_model
    config = ctx.gen_config.get(model_id)
    specs = {f.name: f for f in field_specs(ctx.gen_config.schema(model_id)) if f.name in SAMPLING_FIELDS}
    with gr.Row():
        with gr.Column(scale=3):
            # The same switch as the Settings tab's dropdown (wired in app.py), where people are; an admin's (a
            # member sees the loaded model in the header).
            with gr.Row(equal_height=True, elem_classes=admin_only()):
                model = gr.Dropdown(model_choices(ctx), value=current.id if current else None, label="Model",
                                    elem_id="gen-model", scale=3,
                                    info="Choose another to switch (details in Settings)")
                model_status = gr.Markdown(elem_id="gen-model-status")
            # No max_length: the browser would cut a pasted prompt silently; the studio refuses an over-long one
            # with its length and the limit instead.
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt",
                                info=f"Up to {ctx.settings.max_prompt_chars} characters",
                                placeholder="lo-fi hip hop beat with warm piano and vinyl crackle")
            # A number box without Gradio bounds: Gradio's own check raised a traceback on every keystroke over the
            # limit and its slider clamped the value silently. The studio checks it and says so under the field.
            duration = gr.Number(value=min(config.values["default_duration_s"], current.max_duration_s)
                                 if current else config.values["default_duration_s"], step=0.5,
                                 label="Duration (seconds)", elem_id="duration",
                                 info=duration_info(current) if current else None)
            hint = gr.Markdown(elem_id="duration-hint")
            # allow_custom_value: a script's session never gets the page's updated choices, so the handler (and the
            # service behind it) check the value instead of Gradio's list.
            adapter = gr.Dropdown([(NO_ADAPTER, NO_ADAPTER)], value=NO_ADAPTER, label="Adapter", elem_id="adapter",
                                  info=ADAPTER_INFO, allow_custom_value=True)
            adapter_hint_md = gr.Markdown(elem_id="adapter-hint")
            stack = build_stack(ctx, build_strength(ctx))
            continuation = build_continue_input()
            melody = build_melody_input(current)
            with gr.Accordion("Generation settings", open=False, elem_id="gen-sampling"):
                gr.Markdown("Start from this model's saved settings (Settings tab), for this generation only. "
                            "Output format, loudness and seed policy apply as saved.", elem_classes=["cfg-hint"])
                sampling = {name: make_widget(f, config.values[name], f"gen-{name}") for name, f in specs.items()}
            with gr.Row(equal_height=True):
                # -1, not an empty field: Gradio shows and sends an empty Number as 0. No Gradio bounds (see
                # duration).
                seed = gr.Number(label="Seed", value=seed_value(config.values), step=1, elem_id="seed", scale=3,
                                 info="-1: a random seed (shown with the result) · same seed + prompt + settings: "
                                      "same audio")
                # Checked by the studio like the other boxes (no Gradio bounds).
                takes = gr.Number(label="Takes", value=1, step=1, elem_id="takes", scale=1,
                                  info=f"1-{MAX_VARIATIONS} versions with the next seeds, made together")
            problems = gr.Markdown(elem_id="generate-problems")
            with gr.Row(elem_id="generate-row"):
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn", scale=3,
                                         interactive=False)
                # Destructive, and only while this page's job waits or runs: quieter than Generate.
                cancel_btn = gr.Button("Cancel", variant="secondary", elem_id="cancel-btn", scale=1, size="md",
                                       interactive=False)
        with gr.Column(scale=2):
            job_status_md = gr.Markdown(elem_id="job-status")
            # Gradio encodes streamed audio with ffmpeg: without it the stream would fail the whole generation,
            # so the player is left out and the result comes at the end as before.
            # No buttons: Gradio's share fails on a stream, and its download would be the stream, not the file the
            # Result player offers.
            stream = gr.Audio(label="Listen while it generates (first take)", streaming=True, autoplay=True,
                              interactive=False, elem_id="audio-stream", visible=shutil.which("ffmpeg") is not None,
                              buttons=[])
            audio = gr.Audio(label="Result", type="filepath", interactive=False, elem_id="audio-out",
                             buttons=["download"])
            result = gr.Markdown(elem_id="result-info")
            extend_btn = gr.Button("Extend this", size="sm", visible=False, elem_id="extend-this")
            rate_result = rating_radio("rate-result")
    take_players, take_rates = [], []
    with gr.Row(elem_id="takes-row"):
        for i in range(MAX_VARIATIONS):
            with gr.Column(min_width=200):
                take_players.append(gr.Audio(label=f"Take {i + 1}", type="filepath", interactive=False,
                                             visible=False, elem_id=f"take-{i + 1}", buttons=["download"]))
                take_rates.append(rating_radio(f"rate-take-{i + 1}"))
    queue_panel = build_queue_panel(ctx)
    return GenerateTab(model, model_status, prompt, duration, hint, adapter, adapter_hint_md, sampling, specs, seed,
                       problems, gr.State(True), generate_btn, cancel_btn, audio, result, takes, job_status_md,
                       stream, take_players, gr.State([]), queue_panel.table, gr.State([]), rate_result, take_rates,
                       continuation, extend_btn, melody, stack, queue_panel.user)


NO_RATING = 0  # the radio's choice that removes the person's rating
RATING_CHOICES = [("No rating", NO_RATING), *[("★" * n, n) for n in range(MIN_STARS, MAX_STARS + 1)]]


def rating_radio(elem_id: str) -> gr.Radio:
    """Stars for a finished take, hidden until there is one (History shows and changes the same rating)."""
    return gr.Radio(RATING_CHOICES, label="Your rating", elem_id=elem_id, visible=False, elem_classes=["rate-take"])


def rating_updates(ctx: AppContext, job_ids: list[int] | None, actor: Actor) -> list:
    """[result radio, *take radios] after a Generate: one radio for a single take, one per take for several; only
    for takes that succeeded, with the person's rating of each (the average and count in the label)."""
    ids = list(job_ids or [])
    ratings = []
    for job_id in ids:
        try:
            job = ctx.jobs.get(job_id, actor)
        except StudioError:  # deleted meanwhile (History)
            job = None
        ratings.append(job.rating if job is not None and job.status == "succeeded" else None)

    def radio(r) -> gr.Radio:
        if r is None:
            return gr.Radio(visible=False, value=None)
        return gr.Radio(visible=True, value=r.mine or NO_RATING, label=rating_label(r))

    single = [radio(ratings[0])] if len(ids) == 1 else [gr.Radio(visible=False, value=None)]
    takes = [radio(ratings[i]) if len(ids) > 1 and i < len(ids) else gr.Radio(visible=False, value=None)
             for i in range(MAX_VARIATIONS)]
    return [*single, *takes]


def rating_label(r) -> str:
    if r.average is None:
        return "Your rating"
    return f"Your rating · average {r.average:.1f} ★ from {r.count}"


def _number(value, name: str, whole: bool = False):
    """A number box's value as the request wants it (scripts may send anything); None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise gr.Error(f"{name} must be a number.", print_exception=False)
    if whole:
        if value != int(value):
            raise gr.Error(f"{name} must be a whole number.", print_exception=False)
        return int(value)
    return float(value)


def _job_request(ctx: AppContext, tab: GenerateTab, prompt, duration_s, seed, top_k, top_p, temperature,
                 guidance_scale, adapter, do_sample=True, takes=1, melody_upload_id=None, strength=1.0,
                 stack=()) -> JobRequest:
    """The request a page or script sends, checked as the studio checks it (gr.Error with its words)."""
    named = [v for v in (adapter, *stack[::2]) if isinstance(v, str) and not v.strip().isdigit()
             and v.strip() not in ("", NO_ADAPTER)]  # labels 'name vN' (scripts) need the listing
    listing = ctx.adapters.list(active=True) if named else None
    with user_errors():
        adapter_id = adapter_id_from(adapter, listing)
        adapters = request_fields(adapter_id, strength, list(stack), lambda v: adapter_id_from(v, listing))
    raw = dict(do_sample=do_sample, top_k=top_k, top_p=top_p, temperature=temperature,
               guidance_scale=guidance_scale)
    settings = {name: coerce(tab.specs[name], value) for name, value in raw.items()}
    duration = _number(duration_s, "Duration")
    if duration is None:
        raise gr.Error("Enter a duration in seconds.", print_exception=False)
    problem = takes_problem(takes)
    if problem:
        raise gr.Error(html.escape(problem), print_exception=False)
    try:
        return JobRequest(prompt=prompt or "", duration_s=duration, seed=_number(seed, "Seed", whole=True),
                          settings=settings, variations=int(takes), melody_upload_id=melody_upload_id, **adapters)
    except ValidationError as exc:  # the request's own bounds (seed -1 to 2^32-1): said, never a traceback
        text = "; ".join(f"{k}: {v}" for k, v in field_errors(exc).items())
        raise gr.Error(html.escape(f"Not generated: {text}."), print_exception=False) from None


def wire_generate_tab(ctx: AppContext, tab: GenerateTab) -> None:
    def generate(prompt, duration_s, seed, top_k, top_p, temperature, guidance_scale, adapter, do_sample=True,
                 strength=1.0, stack1=None, strength1=1.0, stack2=None, strength2=1.0, stack3=None, strength3=1.0,
                 progress=gr.Progress(), request: gr.Request | None = None):
        """Generate music with the model the next job runs on, with a LoRA adapter ('None (base model)', or an
        adapter id as listed by GET /api/adapters), waiting in the queue for its turn. Seed -1: a random seed;
        none: the model's seed policy. The sampling values apply to this generation; the other settings (output
        format, loudness, seed policy) are the model's saved ones. strength: the adapter's, 0-2 (1: as trained);
        stack1-3 with strength1-3: a stack of adapters instead (adapter 'None (base model)'). Returns the audio
        file and a summary naming the job, model, adapter(s), seed, loudness, time waited and batch size."""
        req = _job_request(ctx, tab, prompt, duration_s, seed, top_k, top_p, temperature, guidance_scale, adapter,
                           do_sample, 1, strength=strength,
                           stack=(stack1, strength1, stack2, strength2, stack3, strength3))
        progress(0, desc="Waiting for its turn")

        def on_step(done: int, total: int) -> None:
            # seconds of music (a musician's words), not decoding steps; the bar shows the percent itself
            made = music_progress(done, total, req.duration_s, percent=False)
            progress(done / total if total else 0.0, desc=f"Generating: {made}")

        with user_errors():
            r = ctx.generation.generate(GenerateRequest(**req.model_dump(exclude={"variations"})), on_step=on_step,
                                        actor=page_actor(request))
        return str(r.output_file), result_summary(r, ctx.models.get(r.model_id).display_name)

    def submit_job(prompt, duration_s, seed, top_k, top_p, temperature, guidance_scale, adapter, do_sample=True,
                   takes=1, strength=1.0, stack1=None, strength1=1.0, stack2=None, strength2=1.0, stack3=None,
                   strength3=1.0, request: gr.Request | None = None) -> dict:
        """Queue a generation (takes: 1-4 variations with the next seeds) and answer at once: the job ids, seeds,
        place in the queue, ETA and the events URL (GET /api/jobs/{id}/events follows it)."""
        req = _job_request(ctx, tab, prompt, duration_s, seed, top_k, top_p, temperature, guidance_scale, adapter,
                           do_sample, takes, strength=strength,
                           stack=(stack1, strength1, stack2, strength2, stack3, strength3))
        with user_errors():
            return ctx.generation.submit(req, page_actor(request)).model_dump(mode="json")

    def cancel_job(job_id, request: gr.Request | None = None) -> dict:
        """Cancel a job by its id, waiting (at once) or running (at its next step). cancelled: false when it was
        over already."""
        if isinstance(job_id, bool) or not isinstance(job_id, (int, float)) or job_id != int(job_id):
            raise gr.Error("job_id must be a whole number.", print_exception=False)
        with user_errors():
            was = ctx.generation.cancel_job(int(job_id), page_actor(request))
        return {"job_id": int(job_id), "cancelled": was is not None, "was": was}

    players = tab.take_players
    page_outputs = [tab.jobs, tab.job_status, tab.stream, tab.audio, tab.result, *players, tab.cancel_btn,
                    tab.queue_table, tab.result_jobs]
    skip_players = [gr.skip()] * len(players)

    def on_page(prompt, duration_s, seed, top_k, top_p, temperature, guidance_scale, adapter, do_sample, takes,
                clip=None, include=True, extend_job=None, melody=None,
                strength=1.0, stack1=None, strength1=1.0, stack2=None, strength2=1.0, stack3=None, strength3=1.0,
                queue_user=None, request: gr.Request | None = None) -> Iterator[list]:
        """The page's Generate: submit, then follow this page's job in the same handler: its place in the queue,
        its progress, its audio as it decodes (the first take), then the final files side by side. A refusal is
        a message in the result line, never Gradio's error badge over the players."""
        def out(jobs=gr.skip(), status=gr.skip(), stream=gr.skip(), audio=gr.skip(), result=gr.skip(),
                takes_out=None, cancel=gr.skip(), queue=gr.skip(), result_jobs=gr.skip()) -> list:
            return [jobs, status, stream, audio, result, *(takes_out or skip_players), cancel, queue, result_jobs]

        try:
            with user_errors():
                melody_id = tab.melody.upload_id(ctx, melody, page_user(request))
            req = _job_request(ctx, tab, prompt, duration_s, seed, top_k, top_p, temperature, guidance_scale,
                               adapter, do_sample, takes, melody_upload_id=melody_id, strength=strength,
                               stack=(stack1, strength1, stack2, strength2, stack3, strength3))
            with user_errors():
                # a clip is saved as an upload here (an unreadable one is refused with its reason, nothing queued)
                req = req.model_copy(update=continuation_fields(ctx, clip, include, extend_job, page_user(request)))
                accepted = ctx.generation.submit(req, page_actor(request))
        except gr.Error as exc:
            message = html.unescape(str(exc.message))
            yield out(jobs=[], status="", result=failed_status(f"❌ **Not generated.** {md_escape(message)}"),
                      result_jobs=[])
            return
        ids, n = accepted.job_ids, len(accepted.job_ids)
        first = JobEvent(job_id=accepted.job_id, event="queued" if accepted.status == "queued" else "running",
                         status=accepted.status, message="", position=accepted.position, eta_s=accepted.eta_s)
        # A fresh stream player (the last run's stream is over), the players of the last run emptied.
        yield out(jobs=ids, status=job_status(first, req.duration_s, n), stream=gr.Audio(value=None), audio=None,
                  result=plain_status(), takes_out=[gr.Audio(value=None, visible=False)] * len(players),
                  cancel=gr.Button(interactive=True), queue=render_queue(ctx, page_actor(request), ids, queue_user),
                  result_jobs=ids)
        for item in ctx.generation.follow(accepted.job_id):
            if isinstance(item, AudioChunk):
                if tab.stream.visible:
                    yield out(stream=pcm16(item))
            elif isinstance(item, JobEvent) and not item.terminal:
                yield out(status=job_status(item, req.duration_s, n))
        results: list[GenerationResult | StudioError] = []
        for job_id in ids:
            try:
                results.append(ctx.generation.wait(job_id))  # the other takes end with the first (one batch)
            except StudioError as exc:
                results.append(exc)
        yield [[], "", *final_outputs(results), gr.skip(), render_queue(ctx, page_actor(request), (), queue_user),
               gr.skip()]

    def final_outputs(results: list) -> list:
        """[stream, audio, result, *players] once every take is over: the first take's file in the Result player
        (the full decode, not the stream), each take beside the others with its seed, the summary line."""
        first = results[0]
        done = [(i, r) for i, r in enumerate(results) if isinstance(r, GenerationResult)]
        failed = False
        if isinstance(first, GenerationResult):
            audio, text = str(first.output_file), result_summary(first, ctx.models.get(first.model_id).display_name)
            if first.continuation:
                text += "  \n" + continued_line(first.continuation)
        elif isinstance(first, Cancelled) and len(results) > 1 and all(isinstance(r, Cancelled) for r in results):
            jobs = ", ".join(str(r.extra.get("job_id")) for r in results)
            audio, text = None, md_escape(f"Cancelled: all {len(results)} takes (jobs {jobs}).")
        elif isinstance(first, Cancelled):  # not an error: a neutral line (no toast over the players, no badge)
            audio, text = None, md_escape(first.message)
        else:
            audio, text, failed = None, f"❌ **Not generated.** {md_escape(first.message)}", True
        shown = [gr.Audio(visible=False)] * len(players)
        if len(results) > 1 and done:
            for i, r in done:
                shown[i] = gr.Audio(value=str(r.output_file), label=take_label(i + 1, r), visible=True)
            seeds = ", ".join(f"take {i + 1}: `{r.seed}`" for i, r in done)
            text += f"  \n{len(results)} takes · seeds {seeds}"
            lost = [f"take {i + 1}: {md_escape(r.message)}" for i, r in enumerate(results)
                    if not isinstance(r, GenerationResult)]
            if lost:
                text += "  \n" + " · ".join(lost)
        result = failed_status(text) if failed else plain_status(text)
        return [gr.skip(), audio, result, *shown]

    s = tab.sampling
    inputs = [tab.prompt, tab.duration, tab.seed, s["top_k"], s["top_p"], s["temperature"], s["guidance_scale"],
              tab.adapter, s["do_sample"]]
    btns = [tab.generate_btn, tab.cancel_btn]
    typed = [tab.prompt, tab.duration, tab.fields_ok]

    def after(prompt, duration, fields_ok):
        return buttons(False, prompt, duration, next_model(ctx), fields_ok)

    # Generate is disabled at once (no double submit); Cancel waits for the job ids, so it always has something
    # of this page's to cancel.
    rates = [tab.rate_result, *tab.take_rates]
    started = tab.generate_btn.click(lambda: [*buttons(True, None, None, None)[:1], gr.Button(interactive=False),
                                              *[gr.Radio(visible=False, value=None)] * len(rates)],
                                     None, [*btns, *rates], queue=False, api_visibility="private")
    # concurrency_limit=None: every page follows its own job at once (Gradio's default, 1 per event, would make
    # a second page wait for the first one's job before its own was even queued); the job queue orders the work.
    # show_progress hidden: the status line says where the job stands, and an overlay would hide the players.
    cont = tab.continuation
    run = started.then(on_page, [*inputs, tab.takes, cont.clip, cont.include, cont.extend_job, tab.melody.audio,
                                 *tab.stack.inputs, tab.queue_user],
                       page_outputs, concurrency_limit=None, show_progress="hidden", api_visibility="private")
    wire_continue_input(ctx, cont, tab.extend_btn, tab.result_jobs, run)
    run.then(after, typed, btns, queue=False, api_visibility="private")

    def show_ratings(ids, request: gr.Request):
        return rating_updates(ctx, ids, page_actor(request))

    run.then(show_ratings, tab.result_jobs, rates, queue=False, show_progress="hidden", api_visibility="private")

    def rate_take(index: int):
        def rate(ids, stars, request: gr.Request):
            """The person's stars for a take of the last Generate (0: remove them); History shows the same."""
            ids = list(ids or [])
            if index >= len(ids):
                return gr.skip()
            actor = page_actor(request)
            with user_errors():
                r = (ctx.jobs.unrate(ids[index], actor) if not stars else ctx.jobs.rate(ids[index], actor,
                                                                                       int(stars)))
            return gr.Radio(label=rating_label(r))
        return rate

    for index, radio in enumerate([tab.rate_result, *tab.take_rates]):
        # the result radio rates the only take; take radio i rates take i
        radio.input(rate_take(max(index - 1, 0)), [tab.result_jobs, radio], radio, queue=False,
                    show_progress="hidden", api_visibility="private")
    run.failure(after, typed, btns, queue=False, api_visibility="private")
    run.failure(lambda: [], None, tab.jobs, queue=False, api_visibility="private")
    # Scripts: the blocking generate (the page's old contract), and the queue's submit and cancel by id. Hidden
    # buttons give them endpoints of their own, which fail with the studio's message (gr.Error).
    gr.Button(visible=False, elem_id="generate-api").click(generate, [*inputs, *tab.stack.inputs],
                                                           [tab.audio, tab.result],
                                                           api_name="generate", concurrency_limit=None)
    accepted_json = gr.JSON(visible=False)
    gr.Button(visible=False, elem_id="submit-job-api").click(submit_job, [*inputs, tab.takes, *tab.stack.inputs],
                                                             accepted_json,
                                                             api_name="submit_job", concurrency_limit=None)
    job_id_box = gr.Number(visible=False)  # checked by cancel_job (no Gradio bounds, as elsewhere)
    gr.Button(visible=False, elem_id="cancel-job-api").click(cancel_job, job_id_box, accepted_json,
                                                             api_name="cancel_job", queue=False)

    def cancel(jobs: list[int] | None, queue_user=None, request: gr.Request | None = None) -> str:
        """Cancel this page's own jobs (waiting: at once; running: at their next step), never another page's:
        the ids come from this page's state. The following Generate handler then says 'Cancelled'."""
        stopped = False
        for job_id in jobs or []:
            try:
                stopped = ctx.generation.cancel_job(job_id, page_actor(request)) is not None or stopped
            except StudioError:  # gone from the records: nothing left to stop
                pass
        if not stopped:
            gr.Info("Nothing of this page's is waiting or running.")
        return render_queue(ctx, page_actor(request), jobs or (), queue_user)

    tab.cancel_btn.click(cancel, [tab.jobs, tab.queue_user], tab.queue_table, queue=False, show_progress="hidden",
                         api_visibility="private")
    wire_queue_panel(ctx, QueuePanel(tab.queue_table, tab.queue_user), tab.jobs)
    wire_melody_input(ctx, tab.melody, next_model)
    wire_stack(ctx, tab.adapter, tab.stack, lambda: adapter_choices(ctx.adapters.list(), next_model(ctx)))

    names = list(tab.sampling)
    checked = [tab.prompt, tab.duration, tab.seed, *tab.sampling.values(), tab.takes]

    def generate_readiness(prompt, duration, seed, *rest):
        """At every keystroke: the studio's own message at each field that holds a value it cannot use (nothing
        changed behind the person's back), and whether Generate can run. Never a traceback. rest: the sampling
        boxes, Takes, and this page's jobs."""
        sampling, (takes, jobs) = rest[:len(names)], rest[len(names):]
        model = next_model(ctx)
        seed_error, takes_error = seed_problem(seed), takes_problem(takes)
        errors = sampling_problems(ctx, model, tab.specs, dict(zip(names, sampling)))
        ok = seed_error is None and takes_error is None and not errors
        fields = [widget_update(tab.specs[n], error=errors.get(n)) for n in names]  # said at each field
        # and once above Generate, which they keep disabled (the settings may sit in a closed accordion)
        said = [e for e in (seed_error, takes_error) if e]
        said += [f"{tab.specs[n].label}: {e}" for n, e in errors.items()]
        problems = ("⚠️ " + md_escape(" · ".join(said)) + " — fix it to generate.") if said else ""
        return [duration_hint(duration, model), problems, *fields, ok,
                *buttons(bool(jobs), prompt, duration, model, ok)[:1]]

    # change: typing, and the updates a model switch sends. preprocess=False: the values as typed (Gradio's own
    # conversion never runs on them); always_last: the last keystroke is always checked.
    for box in checked:
        box.change(generate_readiness, [*checked, tab.jobs],
                   [tab.duration_hint, tab.problems, *tab.sampling.values(), tab.fields_ok, tab.generate_btn],
                   queue=False, show_progress="hidden", api_visibility="private", preprocess=False,
                   trigger_mode="always_last")
