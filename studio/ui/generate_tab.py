"""Generate tab: prompt, duration limited by the loaded model, settings, seed, progress in seconds of music, audio."""
from __future__ import annotations

import html
import time
from dataclasses import dataclass

import gradio as gr
from pydantic import ValidationError

from studio.context import AppContext
from studio.errors import Cancelled, InvalidValues
from studio.gen_settings import MAX_SEED, RANDOM_SEED, field_errors
from studio.services.adapters import AdapterInfo
from studio.services.gen_config import ConfigView
from studio.services.generation import GenerateRequest, duration_over_limit
from studio.services.job_events import music_progress
from studio.services.models import ModelInfo
from studio.ui.common import NO_ADAPTER, failed_status, failures_as_status, md_escape, plain_status, user_errors
from studio.ui.settings_form import FieldSpec, coerce, field_specs, make_widget, widget_update
from studio.ui.settings_tab import model_choices

NEAR_LIMIT = 0.9  # warn from 90 % of the model's max duration
CANCEL_WAIT_S = 3.0  # how long a Cancel waits for a Generate still queued in Gradio to start
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
    audio: gr.Audio
    result: gr.Markdown

    @property
    def settings(self) -> list:
        """The widgets that follow the loaded model and its stored settings (see model_updates)."""
        return [self.seed, *self.sampling.values()]


def duration_problem(value: float | None, model: ModelInfo | None) -> str | None:
    """Why Generate cannot run with this duration (the service's own wording), or None."""
    if model is None:
        return None
    if value is None:
        return "Enter a duration in seconds."
    if value <= 0:
        return "The duration must be more than 0 s."
    if value > model.max_duration_s:
        return duration_over_limit(value, model.display_name, model.max_duration_s)
    return None


def duration_hint(value: float | None, model: ModelInfo | None) -> str:
    if model is None:
        return ""
    problem = duration_problem(value, model)
    if problem:
        return f"⚠️ {problem}"
    if value >= NEAR_LIMIT * model.max_duration_s:
        where = "at" if value >= model.max_duration_s else "near"
        return (f"⚠️ {value:g} s is {where} {model.display_name}'s limit of {model.max_duration_s:g} s: "
                "long clips take longer and need more memory.")
    return ""


def buttons(state: str, prompt: str | None, duration: float | None, model: ModelInfo | None,
            fields_ok: bool | None = True) -> list:
    """[Generate, Cancel]: only what can be done now is enabled. Generate wants a prompt, a duration within the
    model's limit, a seed and settings the studio accepts (fields_ok) and an idle studio; Cancel a running
    generation."""
    if state == "switching":
        return [gr.Button(interactive=False, value="Switching model…"), gr.Button(interactive=False)]
    if state == "generating":
        return [gr.Button(interactive=False, value="Generating…"), gr.Button(interactive=True)]
    ready = (model is not None and bool((prompt or "").strip()) and duration_problem(duration, model) is None
             and fields_ok is not False)
    return [gr.Button(interactive=ready, value="Generate"), gr.Button(interactive=False)]


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
    return f"{model.display_name} allows up to {model.max_duration_s:g} s"


def model_updates(model: ModelInfo | None, config: ConfigView | None) -> list:
    """Limits and starting values of the tab's widgets [duration, hint, seed, *sampling] for the loaded model and
    its stored settings (when either changes)."""
    if model is None or config is None:
        return [gr.Number(interactive=False), "", gr.skip(), *[gr.skip()] * len(SAMPLING_FIELDS)]
    v = config.values
    value = min(v["default_duration_s"], model.max_duration_s)
    return [gr.Number(value=value, interactive=True, info=duration_info(model)),
            duration_hint(value, model), seed_value(v), *[gr.update(value=v[name]) for name in SAMPLING_FIELDS]]


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
        hint = no_adapters_hint(model.display_name)
        needed = sorted({a.base_model_name for a in incompatible})
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
            with gr.Row(equal_height=True):
                # The same switch as the Settings tab's dropdown (wired in app.py), where people are.
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
            with gr.Accordion("Generation settings", open=False, elem_id="gen-sampling"):
                gr.Markdown("Start from this model's saved settings (Settings tab), for this generation only. "
                            "Output format, loudness and seed policy apply as saved.", elem_classes=["cfg-hint"])
                sampling = {name: make_widget(f, config.values[name], f"gen-{name}") for name, f in specs.items()}
            # -1, not an empty field: Gradio shows and sends an empty Number as 0. No Gradio bounds (see duration).
            seed = gr.Number(label="Seed", value=seed_value(config.values), step=1, elem_id="seed",
                             info="-1: a random seed (shown with the result) · same seed + prompt + settings: "
                                  "same audio")
            problems = gr.Markdown(elem_id="generate-problems")
            with gr.Row(elem_id="generate-row"):
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn", scale=3,
                                         interactive=False)
                # Destructive, and only while something runs: quieter than Generate.
                cancel_btn = gr.Button("Cancel", variant="secondary", elem_id="cancel-btn", scale=1, size="md",
                                       interactive=False)
        with gr.Column(scale=2):
            audio = gr.Audio(label="Result", type="filepath", interactive=False, elem_id="audio-out",
                             buttons=["download"])
            result = gr.Markdown(elem_id="result-info")
    return GenerateTab(model, model_status, prompt, duration, hint, adapter, adapter_hint_md, sampling, specs, seed,
                       problems, gr.State(True), generate_btn, cancel_btn, audio, result)


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


def wire_generate_tab(ctx: AppContext, tab: GenerateTab) -> None:
    def generate(prompt, duration_s, seed, top_k, top_p, temperature, guidance_scale, adapter, do_sample=True,
                 progress=gr.Progress()):
        """Generate music with the loaded model, with a LoRA adapter ('None (base model)', or an adapter id as
        listed by GET /api/adapters). Seed -1: a random seed; none: the model's seed policy. The sampling values
        apply to this generation; the other settings (output format, loudness, seed policy) are the model's saved
        ones. Returns the audio file and a summary naming the model, adapter, seed and loudness reached."""
        needs_listing = isinstance(adapter, str) and not adapter.strip().isdigit() and adapter.strip() not in (
            "", NO_ADAPTER)
        with user_errors():
            adapter_id = adapter_id_from(adapter, ctx.adapters.list(active=True) if needs_listing else None)
        raw = dict(do_sample=do_sample, top_k=top_k, top_p=top_p, temperature=temperature,
                   guidance_scale=guidance_scale)
        settings = {name: coerce(tab.specs[name], value) for name, value in raw.items()}
        duration = _number(duration_s, "Duration")
        if duration is None:
            raise gr.Error("Enter a duration in seconds.", print_exception=False)
        try:
            req = GenerateRequest(prompt=prompt or "", duration_s=duration, seed=_number(seed, "Seed", whole=True),
                                  settings=settings, adapter_id=adapter_id)
        except ValidationError as exc:  # the request's own bounds (seed -1 to 2^32-1): said, never a traceback
            text = "; ".join(f"{k}: {v}" for k, v in field_errors(exc).items())
            raise gr.Error(html.escape(f"Not generated: {text}."), print_exception=False) from None
        progress(0, desc="Starting")

        def on_step(done: int, total: int) -> None:
            # seconds of music (a musician's words), not decoding steps; the bar shows the percent itself
            made = music_progress(done, total, duration, percent=False)
            progress(done / total if total else 0.0, desc=f"Generating: {made}")

        with user_errors():
            try:
                r = ctx.generation.generate(req, on_step=on_step)
            except Cancelled as exc:  # not an error: a neutral notice, and no error badge on the result
                gr.Info(html.escape(exc.message))
                return None, md_escape(exc.message)
        model_name = ctx.models.get(r.model_id).display_name
        used = f"adapter **{md_escape(r.adapter_label)}**" if r.adapter_label else "no adapter (base model)"
        info = (f"**Job {r.job_id}** · {model_name} · {used} · {r.duration_s:g} s at {r.sample_rate / 1000:g} kHz"
                f" · {r.output_file.suffix.lstrip('.').upper()} · seed `{r.seed}` · {r.elapsed_s:.1f} s to generate")
        if r.loudness_note:
            info += f"  \n⚠️ {md_escape(r.loudness_note)}"
        return str(r.output_file), info

    s = tab.sampling
    inputs = [tab.prompt, tab.duration, tab.seed, s["top_k"], s["top_p"], s["temperature"], s["guidance_scale"],
              tab.adapter, s["do_sample"]]
    btns = [tab.generate_btn, tab.cancel_btn]

    def after(prompt, duration, fields_ok):
        cur = ctx.models.current()
        return buttons(cur.state, prompt, duration, cur.model, fields_ok)

    def not_generated(message: str) -> list:
        return [gr.skip(), failed_status(f"❌ **Not generated.** {md_escape(message)}")]

    started = tab.generate_btn.click(lambda: [*buttons("generating", None, None, None), plain_status()], None,
                                     [*btns, tab.result], queue=False, api_visibility="private")
    # The page's Generate: a refusal is a message in the result line (failures_as_status), never Gradio's error
    # badge over the audio. Scripts call the same function through an endpoint of their own (a hidden button),
    # which fails with the error as before.
    run = started.then(failures_as_status(generate, not_generated), inputs, [tab.audio, tab.result],
                       concurrency_id="gpu", concurrency_limit=1, api_name="generate_on_page",
                       api_visibility="private")
    gr.Button(visible=False, elem_id="generate-api").click(generate, inputs, [tab.audio, tab.result],
                                                           api_name="generate", concurrency_id="gpu",
                                                           concurrency_limit=1)
    typed = [tab.prompt, tab.duration, tab.fields_ok]
    run.then(after, typed, btns, queue=False, api_visibility="private")
    run.failure(after, typed, btns, queue=False, api_visibility="private")

    def cancel() -> None:
        """Stop the running generation at its next step (the generation then reports it as cancelled). Generate's
        run may still wait in Gradio's queue when Cancel is clicked: wait briefly for it to start rather than lose
        the cancel (jobs with ids of their own, cancellable while queued, come with the job queue)."""
        deadline = time.monotonic() + CANCEL_WAIT_S
        while not ctx.generation.cancel():
            if time.monotonic() >= deadline:
                gr.Info("Nothing is generating.")
                return
            time.sleep(0.05)

    tab.cancel_btn.click(cancel, None, None, api_name="cancel_generation", queue=False)

    names = list(tab.sampling)
    checked = [tab.prompt, tab.duration, tab.seed, *tab.sampling.values()]

    def generate_readiness(prompt, duration, seed, *sampling):
        """At every keystroke: the studio's own message at each field that holds a value it cannot use (nothing
        changed behind the person's back), and whether Generate can run. Never a traceback."""
        cur = ctx.models.current()
        seed_error = seed_problem(seed)
        errors = sampling_problems(ctx, cur.model, tab.specs, dict(zip(names, sampling)))
        ok = seed_error is None and not errors
        fields = [widget_update(tab.specs[n], error=errors.get(n)) for n in names]  # said at each field
        # and once above Generate, which they keep disabled (the settings may sit in a closed accordion)
        said = [seed_error] if seed_error else []
        said += [f"{tab.specs[n].label}: {e}" for n, e in errors.items()]
        problems = ("⚠️ " + md_escape(" · ".join(said)) + " — fix it to generate.") if said else ""
        return [duration_hint(duration, cur.model), problems, *fields, ok,
                *buttons(cur.state, prompt, duration, cur.model, ok)[:1]]

    # change: typing, and the updates a model switch sends. preprocess=False: the values as typed (Gradio's own
    # conversion never runs on them); always_last: the last keystroke is always checked.
    for box in checked:
        box.change(generate_readiness, checked,
                   [tab.duration_hint, tab.problems, *tab.sampling.values(), tab.fields_ok, tab.generate_btn],
                   queue=False, show_progress="hidden", api_visibility="private", preprocess=False,
                   trigger_mode="always_last")
