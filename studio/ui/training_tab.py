"""The Training tab: datasets (studio/ui/datasets_panel.py), then runs: a "New run" form built from TrainingConfig's
JSON Schema (grouped by x-group, like the generation settings form; the DPO group only for DPO runs), the runs
list, and a run's view: status, step of total, ETA, live loss and learning-rate charts, Stop and Resume, every
checkpoint's audition beside the starting point's (the same prompts and seeds: step 0 first), registration of any
checkpoint, the adapter registered, and the log's last lines when the run failed. A run opens from a link
(`/?run=<id>`: the adapter timeline's run link).

Every action goes through ctx.training (studio.services.training.TrainingService); its errors become gr.Error.
The charts and the view follow the run through a gr.Timer outside Gradio's queue (like the A/B tab's): a tick
re-reads the run and changes the page only when something changed.
"""
from __future__ import annotations

import html
import logging
import math
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from studio.context import AppContext
from studio.errors import NotFound, StudioError
from studio.services.training import (CreateRunRequest, LossPoint, RegisterCheckpointRequest, RunInfo,
                                      RunSummary)
from studio.training.config import GROUPS, TrainingConfig, config_schema
from studio.ui.common import md_escape, notify_text, page_user, user_errors
from studio.ui.access import is_admin_page
from studio.ui.datasets_panel import DatasetsPanel, build_datasets_panel, wire_datasets_panel
from studio.ui.queue_panel import fmt_eta

log = logging.getLogger(__name__)
from studio.ui.settings_form import FieldSpec, coerce, field_specs, make_widget

REFRESH_EVERY_S = 2.0
LR_UNIT = 1e-4  # the chart's learning rates: "1.0" rather than "0.0001", which its axis cut to "0001"
RUN_PARAM = "run"  # /?run=<id> opens a run (the adapter timeline's run link)
NONE = "none"  # the start adapter dropdown's value for "no adapter"
LIST_HEADERS = ["ID", "Name", "Method", "Status", "Step", "Loss", "ETA", "Trained on", "Adapter"]
MAX_CHART_POINTS = 1000  # a long run's curve is thinned for the page (the service keeps every point)
LIVE = ("queued", "running", "stopping")
STATUS_WORDS = {"queued": "⏳ Queued (another run trains first)", "running": "🏃 Training",
                "stopping": "⏹ Stopping (saving a checkpoint)", "succeeded": "✅ Finished",
                "stopped": "⏸ Stopped (Resume goes on from the last checkpoint)",
                "failed": "❌ Failed", "interrupted": "⚠️ Interrupted (Resume goes on from the last checkpoint)"}
METHODS = [("Supervised: clips with captions (a dataset)", "sft"),
           ("Preference (DPO): the votes of a closed A/B test", "dpo")]
OPEN_GROUPS = ("Training",)  # the groups open at first; the others are a click away


@dataclass
class RunForm:
    method: gr.Radio
    name: gr.Textbox
    dataset: gr.Dropdown
    abtest: gr.Dropdown
    start_adapter: gr.Dropdown
    prompts: gr.Textbox
    description: gr.Textbox
    auto_register: gr.Checkbox
    groups: dict[str, gr.Accordion]
    fields: list  # widgets, in the order of specs
    specs: list[FieldSpec]
    create_btn: gr.Button


@dataclass
class TrainingTab:
    datasets: DatasetsPanel
    form: RunForm
    choice: gr.Dropdown
    refresh: gr.Button
    table: gr.Dataframe
    summary: gr.Markdown
    loss_plot: gr.LinePlot
    lr_plot: gr.LinePlot
    acc_plot: gr.LinePlot  # DPO runs: the share of pairs where the adapter prefers the chosen clip
    stop_btn: gr.Button
    resume_btn: gr.Button
    checkpoints: gr.HTML
    reg_step: gr.Dropdown
    reg_name: gr.Textbox
    reg_btn: gr.Button
    registered: gr.Markdown
    log: gr.Textbox
    seen: gr.State  # what the page shows (the timer changes it only when this changes)
    timer: gr.Timer  # follows the run while the tab is shown (a page on another tab costs the studio nothing)


# ---- pure helpers: the form ---------------------------------------------------------------------------------------
def grouped_specs(schema: dict | None = None) -> dict[str, list[FieldSpec]]:
    """The configuration's fields by group (x-group), in the schema's order; groups in GROUPS' order."""
    schema = schema or config_schema()
    groups: dict[str, list[FieldSpec]] = {g: [] for g in GROUPS}
    for spec in field_specs(schema):
        groups.setdefault(schema["properties"][spec.name].get("x-group", "Other"), []).append(spec)
    return {g: specs for g, specs in groups.items() if specs}


def config_values(specs: list[FieldSpec], values: list) -> dict[str, Any]:
    """The form's values as the configuration's JSON, or gr.Error naming every field that is wrong (by its label,
    as the form shows it)."""
    config = {f.name: coerce(f, v) for f, v in zip(specs, values)}
    labels = {f.name: f.label for f in specs}
    problems = [f"{labels[k]}: enter a value" for k, v in config.items() if v is None]
    if not problems:
        try:
            TrainingConfig.model_validate(config)
        except ValidationError as exc:
            for e in exc.errors():
                key = str(e["loc"][0]) if e["loc"] else ""
                problems.append(f"{labels.get(key, key)}: {e['msg']}")
    if problems:
        raise gr.Error(notify_text("Check the configuration: " + "; ".join(problems) + "."), print_exception=False)
    return config


def prompt_lines(text: str | None) -> list[str] | None:
    """Audition prompts, one per line; none: the studio picks them (the dataset's first captions)."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines or None


def _id(value) -> int | None:
    if value in (None, "", NONE):
        return None
    return int(value)


def run_request(method: str, name: str | None, dataset, abtest, start_adapter, prompts: str | None,
                auto_register: bool, config: dict[str, Any], description: str | None = "") -> CreateRunRequest:
    """The form as a CreateRunRequest (the service checks the rest: the dataset, the test, the adapter)."""
    if method == "sft" and _id(dataset) is None:
        raise gr.Error("Choose the dataset to train on (create one in Datasets, above).", print_exception=False)
    if method == "dpo" and _id(abtest) is None:
        raise gr.Error("Choose a closed A/B test: its votes are what the run learns from.", print_exception=False)
    try:
        return CreateRunRequest(method=method, name=str(name or "").strip() or None,
                                dataset_id=_id(dataset) if method == "sft" else None,
                                abtest_id=_id(abtest) if method == "dpo" else None,
                                start_adapter_id=_id(start_adapter), config=config,
                                audition_prompts=prompt_lines(prompts), auto_register=bool(auto_register),
                                description=str(description or "").strip())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise gr.Error(notify_text(f"Check the form: {problems}."), print_exception=False) from None


def dataset_choices(datasets) -> list[tuple[str, str]]:
    return [(f"#{d.id} {d.name} v{d.version} · {d.clips} clips, {d.total_minutes:.1f} min · {d.model_id}",
             str(d.id)) for d in datasets]


def abtest_choices(tests) -> list[tuple[str, str]]:
    """Closed tests first (only they can be trained on); the others say why not (the studio refuses them)."""
    ordered = sorted(tests, key=lambda t: (not t.closed, -t.id))
    return [(f"#{t.id} {t.name} · {t.votes} votes" + ("" if t.closed else " · not closed yet"), str(t.id))
            for t in ordered]


def adapter_choices(adapters) -> list[tuple[str, str]]:
    items = sorted(adapters, key=lambda a: (a.name.casefold(), a.version))
    return [("None (a new adapter)", NONE)] + [(f"{a.label} · {a.base_model}", str(a.id)) for a in items]


# ---- pure helpers: the runs ---------------------------------------------------------------------------------------
def fmt_loss(loss: float | None) -> str:
    return "—" if loss is None or not math.isfinite(loss) else f"{loss:.4g}"


def trained_on(run: RunSummary) -> str:
    if run.method == "dpo":
        return f"A/B test #{run.abtest_id}" if run.abtest_id else "—"
    if run.dataset_name:
        return f"{run.dataset_name} v{run.dataset_version}"
    return f"dataset #{run.dataset_id}" if run.dataset_id else "—"


def list_frame(runs: list[RunSummary]) -> pd.DataFrame:
    rows = [[r.id, r.name, r.method, r.status, f"{r.step} of {r.total_steps}", fmt_loss(r.loss),
             fmt_eta(r.eta_s) if r.status == "running" else "", trained_on(r), r.adapter_label or ""]
            for r in runs]
    return pd.DataFrame(rows, columns=LIST_HEADERS)


def run_choices(runs: list[RunSummary]) -> list[tuple[str, int]]:
    return [(f"#{r.id} {r.name} · {r.status}", r.id) for r in runs]


def thin(curve: list[LossPoint], limit: int = MAX_CHART_POINTS) -> list[LossPoint]:
    """At most `limit` points, evenly spread, the first and the last always kept (the chart of a long run stays
    light; its shape does not change)."""
    if len(curve) <= limit:
        return list(curve)
    every = math.ceil(len(curve) / (limit - 1))
    kept = curve[::every]
    return kept if kept[-1] is curve[-1] else [*kept, curve[-1]]


def curve_frames(curve: list[LossPoint]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(loss, learning rate in units of LR_UNIT, preference accuracy (DPO only; else empty)) by step, for the
    three charts."""
    points = thin(curve)
    loss = [{"step": p.step, "loss": p.loss} for p in points]
    lr = [{"step": p.step, "lr": p.lr / LR_UNIT} for p in points]
    acc = [{"step": p.step, "accuracy": p.accuracy} for p in points if p.accuracy is not None]
    # numeric columns even when empty: the chart fixes its axes' kinds from the first frame it gets (an empty
    # frame of objects made them categorical: one tick per loss value, and no line)
    return tuple(pd.DataFrame(rows, columns=["step", y]).astype({"step": "int64", y: "float64"})
                 for rows, y in ((loss, "loss"), (lr, "lr"), (acc, "accuracy")))


def summary_markdown(run: RunInfo) -> str:
    words = STATUS_WORDS.get(run.status, run.status)
    pct = f" ({run.step / run.total_steps:.0%})" if run.total_steps else ""
    eta = f" · about {fmt_eta(run.eta_s).removeprefix('about ')} to go" if run.status == "running" and \
        run.eta_s is not None else ""
    accuracy = next((p.accuracy for p in reversed(run.loss_curve) if p.accuracy is not None), None)
    acc = f" · preference accuracy {accuracy:.0%}" if accuracy is not None else ""
    lines = [f"### #{run.id} {md_escape(run.name)}",
             f"**{words}** · step **{run.step}** of {run.total_steps}{pct} · loss {fmt_loss(run.loss)}{acc}{eta}",
             ""]
    if run.status == "failed":
        code = f" (`{md_escape(run.error_code)}`)" if run.error_code else ""
        lines += [f"**What went wrong**{code}: {md_escape(run.error or 'the training process ended unexpectedly')}",
                  ""]
    elif run.status == "interrupted" and run.error:
        lines += [md_escape(run.error), ""]
    data = ("A/B test #" + str(run.abtest_id) + " (its votes)" if run.method == "dpo" else
            f"{md_escape(run.dataset_name or '#' + str(run.dataset_id))} v{run.dataset_version}"
            + (f" (`{md_escape(run.dataset_hash[:12])}`)" if run.dataset_hash else ""))
    rev = f" (revision `{md_escape(run.base_model_revision[:12])}`)" if run.base_model_revision else ""
    method = "DPO (preference)" if run.method == "dpo" else "supervised (sft)"
    lines += [f"{method} on {data} · base model {md_escape(run.model_id)}{rev} · started by "
              f"{md_escape(run.created_by)}  ",
              f"<small>Device policy: {md_escape(run.device_policy)}</small>"]
    return "\n".join(lines)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _clip_cell(clip, what: str) -> str:
    score = f"<div class='tr-score'>score {clip.score:.3f}</div>" if clip.score is not None else ""
    if clip.audio_url and clip.status == "succeeded":
        label = f"{clip.prompt} (seed {clip.seed}) at {what}"
        return (f"<audio controls preload='none' src='{_e(clip.audio_url)}' aria-label='{_e(label)}' "
                f"data-job='{_e(clip.job_id)}'></audio>{score}")
    words = {"waiting": "waiting (for the run's base model to be loaded, or room in the queue)",
             "queued": "queued", "running": "generating", "failed": "failed", "cancelled": "cancelled",
             "interrupted": "interrupted (the studio stopped)"}.get(clip.status, clip.status)
    return f"<span class='tr-pending'>{_e(words)}</span>{score}"


def checkpoints_html(run: RunInfo) -> str:
    """The audition grid: a row per checkpoint (step 0, the starting point, first), a column per prompt (and its
    seed, the same for every row): hear each checkpoint against the start, and when it starts to overfit."""
    if not run.checkpoints:
        return "<div id='training-checkpoints-empty'><p>No checkpoint yet.</p></div>"
    prompts: list[tuple[str, int]] = []
    for c in run.checkpoints:
        for a in c.auditions:
            if (a.prompt, a.seed) not in prompts:
                prompts.append((a.prompt, a.seed))
    head = "".join(f"<th title='seed {s}'>{_e(p)}<div class='tr-seed'>seed {s}</div></th>" for p, s in prompts)
    rows = []
    for c in run.checkpoints:
        by_key = {(a.prompt, a.seed): a for a in c.auditions}
        what = "start" if c.step == 0 else f"step {c.step}"
        cells = "".join(f"<td>{_clip_cell(by_key[k], what) if k in by_key else '—'}</td>" for k in prompts)
        facts = [f"loss {fmt_loss(c.loss)}"] if c.step else ["the starting point"]
        if c.mean_score is not None:
            facts.append(f"mean score {c.mean_score:.3f}")
        if c.adapter_label:
            facts.append(f"registered as {_e(c.adapter_label)}")
        if c.step and not c.resumable:
            facts.append("adapter only: no resume state (keep_last)")
        rows.append(f"<tr data-step='{c.step}' class='{'tr-start' if c.step == 0 else 'tr-checkpoint'}'>"
                    f"<th scope='row'><b>{what}</b><div class='tr-facts'>{' · '.join(facts)}</div></th>{cells}</tr>")
    note = ("" if prompts else "<p>No audition prompts: this run's checkpoints are not auditioned.</p>")
    return (f"<div id='training-audition'>{note}<table><thead><tr><th>Checkpoint</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def register_choices(run: RunInfo) -> list[tuple[str, int]]:
    """The checkpoints that can be registered (not step 0), newest first, saying which already were."""
    out = []
    for c in sorted((c for c in run.checkpoints if c.step > 0), key=lambda c: -c.step):
        done = f" · registered as {c.adapter_label}" if c.adapter_label else ""
        out.append((f"step {c.step} · loss {fmt_loss(c.loss)}{done}", c.step))
    return out


def registered_markdown(run: RunInfo) -> str:
    versions = [c for c in run.checkpoints if c.adapter_label]
    if not versions and not run.adapter_label:
        end = ("the last checkpoint is registered when the run finishes" if run.status in LIVE else
               "register a checkpoint below to use it")
        return f"*No adapter registered from this run yet: {end}.*"
    lines = [f"- **{md_escape(c.adapter_label)}** from step {c.step} (loss {fmt_loss(c.loss)})" for c in versions]
    if run.adapter_label and not any(c.adapter_id == run.adapter_id for c in versions):
        lines.insert(0, f"- **{md_escape(run.adapter_label)}**")
    return "**Registered adapters** (Adapters tab; usable in Generate and A/B tests):\n" + "\n".join(lines)


def run_id_from(params: dict | None) -> int | None:
    """The run a page link names (`?run=12`), or None."""
    raw = (params or {}).get(RUN_PARAM)
    try:
        value = int(str(raw))
    except (TypeError, ValueError):
        return None
    return value if value >= 1 else None


# ---- the tab --------------------------------------------------------------------------------------------------
def build_run_form(ctx: AppContext) -> RunForm:
    groups_specs = grouped_specs()
    defaults = TrainingConfig().model_dump()
    with gr.Accordion("New run", open=True, elem_id="training-new"):
        method = gr.Radio(METHODS, value="sft", label="Train", elem_id="training-method")
        with gr.Row(equal_height=True):
            name = gr.Textbox(label="Name", max_lines=1, elem_id="training-name", scale=2,
                              info="The adapter's name its versions are registered under (default: the dataset's)")
            dataset = gr.Dropdown([], label="Dataset", elem_id="training-dataset", scale=3,
                                  info="Its current version is recorded with the run")
            abtest = gr.Dropdown([], label="A/B test (closed)", elem_id="training-abtest", scale=3, visible=False,
                                 info="Each pair's majority side is the preferred clip; ties are skipped")
            start_adapter = gr.Dropdown([("None (a new adapter)", NONE)], value=NONE, elem_id="training-start",
                                        label="Continue from adapter", scale=2,
                                        info="DPO default: the side the votes preferred")
        with gr.Row():
            prompts = gr.Textbox(label="Audition prompts (one per line; empty: the dataset's first captions)",
                                 lines=2, elem_id="training-prompts", scale=3)
            description = gr.Textbox(label="Description (given to the adapter versions registered from it)",
                                     lines=2, elem_id="training-description", scale=2)
        fields, specs, accordions = [], [], {}
        for group, group_specs in groups_specs.items():
            with gr.Accordion(f"{group}", open=group in OPEN_GROUPS, visible=group != "DPO",
                              elem_id=f"training-group-{group.lower()}") as acc:
                with gr.Row(elem_classes=["training-form"]):
                    for f in group_specs:
                        fields.append(make_widget(f, defaults.get(f.name, f.default), f"training-cfg-{f.name}",
                                                  min_width=220))
                        specs.append(f)
            accordions[group] = acc
        with gr.Row(equal_height=True):
            auto_register = gr.Checkbox(True, label="Register the last checkpoint as an adapter version when the "
                                                    "run finishes", elem_id="training-auto-register", scale=3)
            create_btn = gr.Button("Start training", variant="primary", elem_id="training-create", scale=1)
    return RunForm(method, name, dataset, abtest, start_adapter, prompts, description, auto_register, accordions,
                   fields, specs, create_btn)


def build_training_tab(ctx: AppContext) -> TrainingTab:
    datasets = build_datasets_panel(ctx)
    gr.Markdown("### Runs", elem_id="training-runs-title")
    form = build_run_form(ctx)
    with gr.Row(equal_height=True):
        choice = gr.Dropdown([], label="Run", elem_id="training-choice", scale=3)
        refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=100, elem_id="training-refresh")
    table = gr.Dataframe(pd.DataFrame([], columns=LIST_HEADERS), headers=LIST_HEADERS, interactive=False,
                         elem_id="training-table", max_height=220, label="Training runs")
    with gr.Group(elem_id="training-run"):
        summary = gr.Markdown("*No run chosen: start one above, or choose one from the list.*",
                              elem_id="training-summary", padding=True)
        with gr.Row():
            stop_btn = gr.Button("⏹ Stop (saves a checkpoint)", size="sm", elem_id="training-stop",
                                 interactive=False)
            resume_btn = gr.Button("▶ Resume", size="sm", elem_id="training-resume", interactive=False)
        empty_loss, empty_lr, empty_acc = curve_frames([])
        with gr.Row():
            loss_plot = gr.LinePlot(empty_loss, x="step", y="loss", title="Loss", elem_id="training-loss",
                                    x_title="step", y_title="loss", height=260)
            lr_plot = gr.LinePlot(empty_lr, x="step", y="lr", title="Learning rate (× 1e-4)", elem_id="training-lr",
                                  x_title="step", y_title="learning rate", height=260)
            acc_plot = gr.LinePlot(empty_acc, x="step", y="accuracy", title="Preference accuracy (DPO)",
                                   elem_id="training-accuracy", x_title="step", y_title="accuracy", height=260,
                                   visible=False)
        gr.Markdown("#### Audition: every checkpoint beside the start (same prompts, same seeds)")
        checkpoints = gr.HTML("<div id='training-checkpoints-empty'></div>", elem_id="training-checkpoints")
        registered = gr.Markdown(elem_id="training-registered")
        with gr.Row(equal_height=True):
            reg_step = gr.Dropdown([], label="Checkpoint", elem_id="training-reg-step", scale=2)
            reg_name = gr.Textbox(label="Adapter name (default: the run's)", max_lines=1, elem_id="training-reg-name",
                                  scale=2)
            reg_btn = gr.Button("Register this checkpoint", elem_id="training-register", scale=1)
        log = gr.Textbox(label="The training process's last lines", lines=10, max_lines=20, interactive=False,
                         visible=False, elem_id="training-log")
    return TrainingTab(datasets, form, choice, refresh, table, summary, loss_plot, lr_plot, acc_plot, stop_btn,
                       resume_btn,
                       checkpoints, reg_step, reg_name, reg_btn, registered, log, gr.State(None),
                       gr.Timer(REFRESH_EVERY_S, active=False))


def run_parts(run: RunInfo | None, reg_value=None) -> list:
    """The run's view as plain values, one per output of run_updates, each comparable with the one the page shows
    (a tick changes only the outputs whose value changed: a player being listened to, or a checkpoint being chosen,
    is never reset by a step of the run)."""
    if run is None:
        return ["*No run chosen: start one above, or choose one from the list.*", ("sft", ()), None,
                "<div id='training-checkpoints-empty'></div>", ((), None), "", ("", False)]
    choices = register_choices(run)
    steps = [c[1] for c in choices]
    reg = reg_value if reg_value in steps else (steps[0] if steps else None)
    curve = tuple((p.step, p.loss, p.lr, p.accuracy) for p in run.loss_curve)
    return [summary_markdown(run), (run.method, curve), run.status, checkpoints_html(run), (tuple(choices), reg),
            registered_markdown(run), (run.log_tail or "", run.status == "failed" and bool(run.log_tail))]


def run_updates(run: RunInfo | None, reg_value=None, before: list | None = None) -> tuple[list, list]:
    """([summary, loss chart, lr chart, accuracy chart, stop, resume, checkpoints, register choices, registered,
    log], parts) for a run (None: no run chosen); outputs whose part equals `before`'s are left alone (gr.skip)."""
    parts = run_parts(run, reg_value)
    old = before if before and len(before) == len(parts) else [object()] * len(parts)
    summary, (method, curve), status, grid, (choices, reg), registered, (log, log_visible) = parts
    same = [a == b for a, b in zip(parts, old)]
    points = [LossPoint(step=st, loss=lo, lr=lr, accuracy=ac) for st, lo, lr, ac in curve]
    loss, lr, acc = curve_frames(points)
    out = [summary if not same[0] else gr.skip(),
           *((loss, lr, gr.LinePlot(value=acc, visible=method == "dpo")) if not same[1]
             else (gr.skip(), gr.skip(), gr.skip())),
           *((gr.Button(interactive=status in ("queued", "running")),
              gr.Button(interactive=status in ("stopped", "interrupted", "failed"))) if not same[2]
             else (gr.skip(), gr.skip())),
           grid if not same[3] else gr.skip(),
           gr.Dropdown(choices=list(choices), value=reg) if not same[4] else gr.skip(),
           registered if not same[5] else gr.skip(),
           gr.Textbox(value=log, visible=log_visible) if not same[6] else gr.skip()]
    return out, parts


def overview_outputs_of(tab: TrainingTab) -> list:
    """The list, the choice, the run's view (as run_updates) and what the page shows (seen)."""
    return [tab.table, tab.choice, tab.summary, tab.loss_plot, tab.lr_plot, tab.acc_plot, tab.stop_btn,
            tab.resume_btn, tab.checkpoints, tab.reg_step, tab.registered, tab.log, tab.seen]


def overview_updates(ctx: AppContext, run_id, seen=None, force: bool = True, reg_value=None) -> list:
    """Updates for overview_outputs_of: the list, the choice, and the chosen run's view (the newest run when none
    is chosen). Without `force`, only what changed since `seen` (what the page shows) is sent."""
    runs = ctx.training.list()
    ids = [r.id for r in runs]
    value = int(run_id) if run_id not in (None, "") and int(run_id) in ids else (ids[0] if ids else None)
    run = None
    if value is not None:
        try:
            run = ctx.training.get(value)
        except NotFound:  # deleted between the list and now
            run = None
    frame = list_frame(runs)
    choices = run_choices(runs)
    before = seen if (not force and isinstance(seen, dict) and seen.get("run") == value) else {}
    if run is not None and reg_value not in (None, ""):
        reg_value = int(reg_value)
    view, parts = run_updates(run, reg_value, before.get("parts"))
    table_key, choice_key = repr(frame.values.tolist()), repr((choices, value))
    now = {"run": value, "table": table_key, "choice": choice_key, "parts": parts}
    return [frame if before.get("table") != table_key else gr.skip(),
            gr.Dropdown(choices=choices, value=value) if before.get("choice") != choice_key else gr.skip(),
            *view, now]


def wire_training_tab(ctx: AppContext, tab: TrainingTab, tab_item: gr.Tab) -> None:
    wire_datasets_panel(ctx, tab.datasets, tab_item)
    private = dict(api_visibility="private")
    form = tab.form
    overview_outputs = overview_outputs_of(tab)

    def overview(run_id, seen=None, force: bool = True) -> list:
        return overview_updates(ctx, run_id, seen, force)

    def form_choices(dataset, abtest, start):
        """The form's dropdowns follow the datasets, tests and adapters (a choice made stays when it still exists)."""
        dataset = None if dataset in (None, "") else str(dataset)  # the panel's dropdown holds ints
        ds = dataset_choices(ctx.datasets.list())
        tests = abtest_choices(ctx.abtests.list())
        adapters = adapter_choices(ctx.adapters.list(active=True))

        def keep(value, choices, fallback):
            known = {c[1] for c in choices}
            return value if value in known else fallback

        return [gr.Dropdown(choices=ds, value=keep(dataset, ds, ds[0][1] if ds else None)),
                gr.Dropdown(choices=tests, value=keep(abtest, tests, tests[0][1] if tests else None)),
                gr.Dropdown(choices=adapters, value=keep(start, adapters, NONE))]

    # The datasets panel above shows a new dataset, or a new version of one: the form offers it, chosen
    panel = tab.datasets
    panel.summary.change(lambda shown, abtest, start: form_choices(shown, abtest, start),
                         [panel.dataset, form.abtest, form.start_adapter],
                         [form.dataset, form.abtest, form.start_adapter], show_progress="hidden", **private)
    choice_io = dict(inputs=[form.dataset, form.abtest, form.start_adapter],
                     outputs=[form.dataset, form.abtest, form.start_adapter], show_progress="hidden", **private)
    tab_item.select(form_choices, **choice_io).then(lambda run_id: overview(run_id), tab.choice, overview_outputs,
                                                    show_progress="hidden", **private)
    tab.refresh.click(form_choices, **choice_io).then(lambda run_id: overview(run_id), tab.choice,
                                                      overview_outputs, show_progress="hidden", **private)
    tab.choice.input(lambda run_id: overview(run_id), tab.choice, overview_outputs, show_progress="hidden",
                     **private)

    def tick(run_id, seen, reg_value):
        try:
            return overview_updates(ctx, run_id, seen, force=False, reg_value=reg_value)
        except (gr.Error, StudioError) as exc:  # e.g. the run's records changing under it: said when the person acts
            log.warning("training tab: a refresh of run %s was skipped: %s", run_id, exc)
            return [gr.skip()] * (len(overview_outputs) - 1) + [seen]

    # outside Gradio's queue, like the other refreshes: a tick never waits behind (or delays) a person's action
    tab.timer.tick(tick, [tab.choice, tab.seen, tab.reg_step], overview_outputs, queue=False,
                   show_progress="hidden", **private)
    tab_item.select(lambda: gr.Timer(active=True), None, tab.timer, queue=False, show_progress="hidden",
                    **private)

    def method_changed(method):
        dpo = method == "dpo"
        return [gr.Dropdown(visible=not dpo), gr.Dropdown(visible=dpo), gr.Accordion(visible=dpo, open=dpo)]

    form.method.change(method_changed, form.method, [form.dataset, form.abtest, form.groups["DPO"]],
                       show_progress="hidden", **private)

    def create(data: dict, request: gr.Request):
        # a set of inputs: one dict (Gradio injects the request only into named parameters, never after *args)
        config = config_values(form.specs, [data[w] for w in form.fields])
        req = run_request(data[form.method], data[form.name], data[form.dataset], data[form.abtest],
                          data[form.start_adapter], data[form.prompts], data[form.auto_register], config,
                          data[form.description])
        with user_errors():
            run = ctx.training.create(req, page_user(request))
        where = "it starts training" if run.status == "running" else \
            "it waits for the run training now" if run.status == "queued" else f"status: {run.status}"
        gr.Info(notify_text(f"Run #{run.id} {run.name} created: {where}."))
        return overview(run.id)

    form.create_btn.click(create, {form.method, form.name, form.dataset, form.abtest, form.start_adapter,
                                   form.prompts, form.description, form.auto_register, *form.fields}, overview_outputs,
                          show_progress="minimal", **private)  # scripts: start_training_run (below)

    def need_run(run_id) -> int:
        if run_id in (None, ""):
            raise gr.Error("Choose a run first.", print_exception=False)
        return int(run_id)

    def stop(run_id, request: gr.Request):
        run_id = need_run(run_id)
        with user_errors():
            run = ctx.training.stop(run_id, page_user(request))
        gr.Info(notify_text(f"Run #{run.id} stopped at step {run.step}: Resume goes on from there."
                            if run.status == "stopped" else f"Run #{run.id}: {run.status}."))
        return overview(run_id)

    def resume(run_id, request: gr.Request):
        run_id = need_run(run_id)
        with user_errors():
            run = ctx.training.resume(run_id, page_user(request))
        gr.Info(notify_text(f"Run #{run.id} resumes from step {run.step}."))
        return overview(run_id)

    # minimal progress: a stop waits for the run's checkpoint (a few seconds); the person sees it is under way
    tab.stop_btn.click(stop, tab.choice, overview_outputs, show_progress="minimal", **private)
    tab.resume_btn.click(resume, tab.choice, overview_outputs, show_progress="minimal", **private)

    def register(run_id, step, name, request: gr.Request):
        run_id = need_run(run_id)
        if step in (None, ""):
            raise gr.Error("Choose a checkpoint to register (runs write one every few steps and at the end).",
                           print_exception=False)
        try:
            req = RegisterCheckpointRequest(step=int(step), name=str(name or "").strip() or None)
        except ValidationError as exc:
            raise gr.Error(notify_text("Check the name: " + exc.errors()[0]["msg"]), print_exception=False) from None
        with user_errors():
            adapter = ctx.training.register(run_id, req, page_user(request))
        gr.Info(notify_text(f"Step {step} registered as {adapter.label}: find it in the Adapters tab."))
        return overview(run_id)

    tab.reg_btn.click(register, [tab.choice, tab.reg_step, tab.reg_name], overview_outputs, show_progress="minimal",
                      **private)

    # Scripts (gradio_client) get the same actions with JSON in and out (REST: /api/training/runs).
    def start_training_run(request_body: dict, request: gr.Request) -> dict:
        """Create a training run (the body of POST /api/training/runs) and start it, or queue it."""
        with user_errors():
            try:
                req = CreateRunRequest.model_validate(request_body)
            except ValidationError as exc:
                where = ".".join(map(str, exc.errors()[0]["loc"]))
                raise gr.Error(notify_text(f"{where}: {exc.errors()[0]['msg']}"), print_exception=False) from None
            return ctx.training.create(req, page_user(request)).model_dump(mode="json")

    def training_run(run_id: int) -> dict:
        """A run with its configuration, checkpoints, auditions and loss curve."""
        with user_errors():
            return ctx.training.get(int(run_id)).model_dump(mode="json")

    def stop_training_run(run_id: int, request: gr.Request) -> dict:
        """Stop a run (a checkpoint is saved); answers once it ended."""
        with user_errors():
            return ctx.training.stop(int(run_id), page_user(request)).model_dump(mode="json")

    def resume_training_run(run_id: int, request: gr.Request) -> dict:
        """Resume a stopped, interrupted or failed run from its last checkpoint."""
        with user_errors():
            return ctx.training.resume(int(run_id), page_user(request)).model_dump(mode="json")

    def register_training_checkpoint(run_id: int, step: int, request: gr.Request) -> dict:
        """Register a run's checkpoint (step 0: the last one) as an adapter version."""
        with user_errors():
            req = RegisterCheckpointRequest(step=int(step) or None)
            return ctx.training.register(int(run_id), req, page_user(request)).model_dump(mode="json")

    for fn in (start_training_run, training_run, stop_training_run, resume_training_run,
               register_training_checkpoint):
        gr.api(fn, api_name=fn.__name__)


def wire_tab_timer(tab: TrainingTab, other_tabs: list[gr.Tab]) -> None:
    """The run view's timer ticks while the Training tab is shown: choosing another tab stops it (the run's view
    reads its whole loss curve; pages left on other tabs should not)."""
    for other in other_tabs:
        other.select(lambda: gr.Timer(active=False), None, tab.timer, queue=False, show_progress="hidden",
                     api_visibility="private")


def wire_run_link(ctx: AppContext, tab: TrainingTab, tabs: gr.Tabs, tab_id: str, demo: gr.Blocks) -> None:
    """`/?run=<id>` (the adapter timeline's run link) opens the Training tab on that run (and starts following
    it)."""
    def open_run(request: gr.Request):
        params = dict(request.query_params) if request is not None else {}
        run_id = run_id_from(params)
        if run_id is None or not is_admin_page(request):  # training is an admin's (a hidden tab for a member)
            return [gr.skip()] * (2 + len(overview_outputs_of(tab)))
        try:
            ctx.training.get(run_id)
        except NotFound:
            gr.Warning(f"Training run #{run_id} does not exist.")
            return [gr.skip()] * (2 + len(overview_outputs_of(tab)))
        return [gr.Tabs(selected=tab_id), *overview_updates(ctx, run_id), gr.Timer(active=True)]

    demo.load(open_run, None, [tabs, *overview_outputs_of(tab), tab.timer], show_progress="hidden",
              api_visibility="private")
