"""Generate tab: prompt, duration limited by the loaded model, settings, seed, per-step progress, audio."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.context import AppContext
from studio.services.adapters import AdapterInfo
from studio.services.gen_config import ConfigView
from studio.services.generation import GenerateRequest
from studio.services.models import ModelInfo
from studio.ui.common import NO_ADAPTER, md_escape, user_errors
from studio.ui.settings_form import FieldSpec, coerce, field_specs, make_widget

NEAR_LIMIT = 0.9  # warn from 90 % of the model's max duration
RANDOM_SEED = -1
# The stored settings a person tunes per generation here; the others (output format, loudness, seed policy) apply
# as stored in the Settings tab.
SAMPLING_FIELDS = ("do_sample", "top_k", "top_p", "temperature", "guidance_scale")


@dataclass
class GenerateTab:
    prompt: gr.Textbox
    duration: gr.Slider
    duration_hint: gr.Markdown
    adapter: gr.Dropdown
    adapter_hint: gr.Markdown
    sampling: dict[str, gr.components.Component]  # SAMPLING_FIELDS, built from the settings schema
    specs: dict[str, FieldSpec]
    seed: gr.Number
    generate_btn: gr.Button
    cancel_btn: gr.Button
    audio: gr.Audio
    result: gr.Markdown

    @property
    def settings(self) -> list:
        """The widgets that follow the loaded model and its stored settings (see model_updates)."""
        return [self.seed, *self.sampling.values()]


def duration_hint(value: float, model: ModelInfo | None) -> str:
    if model is None or value is None:
        return ""
    if value > model.max_duration_s:
        return f"⚠️ {value:g} s is over {model.display_name}'s limit of {model.max_duration_s:g} s."
    if value >= NEAR_LIMIT * model.max_duration_s:
        return (f"⚠️ {value:g} s is near {model.display_name}'s limit of {model.max_duration_s:g} s: "
                "long clips take longer and need more memory.")
    return ""


def seed_value(values: dict) -> int:
    return values["seed"] if values["seed_policy"] == "fixed" else RANDOM_SEED


def model_updates(model: ModelInfo | None, config: ConfigView | None) -> list:
    """Limits and starting values of the tab's widgets [duration, hint, seed, *sampling] for the loaded model and
    its stored settings (when either changes)."""
    if model is None or config is None:
        return [gr.Slider(interactive=False), "", gr.skip(), *[gr.skip()] * len(SAMPLING_FIELDS)]
    v = config.values
    value = min(v["default_duration_s"], model.max_duration_s)
    return [gr.Slider(maximum=model.max_duration_s, value=value, interactive=True,
                      info=f"{model.display_name} allows up to {model.max_duration_s:g} s"),
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


def adapter_widgets(adapters: list[AdapterInfo], model: ModelInfo | None, current: str | None) -> list:
    """Updates for [dropdown, hint]; the choice is kept while it is still offered."""
    choices = adapter_choices(adapters, model)
    value = current if current in [v for _, v in choices] else NO_ADAPTER
    return [gr.Dropdown(choices=choices, value=value), adapter_hint(adapters, model)]


def adapter_id_from(value: str | int | None, adapters: list[AdapterInfo] | None = None) -> int | None:
    """The adapter a page or script asked for: None for the base model, an id (as sent by the dropdown) or,
    for scripts, a label 'name vN' of an active adapter. Anything else is refused (gr.Error)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", NO_ADAPTER)):
        return None
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    label = text.split(REQUIRES)[0].split(NOT_USABLE)[0]
    for a in adapters or []:
        if adapter_label(a) == label:
            return a.id
    raise gr.Error(f"Unknown adapter {text!r}: choose one from the Adapter list (scripts: an adapter id, or "
                   f"{NO_ADAPTER!r}).", print_exception=False)


def build_generate_tab(ctx: AppContext) -> GenerateTab:
    current = ctx.models.current().model
    # The widget's bound is the registry's largest limit (Gradio checks it for scripts too, which never get
    # a page's update); each page narrows it to the loaded model, and the service enforces the real limit.
    max_s = max(spec.max_duration_s for spec in ctx.registry.models)
    model_id = current.id if current else ctx.registry.default_model
    config = ctx.gen_config.get(model_id)
    specs = {f.name: f for f in field_specs(ctx.gen_config.schema(model_id)) if f.name in SAMPLING_FIELDS}
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt", max_length=ctx.settings.max_prompt_chars,
                                placeholder="lo-fi hip hop beat with warm piano and vinyl crackle")
            duration = gr.Slider(0.5, max_s, value=config.values["default_duration_s"], step=0.5,
                                 label="Duration (seconds)",
                                 elem_id="duration")
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
            # -1, not an empty field: Gradio shows and sends an empty Number as 0.
            seed = gr.Number(label="Seed", value=seed_value(config.values), precision=0, minimum=RANDOM_SEED,
                             elem_id="seed",
                             info="-1: a random seed (shown with the result) · same seed + prompt + settings: "
                                  "same audio")
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
        with gr.Column(scale=2):
            audio = gr.Audio(label="Result", type="filepath", interactive=False, elem_id="audio-out",
                             buttons=["download"])
            result = gr.Markdown(elem_id="result-info")
    return GenerateTab(prompt, duration, hint, adapter, adapter_hint_md, sampling, specs, seed, generate_btn,
                       cancel_btn, audio, result)


def wire_generate_tab(ctx: AppContext, tab: GenerateTab) -> None:
    def generate(prompt, duration_s, seed, top_k, top_p, temperature, guidance_scale, adapter, do_sample=True,
                 progress=gr.Progress()):
        """Generate music with the loaded model, with a LoRA adapter ('None (base model)', or an adapter id as
        listed by GET /api/adapters). The sampling values apply to this generation; the other settings (output
        format, loudness, seed policy for seed -1) are the model's saved ones. Returns the audio file and a summary
        naming the model, adapter and seed."""
        needs_listing = isinstance(adapter, str) and not adapter.strip().isdigit() and adapter.strip() not in (
            "", NO_ADAPTER)
        with user_errors():
            adapter_id = adapter_id_from(adapter, ctx.adapters.list(active=True) if needs_listing else None)
        raw = dict(do_sample=do_sample, top_k=top_k, top_p=top_p, temperature=temperature,
                   guidance_scale=guidance_scale)
        settings = {name: coerce(tab.specs[name], value) for name, value in raw.items()}
        req = GenerateRequest(prompt=prompt or "", duration_s=float(duration_s or 0),
                              seed=None if seed in (None, "", RANDOM_SEED) else int(seed), settings=settings,
                              adapter_id=adapter_id)
        progress(0, desc="Starting")

        def on_step(done: int, total: int) -> None:
            progress((done, total), desc="Decoding", unit="steps")

        with user_errors():
            r = ctx.generation.generate(req, on_step=on_step)
        model_name = ctx.models.get(r.model_id).display_name
        used = f"adapter **{md_escape(r.adapter_label)}**" if r.adapter_label else "no adapter (base model)"
        info = (f"**Job {r.job_id}** · {model_name} · {used} · {r.duration_s:g} s at {r.sample_rate / 1000:g} kHz"
                f" · {r.output_file.suffix.lstrip('.').upper()} · seed `{r.seed}` · {r.elapsed_s:.1f} s to generate")
        return str(r.output_file), info

    s = tab.sampling
    inputs = [tab.prompt, tab.duration, tab.seed, s["top_k"], s["top_p"], s["temperature"], s["guidance_scale"],
              tab.adapter, s["do_sample"]]
    tab.generate_btn.click(generate, inputs, [tab.audio, tab.result], api_name="generate", concurrency_id="gpu",
                           concurrency_limit=1)

    def cancel() -> None:
        """Stop the running generation at its next step."""
        if ctx.generation.cancel():
            gr.Info("Cancelling: the generation stops at its next step.")
        else:
            gr.Info("Nothing is generating.")

    tab.cancel_btn.click(cancel, None, None, api_name="cancel_generation", queue=False)

    def hint(value):
        return duration_hint(value, ctx.models.current().model)

    tab.duration.change(hint, tab.duration, tab.duration_hint, queue=False, show_progress="hidden",
                        api_visibility="private")
