"""Adapter metrics on the Adapters tab: a version's performance beside the base model (in its detail view), the
"Compare versions" view (two versions side by side, a verdict per metric in plain words), and the rating and
evaluation score of each version in the version timeline.

Text builders are pure functions (service results in, Markdown out; every name and description escaped); the view's
handlers call ctx.metrics (studio.services.metrics.MetricsService) only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import gradio as gr

from studio.context import AppContext
from studio.errors import StudioError
from studio.services.adapters import AdapterSummary
from studio.services.metrics import (AdapterPerformance, MetricComparison, TimelineFigures, VersionComparison,
                                     VersionFigures)
from studio.services.stats import SignTest, TwoSampleTest
from studio.services.evaluation import EvaluationInfo
from studio.ui.access import admin_only
from studio.ui.common import failed_status, md_escape, notify_text, page_user, plain_status, user_errors

DASH = "—"
VERDICT_WORDS = {"not_enough_data": "Not enough data", "no_difference": "No significant difference",
                 "not_comparable": "Not comparable", "not_tested": "No test (one figure per training run)"}


# ---- small formatters ----------------------------------------------------------------------------------------------
def fmt(x: float | None, digits: str = ".2f") -> str:
    return DASH if x is None else format(x, digits)


def fmt_p(p: float | None) -> str:
    return DASH if p is None else f"p = {p:.3g}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def rating_text(fig: VersionFigures) -> str:
    r = fig.rating
    return DASH + " (no rating)" if r.mean is None else f"{r.mean:.2f} ★ ({plural(r.n, 'rating')})"


def distribution_text(fig: VersionFigures) -> str:
    if not fig.rating.n:
        return DASH
    return " · ".join(f"{stars}★ {count}" for stars, count in fig.rating.distribution.items())


def evaluation_text(fig: VersionFigures) -> str:
    e = fig.evaluation
    if e is None:
        return DASH + " (no run)"
    return f"{fmt(e.mean_score, '.3f')} ({plural(e.n, 'clip')}, {md_escape(e.scorer)}, run {e.evaluation_id})"


def versus_base(test: TwoSampleTest | SignTest | None, what: str) -> str:
    """A test against the base model (A: the base model, B: this version) in plain words."""
    if test is None:
        return f"{what}: no comparison with the base model yet."
    if test.verdict == "not_enough_data":
        return f"{what}: not enough votes yet; at least {plural(test.more_needed, 'more decisive vote')}." \
            if isinstance(test, SignTest) else \
            f"{what}: not enough data to compare with the base model; at least {test.more_needed} more on each side."
    if test.verdict == "b":
        return f"{what}: **this version is better** than the base model ({fmt_p(test.p_value)}, significant at 5 %)."
    if test.verdict == "a":
        return f"{what}: **the base model is better** than this version ({fmt_p(test.p_value)}, significant at 5 %)."
    return f"{what}: no significant difference from the base model ({fmt_p(test.p_value)})."


# ---- the detail view's performance ------------------------------------------------------------------------------
def performance_markdown(p: AdapterPerformance) -> str:
    """This version's figures beside the base model's on the same prompts, the tests against the base model, and
    its revealed A/B tests."""
    base = md_escape(p.base_model_name)
    ab = p.ab
    vs = ab.vs_base
    vs_text = (f"{vs.wins_a} won, {vs.wins_b} lost, {plural(vs.ties, 'tie')}" if vs.decisive or vs.ties else DASH)
    rows = [
        ("Generations", str(p.adapter.generations), f"{p.base.generations} on the same prompts"),
        ("Average rating", rating_text(p.adapter), rating_text(p.base)),
        ("Ratings (1★ to 5★)", distribution_text(p.adapter), distribution_text(p.base)),
        ("Evaluation score", evaluation_text(p.adapter), evaluation_text(p.base)),
        ("Blind A/B votes", f"{ab.wins} won, {ab.losses} lost, {plural(ab.ties, 'tie')} "
                            f"({plural(len(ab.tests), 'test')})",
         f"against this version: {vs_text}"),
    ]
    table = "\n".join(f"| {k} | {a} | {b} |" for k, a, b in rows)
    lines = [f"#### Performance of {md_escape(p.label)}{' (deleted)' if p.deleted else ''}", "",
             f"| | This version | {base} (base model) |", "|---|---|---|", table, "",
             "- " + versus_base(p.rating_vs_base, "Ratings (Mann-Whitney U)"),
             "- " + versus_base(p.evaluation_vs_base, "Evaluation score (paired Wilcoxon)"),
             "- " + (versus_base(vs, "Blind A/B votes (sign test)") if vs.decisive else
                     "Blind A/B votes: no revealed test against the base model yet."), ""]
    if ab.tests:
        lines += ["| A/B test | Against | Won | Lost | Ties |", "|---|---|---|---|---|"]
        for t in ab.tests:
            over = f" with {md_escape(_overrides(t.overrides))}" if t.overrides else ""
            other = md_escape(t.opponent) + (f" with {md_escape(_overrides(t.opponent_overrides))}"
                                             if t.opponent_overrides else "")
            lines.append(f"| {md_escape(t.name)}{over} | {other} | {t.wins} | {t.losses} | {t.ties} |")
        lines.append("")
    pending = f" {plural(ab.pending_tests, 'test')} with this version not revealed yet." if ab.pending_tests else ""
    lines.append(f"<small>Base model figures are on the same prompts. {md_escape(ab.rule)}{pending}</small>")
    if p.notes:
        lines += ["", *[f"- {md_escape(n)}" for n in p.notes]]
    return "\n".join(lines)


def _overrides(overrides: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in overrides.items())


def performance_or_note(ctx: AppContext, adapter_id: int) -> str:
    """The detail view's performance panel (a note instead when the figures cannot be read)."""
    try:
        return performance_markdown(ctx.metrics.performance(adapter_id))
    except StudioError as exc:
        return f"*Performance not available: {md_escape(exc.message)}*"


# ---- the version timeline ----------------------------------------------------------------------------------------
def timeline_cells(fig: TimelineFigures | None) -> tuple[str, str]:
    """(rating, evaluation score) cells of one version in the timeline."""
    if fig is None:
        return DASH, DASH
    rating = DASH if fig.rating_mean is None else f"{fig.rating_mean:.2f} ({fig.ratings})"
    score = DASH if fig.evaluation_mean is None else f"{fig.evaluation_mean:.3f} ({fig.evaluation_n})"
    return rating, score


# ---- the comparison ---------------------------------------------------------------------------------------------
METRIC_TITLES = {"evaluation_score": "Evaluation score", "rating": "Average rating", "ab_votes": "Blind A/B votes"}


def _verdict(m: MetricComparison | None, names: tuple[str, str], verdict: str, better: str | None) -> str:
    if verdict in ("a", "b"):
        return f"✅ **{names[0 if verdict == 'a' else 1]} is better** ({fmt_p(m.p_value)})"
    words = VERDICT_WORDS.get(verdict, verdict)
    if verdict == "not_enough_data" and m is not None and m.more_needed:
        return f"⏳ {words}: {m.more_needed} more needed"
    if verdict == "no_difference" and m is not None:
        return f"{words} ({fmt_p(m.p_value)})"
    if verdict == "not_tested" and better:
        return f"Lower: {names[0 if better == 'a' else 1]} · {words}"
    return words


def _metric_values(m: MetricComparison) -> tuple[str, str, str]:
    if m.metric == "ab_votes":
        d = m.detail
        if not isinstance(d, SignTest) or not d.decisive:
            return DASH, DASH, "0 decisive votes"
        return (f"{d.wins_a} won ({fmt(m.value_a, '.0%')})", f"{d.wins_b} won ({fmt(m.value_b, '.0%')})",
                f"{plural(d.decisive, 'decisive vote')}, {plural(d.ties, 'tie')}")
    digits = ".3f" if m.metric == "evaluation_score" else ".2f"
    unit = "clips" if m.metric == "evaluation_score" else "ratings"
    return (f"{fmt(m.value_a, digits)} ({m.n_a})", f"{fmt(m.value_b, digits)} ({m.n_b})",
            f"{m.n_a} and {m.n_b} {unit}")


def comparison_markdown(c: VersionComparison) -> str:
    """The side-by-side table with a verdict per metric and the samples behind it, then each verdict in words."""
    names = (md_escape(c.a.label), md_escape(c.b.label))
    head = [f"#### {names[0]} (A) vs {names[1]} (B)", ""]
    if not c.comparable:
        head += [f"⚠️ **Not comparable.** {md_escape(c.reason)}", ""]
    loss = c.training_loss
    rows = [("Training loss, final (best)", f"{fmt(loss.final_a, '.4g')} ({fmt(loss.best_a, '.4g')})",
             f"{fmt(loss.final_b, '.4g')} ({fmt(loss.best_b, '.4g')})",
             f"{loss.steps_a} and {loss.steps_b} logged values", _verdict(None, names, loss.verdict, loss.better))]
    for m in (c.evaluation, c.rating, c.ab):
        a, b, samples = _metric_values(m)
        rows.append((METRIC_TITLES[m.metric], a, b, samples, _verdict(m, names, m.verdict, m.better)))
    table = "\n".join(f"| {' | '.join(r)} |" for r in rows)
    words = [f"- **{METRIC_TITLES.get(m.metric, 'Training loss')}:** {md_escape(m.summary)}"
             for m in (c.evaluation, c.rating, c.ab)]
    pending = (f"\n\n<small>{plural(c.ab_pending_tests, 'A/B test')} between them not revealed yet (not counted)."
               "</small>" if c.ab_pending_tests else "")
    return "\n".join([*head, f"| Metric | {names[0]} | {names[1]} | Samples | Verdict (5 % level) |",
                      "|---|---|---|---|---|", table, "",
                      f"- **Training loss:** {md_escape(loss.summary)}", *words]) + pending


def version_choices(live: list[AdapterSummary], deleted: list[AdapterSummary]) -> list[tuple[str, str]]:
    """(label, id) of every version, by name then version; deleted ones marked (their figures stay readable)."""
    every = [(a, False) for a in live] + [(a, True) for a in deleted]
    every.sort(key=lambda x: (x[0].name.casefold(), x[0].name, x[0].version))
    return [(f"{a.label} · {a.base_model_name}" + (" (deleted)" if gone else ""), str(a.id)) for a, gone in every]


def default_pair(choices: list[tuple[str, str]], live: list[AdapterSummary], selected) -> tuple[str | None, str | None]:
    """A: the version open in the detail view (else the first); B: the version before it of the same name (else
    another version of it, else nothing)."""
    ids = [value for _, value in choices]
    a = str(selected) if selected is not None and str(selected) in ids else (ids[0] if ids else None)
    shown = next((x for x in live if str(x.id) == a), None)
    if shown is None:
        return a, None
    same = sorted((x for x in live if x.name == shown.name and x.id != shown.id), key=lambda x: x.version)
    earlier = [x for x in same if x.version < shown.version]
    b = earlier[-1] if earlier else (same[0] if same else None)
    return a, str(b.id) if b else None


# ---- layout and events -------------------------------------------------------------------------------------------
@dataclass
class CompareView:
    accordion: gr.Accordion
    version_a: gr.Dropdown
    version_b: gr.Dropdown
    compare_btn: gr.Button
    result: gr.Markdown


def build_performance_panel() -> gr.Markdown:
    """The detail view's performance (filled by the Adapters tab's detail updates)."""
    return gr.Markdown(elem_id="adapter-performance")


@dataclass
class EvaluateRow:
    button: gr.Button
    status: gr.Markdown


def build_evaluate_row() -> EvaluateRow:
    """Under the performance: evaluate this version (and the base model, when it has no run on the same prompts)."""
    with gr.Row(equal_height=True, elem_classes=admin_only()):  # an evaluation run: an admin's
        button = gr.Button("Evaluate with CLAP", size="sm", scale=0, min_width=200, elem_id="adapter-evaluate")
        status = gr.Markdown("Scores this version over the evaluation prompt set (and the base model on the same "
                             "prompts and seeds, if it has no such run yet).", elem_id="adapter-evaluate-status")
    return EvaluateRow(button, status)


EVALUATE_POLL_S = 1.0


def same_prompts(a: EvaluationInfo, b: EvaluationInfo) -> bool:
    return a.scorer == b.scorer and [(c.prompt, c.seed) for c in a.clips] == [(c.prompt, c.seed) for c in b.clips]


def run_progress(run: EvaluationInfo, name: str) -> str:
    if run.status == "running":
        return f"{md_escape(name)}: {run.done} of {run.total} clips"
    if run.status == "succeeded":
        return f"{md_escape(name)}: mean score **{fmt(run.mean_score, '.3f')}** ({plural(run.n, 'clip')})"
    return f"{md_escape(name)}: {run.status}" + (f" ({md_escape(run.error)})" if run.error else "")


def wire_evaluate(ctx: AppContext, row: EvaluateRow, selected: gr.State, performance: gr.Markdown) -> None:
    def evaluate(adapter_id, request: gr.Request | None = None) -> Iterator[list]:
        if adapter_id is None:
            yield [failed_status("Select a version first."), gr.skip()]
            return
        user = page_user(request)
        try:
            with user_errors():
                adapter = ctx.adapters.get(int(adapter_id))
                runs = [(adapter.label, ctx.evaluation.evaluate(adapter.base_model, adapter.id, user))]
                base_name = ctx.registry.get(adapter.base_model).display_name
                base = ctx.evaluation.latest(adapter.base_model, None, runs[0][1].scorer)
                if base is None or not same_prompts(base, runs[0][1]):
                    runs.append((base_name, ctx.evaluation.evaluate(adapter.base_model, None, user)))
        except gr.Error as exc:
            yield [failed_status(f"❌ {md_escape(str(exc.message))}"), gr.skip()]
            return
        while True:  # the page follows the runs: their clips go through the queue like any job
            runs = [(name, ctx.evaluation.get_evaluation(run.id)) for name, run in runs]
            text = " · ".join(run_progress(run, name) for name, run in runs)
            if all(run.status != "running" for _, run in runs):
                break
            yield [plain_status(f"Evaluating… {text}"), gr.skip()]
            time.sleep(EVALUATE_POLL_S)
        yield [plain_status(f"Evaluated: {text}"), performance_or_note(ctx, int(adapter_id))]

    row.button.click(evaluate, selected, [row.status, performance], api_visibility="private",
                     show_progress="hidden")


def build_compare_view() -> CompareView:
    with gr.Accordion("Compare versions", open=False, elem_id="compare-accordion") as accordion:
        gr.Markdown("Two versions side by side: training loss, evaluation score, average rating and blind A/B "
                    "votes, with a verdict at the 5 % level or how much more data is needed.",
                    elem_id="compare-help")
        with gr.Row(equal_height=True):
            # allow_custom_value: scripts send adapter ids (/compare_versions); compare_text checks them
            version_a = gr.Dropdown([], label="Version A", elem_id="compare-a", scale=2, allow_custom_value=True)
            version_b = gr.Dropdown([], label="Version B", elem_id="compare-b", scale=2, allow_custom_value=True)
            compare_btn = gr.Button("Compare", variant="primary", scale=0, min_width=120, elem_id="compare-btn")
        result = gr.Markdown(elem_id="compare-result")
    return CompareView(accordion, version_a, version_b, compare_btn, result)


def compare_text(ctx: AppContext, a, b) -> str:
    """Compare two adapter versions (a, b: adapter ids): Markdown with training loss, evaluation score, average
    rating and blind A/B votes side by side, a verdict per metric at 5 % and the samples behind it. gr.Error
    (escaped) for a missing choice or a refusal."""
    if a in (None, "") or b in (None, ""):
        raise gr.Error("Choose two versions to compare.", print_exception=False)
    if str(a) == str(b):
        raise gr.Error("Choose two different versions.", print_exception=False)
    try:
        return comparison_markdown(ctx.metrics.compare(int(a), int(b)))
    except StudioError as exc:
        raise gr.Error(notify_text(exc.message), print_exception=False) from None
    except ValueError:
        raise gr.Error("Choose the versions in the lists.", print_exception=False) from None


def compare_choices(ctx: AppContext, shown) -> list:
    """[version A, version B, result] when the view opens: every version listed, A the one open in the detail view,
    B the one before it; a hint instead of a result when there are fewer than two versions."""
    live, deleted = ctx.adapters.list(), ctx.adapters.list(deleted=True)
    options = version_choices(live, deleted)
    a, b = default_pair(options, live, shown)
    hint = "" if len(options) >= 2 else "Register two versions of an adapter to compare them."
    return [gr.Dropdown(choices=options, value=a), gr.Dropdown(choices=options, value=b), hint]


def wire_compare_view(ctx: AppContext, view: CompareView, selected: gr.State) -> None:
    view.accordion.expand(lambda shown: compare_choices(ctx, shown), selected,
                          [view.version_a, view.version_b, view.result], queue=False, show_progress="hidden",
                          api_visibility="private")
    def compare_versions(version_a, version_b) -> str:
        """Compare two adapter versions by id (A, B): Markdown with a verdict per metric (also REST:
        GET /api/adapters/compare?ids=a,b, as JSON)."""
        return compare_text(ctx, version_a, version_b)

    view.compare_btn.click(compare_versions, [view.version_a, view.version_b], view.result, show_progress="hidden",
                           api_name="compare_versions")
