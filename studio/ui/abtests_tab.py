"""A/B tests tab: create a blind A/B test (two sides: the base model or an adapter version, plus setting overrides),
follow its generation, listen blind (two players labelled First and Second only, a vote, 'pair 3 of 10'), and read
the results with the verdict once revealed (closed by a person, or this listener voted on every pair). "Quick A/B"
in the Adapters tab's detail view fills the form with two versions of an adapter and opens this tab.

Every action goes through ctx.abtests (studio.services.abtests.ABTestService); its errors become gr.Error. The
listening view shows only what the service's blind answers carry; sides appear in the results alone.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from studio.context import AppContext
from studio.errors import InvalidValues, StudioError
from studio.services.abtests import ABResults, ABSideSpec, ABTestCreate, ABTestSummary, ABTestView, NextPair
from studio.ui.access import admin_only
from studio.ui.common import md_escape, notify_text, page_actor, page_user, user_errors
from studio.users import LOCAL_ACTOR

BASE = "base"  # the side dropdowns' value for the base model
DEFAULT_PROMPTS = ["lofi hip hop beat with mellow piano", "energetic rock riff with live drums",
                   "ambient synth pad, slow and calm", "acoustic folk guitar melody", "upbeat electronic dance track"]
LIST_HEADERS = ["ID", "Name", "Status", "Pairs ready", "Listeners", "Votes", "Closed"]
REFRESH_EVERY_S = 2.0
EMPTY_PLAYERS = "<div id='ab-players-empty'></div>"
VERDICT_WORDS = {"a": "A is better", "b": "B is better", "no_difference": "No significant difference",
                 "not_enough_data": "Not enough data"}


@dataclass
class ABTestsTab:
    name: gr.Textbox
    side_a: gr.Dropdown
    over_a: gr.Textbox
    side_b: gr.Dropdown
    over_b: gr.Textbox
    prompts: gr.Textbox
    seeds: gr.Number
    duration: gr.Number
    create_btn: gr.Button
    table: gr.Dataframe
    choice: gr.Dropdown
    progress: gr.Markdown
    listener: gr.Textbox
    start_btn: gr.Button
    pair_info: gr.Markdown
    players: gr.HTML
    vote_row: gr.Row
    vote_first: gr.Button
    vote_second: gr.Button
    vote_none: gr.Button
    results: gr.Markdown
    close_btn: gr.Button
    cancel_btn: gr.Button
    resume_btn: gr.Button
    delete_sure: gr.Checkbox
    delete_btn: gr.Button
    refresh: gr.Button
    pair: gr.State  # the pair number shown to this page's listener (None: none)
    seen: gr.State  # what the list shows (the timer refreshes only when it changed)


@dataclass
class QuickAB:
    version_a: gr.Dropdown
    version_b: gr.Dropdown
    button: gr.Button


# ---- pure helpers --------------------------------------------------------------------------------------------
def side_choices(ctx: AppContext) -> list[tuple[str, str]]:
    """The base model, then every active adapter version usable with the model the next job runs on."""
    adapters = sorted((a for a in ctx.adapters.list(active=True) if a.compatible),
                      key=lambda a: (a.name.casefold(), a.version))
    return [("Base model", BASE)] + [(a.label, str(a.id)) for a in adapters]


def parse_overrides(text: str | None, field: str) -> dict | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise gr.Error(notify_text(f"{field}: not valid JSON ({exc.msg}). Write e.g. {{\"temperature\": 0.8}}."),
                       print_exception=False) from None
    if not isinstance(value, dict):
        raise gr.Error(notify_text(f"{field}: write an object of settings, e.g. {{\"top_k\": 50}}."),
                       print_exception=False)
    return value


def side_spec(value: str | None, overrides: str | None, field: str) -> ABSideSpec:
    adapter_id = None if value in (None, "", BASE) else int(value)
    return ABSideSpec(adapter_id=adapter_id, overrides=parse_overrides(overrides, f"Side {field} overrides"))


def create_request(name, side_a, over_a, side_b, over_b, prompts, seeds, duration) -> ABTestCreate:
    lines = [line.strip() for line in str(prompts or "").splitlines() if line.strip()]
    if seeds is None or not float(seeds).is_integer():  # the box keeps what was typed; the studio says why not
        raise gr.Error(notify_text("Seeds per prompt is a whole number (1 or more)" + ("." if seeds is None else f", not {seeds:g}.")),
                       print_exception=False)
    try:
        return ABTestCreate(name=str(name or ""), side_a=side_spec(side_a, over_a, "A"),
                            side_b=side_spec(side_b, over_b, "B"), prompts=lines,
                            seeds_per_prompt=int(seeds),
                            duration_s=float(duration) if duration not in (None, "") else None)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise gr.Error(notify_text(f"Check the form: {problems}."), print_exception=False) from None


def list_frame(tests: list[ABTestSummary]) -> pd.DataFrame:
    rows = [[t.id, t.name, t.status, f"{t.clips_ready} of {t.pairs}", t.listeners, t.votes, "yes" if t.closed else ""]
            for t in tests]
    return pd.DataFrame(rows, columns=LIST_HEADERS)


def choices_of(tests: list[ABTestSummary]) -> list[tuple[str, int]]:
    return [(f"#{t.id} {t.name}", t.id) for t in tests]


def progress_markdown(view: ABTestView) -> str:
    state = {"generating": f"Generating the clips: {view.clips_ready} of {view.pairs} pairs ready.",
             "ready": f"Ready: {view.pairs} pairs to listen to.",
             "failed": f"Generation failed: {md_escape(view.error)} (Resume tries again).",
             "cancelled": f"Generation cancelled with {view.clips_ready} of {view.pairs} pairs made (Resume "
                          "finishes it)."}[view.status]
    votes = ", ".join(f"{md_escape(k)} {v}" for k, v in view.votes_per_listener.items()) or "none yet"
    closed = " **Closed**: the results are revealed to everyone." if view.closed else ""
    return (f"**{md_escape(view.name)}** · {md_escape(view.model_id)} · {len(view.prompts)} prompt(s) x "
            f"{view.seeds_per_prompt} seed(s), {view.duration_s:g} s clips\n\n{state} Votes per listener: "
            f"{votes}.{closed}")


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def results_markdown(res: ABResults | None) -> str:
    if res is None:
        return ("*Results are revealed once you have voted on every pair, or when the test is closed.*")
    o = res.overall
    ci = f"{o.ci95[0]:.0%}–{o.ci95[1]:.0%}" if o.ci95 else "—"
    p = "—" if o.p_value is None else f"{o.p_value:.3g}"
    lines = [f"### {VERDICT_WORDS[o.verdict]}", "", md_escape(res.verdict), "",
             "| Side | What | Wins | Mean automatic score |", "|---|---|---|---|"]
    for side, wins in ((res.side_a, o.wins_a), (res.side_b, o.wins_b)):
        scores = ", ".join(f"{md_escape(k)} {v:.3f} ({side.scored_clips[k]} clips)"
                           for k, v in side.mean_scores.items()) or "—"
        lines.append(f"| {side.side} | {md_escape(side.label)} | {wins} | {scores} |")
    lines += ["", f"No preference: {o.ties} · decisive votes: {o.decisive} · B's win rate {_pct(o.win_rate_b)} "
                  f"(95 % interval {ci}) · two-sided exact binomial p = {p}", "",
              "| Listener | Votes | A | B | None | Verdict |", "|---|---|---|---|---|---|"]
    for r in res.listeners:
        t = r.test
        lines.append(f"| {md_escape(r.listener)} | {r.votes} | {t.wins_a} | {t.wins_b} | {t.ties} | "
                     f"{VERDICT_WORDS[t.verdict]} |")
    return "\n".join(lines)


def players_html(nxt: NextPair | None) -> str:
    """Two players labelled First and Second: nothing else (the URLs name the test, the pair and the slot)."""
    if nxt is None or nxt.pair is None:
        return EMPTY_PLAYERS
    parts = []
    for label, url in (("First", nxt.pair.first_url), ("Second", nxt.pair.second_url)):
        parts.append(f"<div class='ab-player' style='flex:1;min-width:240px'><div><b>{label}</b></div>"
                     f"<audio id='ab-{label.lower()}' controls preload='auto' style='width:100%' "
                     f"src='{html.escape(url, quote=True)}'></audio></div>")
    return f"<div id='ab-players' style='display:flex;gap:16px;flex-wrap:wrap'>{''.join(parts)}</div>"


def pair_markdown(nxt: NextPair) -> str:
    if nxt.pair is None:
        return f"**{md_escape(nxt.message)}**"
    return (f"**Pair {nxt.pair.index} of {nxt.pair.total}** · prompt: *{md_escape(nxt.pair.prompt)}*\n\n"
            "Listen to both, then say which you prefer.")


# ---- the tab -------------------------------------------------------------------------------------------------
def build_abtests_tab(ctx: AppContext) -> ABTestsTab:
    auth = ctx.accounts.required  # with login, a listener is the person logged in
    # Creating and managing tests is an admin's (admin areas, studio/ui/access.py); listening and voting everyone's.
    with gr.Accordion("New A/B test", open=True, elem_id="ab-create-accordion", elem_classes=admin_only()):
        name = gr.Textbox(label="Name", max_lines=1, elem_id="ab-name", placeholder="lofi-piano v1 vs v2")
        with gr.Row():
            with gr.Column():
                side_a = gr.Dropdown([("Base model", BASE)], value=BASE, label="Side A", elem_id="ab-side-a")
                over_a = gr.Textbox(label="Side A setting overrides (JSON, optional)", max_lines=1,
                                    elem_id="ab-over-a", placeholder='{"temperature": 0.8}')
            with gr.Column():
                side_b = gr.Dropdown([("Base model", BASE)], value=BASE, label="Side B", elem_id="ab-side-b")
                over_b = gr.Textbox(label="Side B setting overrides (JSON, optional)", max_lines=1,
                                    elem_id="ab-over-b", placeholder='{"top_k": 50}')
        prompts = gr.Textbox(label="Prompts (one per line)", lines=5, value="\n".join(DEFAULT_PROMPTS),
                             elem_id="ab-prompts")
        with gr.Row():
            seeds = gr.Number(label="Seeds per prompt", value=2, elem_id="ab-seeds",
                              info="pairs = prompts x seeds; both sides get the same seed")
            duration = gr.Number(label="Seconds per clip", value=5, elem_id="ab-duration")
        create_btn = gr.Button("Create and generate", variant="primary", elem_id="ab-create")
    with gr.Row(equal_height=True):
        choice = gr.Dropdown([], label="A/B test", elem_id="ab-choice", scale=3)
        refresh = gr.Button("↻ Refresh", size="sm", scale=0, min_width=100, elem_id="ab-refresh")
    table = gr.Dataframe(pd.DataFrame([], columns=LIST_HEADERS), headers=LIST_HEADERS, interactive=False,
                         elem_id="ab-table", max_height=240, label="A/B tests")
    progress = gr.Markdown(elem_id="ab-progress")
    with gr.Group(elem_id="ab-listen"):
        with gr.Row(equal_height=True):
            listener = gr.Textbox(label="Your name (listener)", max_lines=1, elem_id="ab-listener", scale=3,
                                  visible=not auth, info="Votes are per listener; one vote per pair, final.")
            start_btn = gr.Button("Start / continue listening", elem_id="ab-start", scale=1)
        pair_info = gr.Markdown(elem_id="ab-pair-info", padding=True)
        players = gr.HTML(EMPTY_PLAYERS, elem_id="ab-players-box")
        with gr.Row(visible=False, elem_id="ab-vote-row") as vote_row:
            vote_first = gr.Button("First is better", elem_id="ab-vote-first")
            vote_none = gr.Button("No preference", elem_id="ab-vote-none")
            vote_second = gr.Button("Second is better", elem_id="ab-vote-second")
    results = gr.Markdown(elem_id="ab-results")
    with gr.Row(equal_height=True, elem_classes=admin_only()):
        close_btn = gr.Button("Close test and reveal results", size="sm", elem_id="ab-close")
        cancel_btn = gr.Button("Cancel generation", size="sm", elem_id="ab-cancel")
        resume_btn = gr.Button("Resume generation", size="sm", elem_id="ab-resume")
        delete_sure = gr.Checkbox(label="Yes, delete it with its clips", value=False, elem_id="ab-delete-sure")
        delete_btn = gr.Button("Delete test", size="sm", variant="stop", elem_id="ab-delete")
    return ABTestsTab(name, side_a, over_a, side_b, over_b, prompts, seeds, duration, create_btn, table, choice,
                      progress, listener, start_btn, pair_info, players, vote_row, vote_first, vote_second,
                      vote_none, results, close_btn, cancel_btn, resume_btn, delete_sure, delete_btn, refresh,
                      gr.State(None), gr.State(None))


def build_quick_ab() -> QuickAB:
    """Quick A/B in the adapter's detail view: two versions of this adapter, and a button."""
    with gr.Row(equal_height=True, elem_id="quick-ab", elem_classes=admin_only()):
        version_a = gr.Dropdown([], label="Quick A/B: version A", elem_id="quick-ab-a", scale=2)
        version_b = gr.Dropdown([], label="version B", elem_id="quick-ab-b", scale=2)
        button = gr.Button("Quick A/B", size="sm", scale=1, elem_id="quick-ab-btn")
    return QuickAB(version_a, version_b, button)


def wire_abtests_tab(ctx: AppContext, tab: ABTestsTab, item: gr.Tab) -> None:
    private = dict(api_visibility="private")
    auth = ctx.accounts.required  # with login, a listener is the person logged in

    def who(listener, request: gr.Request | None) -> str:
        """A signed-in person (--auth, an account) votes as themselves; without a login, as the name given."""
        actor = page_actor(request)
        return actor.name if auth or actor != LOCAL_ACTOR else str(listener or "")

    def view_of(test_id, listener, request) -> ABTestView | None:
        if test_id in (None, ""):
            return None
        name = who(listener, request).strip() or None
        try:
            return ctx.abtests.get(int(test_id), name)
        except InvalidValues:  # a name being typed that is not valid yet: progress without this listener
            return ctx.abtests.get(int(test_id))

    def overview(test_id, listener, request: gr.Request):
        """The list, the choice of test, its progress and (once revealed) its results."""
        tests = ctx.abtests.list()
        choices = choices_of(tests)
        ids = [c[1] for c in choices]
        value = int(test_id) if test_id not in (None, "") and int(test_id) in ids else (ids[0] if ids else None)
        view = view_of(value, listener, request)
        frame = list_frame(tests)
        sig = (repr(frame.values.tolist()), value, view.model_dump_json() if view else None)
        return [frame, gr.Dropdown(choices=choices, value=value),
                progress_markdown(view) if view else "*No A/B test yet: create one above.*",
                results_markdown(view.results) if view else "", sig]

    overview_io = dict(inputs=[tab.choice, tab.listener], outputs=[tab.table, tab.choice, tab.progress, tab.results,
                                                                   tab.seen], show_progress="hidden", **private)
    tab.refresh.click(overview, **overview_io)
    # Opening the tab: the sides offer the adapters usable now; the list and the chosen test come along.
    item.select(lambda a, b: side_updates(ctx, a, b), [tab.side_a, tab.side_b], [tab.side_a, tab.side_b],
                show_progress="hidden", **private).then(overview, **overview_io)

    def tick(test_id, listener, seen, request: gr.Request):
        try:
            out = overview(test_id, listener, request)
        except (gr.Error, StudioError):  # e.g. the test deleted from another page meanwhile: said when the person acts
            return [gr.skip()] * 4 + [seen]
        return [gr.skip()] * 4 + [seen] if out[-1] == seen else out

    # outside Gradio's queue, like the other refreshes: a tick never waits behind (or delays) a person's action
    gr.Timer(REFRESH_EVERY_S).tick(tick, inputs=[tab.choice, tab.listener, tab.seen], outputs=overview_io["outputs"],
                                   queue=False, show_progress="hidden", **private)
    tab.choice.input(overview, **overview_io).then(
        lambda: [None, "", EMPTY_PLAYERS, gr.Row(visible=False)], None,
        [tab.pair, tab.pair_info, tab.players, tab.vote_row], show_progress="hidden", **private)

    def create(name, side_a, over_a, side_b, over_b, prompts, seeds, duration, request: gr.Request):
        req = create_request(name, side_a, over_a, side_b, over_b, prompts, seeds, duration)
        with user_errors():
            view = ctx.abtests.create(req, page_user(request))
        same = req.side_a.model_dump() == req.side_b.model_dump()
        gr.Info(notify_text(f"A/B test #{view.id} created: generating {view.pairs} pairs."
                            + (" Both sides are the same: an A/A test (a check of the listeners and the blinding; "
                               "expect no difference)." if same else "")))
        tests = ctx.abtests.list()
        return [list_frame(tests), gr.Dropdown(choices=choices_of(tests), value=view.id), progress_markdown(view),
                results_markdown(None), None, "", EMPTY_PLAYERS, gr.Row(visible=False)]

    tab.create_btn.click(create, [tab.name, tab.side_a, tab.over_a, tab.side_b, tab.over_b, tab.prompts, tab.seeds,
                                  tab.duration],
                         [tab.table, tab.choice, tab.progress, tab.results, tab.pair, tab.pair_info, tab.players,
                          tab.vote_row], **private)  # scripts use POST /api/abtests

    listen_out = [tab.pair, tab.pair_info, tab.players, tab.vote_row, tab.progress, tab.results]

    def show(test_id: int, nxt: NextPair, listener, request) -> list:
        view = view_of(test_id, listener, request)
        return [nxt.pair.pair if nxt.pair else None, pair_markdown(nxt), players_html(nxt),
                gr.Row(visible=nxt.pair is not None), progress_markdown(view), results_markdown(view.results)]

    def need_test(test_id) -> int:
        if test_id in (None, ""):
            raise gr.Error("Choose an A/B test first.", print_exception=False)
        return int(test_id)

    def start(test_id, listener, request: gr.Request):
        test_id = need_test(test_id)
        with user_errors():
            nxt = ctx.abtests.next_pair(test_id, who(listener, request))
        return show(test_id, nxt, listener, request)

    tab.start_btn.click(start, [tab.choice, tab.listener], listen_out, show_progress="hidden", **private)

    def voter(choice: str):
        def vote(test_id, listener, pair, request: gr.Request):
            test_id = need_test(test_id)
            if pair is None:
                raise gr.Error("Start listening first.", print_exception=False)
            with user_errors():
                result = ctx.abtests.vote(test_id, who(listener, request), int(pair), choice)
            return show(test_id, result.next, listener, request)
        return vote

    for button, choice in ((tab.vote_first, "first"), (tab.vote_second, "second"), (tab.vote_none, "none")):
        button.click(voter(choice), [tab.choice, tab.listener, tab.pair], listen_out, show_progress="hidden",
                     **private)

    def manage(action: str):
        def run(test_id, listener, sure, request: gr.Request):
            test_id = need_test(test_id)
            with user_errors():
                if action == "close":
                    ctx.abtests.close_test(test_id)
                elif action == "cancel":
                    ctx.abtests.cancel(test_id)
                elif action == "resume":
                    ctx.abtests.retry(test_id)
                else:
                    if not sure:
                        raise gr.Error("Tick “Yes, delete it with its clips” first.", print_exception=False)
                    ctx.abtests.delete(test_id)
                    gr.Info(f"A/B test #{test_id} deleted.")
            out = overview(None if action == "delete" else test_id, listener, request)
            return [*out, False]
        return run

    for button, action in ((tab.close_btn, "close"), (tab.cancel_btn, "cancel"), (tab.resume_btn, "resume"),
                           (tab.delete_btn, "delete")):
        button.click(manage(action), [tab.choice, tab.listener, tab.delete_sure],
                     [*overview_io["outputs"], tab.delete_sure], show_progress="hidden", **private)


def side_updates(ctx: AppContext, side_a, side_b) -> list:
    """The side dropdowns' choices (they follow the adapters and the loaded model); a choice made stays."""
    choices = side_choices(ctx)
    known = {c[1] for c in choices}
    return [gr.Dropdown(choices=choices, value=v if v in known else BASE) for v in (side_a, side_b)]


def wire_quick_ab(ctx: AppContext, quick: QuickAB, selected: gr.State, tab: ABTestsTab, tabs: gr.Tabs,
                  tab_id: str) -> None:
    """The adapter's detail view offers its versions; Quick A/B fills the A/B tab's form and opens it."""
    private = dict(api_visibility="private")

    def versions(adapter_id):
        if adapter_id is None:
            return [gr.Dropdown(choices=[], value=None), gr.Dropdown(choices=[], value=None)]
        try:
            me = ctx.adapters.get(int(adapter_id))
            group = [a for a in ctx.adapters.list() if a.name == me.name]
        except StudioError:
            return [gr.skip(), gr.skip()]
        choices = [(a.label, str(a.id)) for a in sorted(group, key=lambda a: a.version)]
        other = next((c[1] for c in reversed(choices) if c[1] != str(me.id)), str(me.id))
        return [gr.Dropdown(choices=choices, value=str(me.id)), gr.Dropdown(choices=choices, value=other)]

    selected.change(versions, selected, [quick.version_a, quick.version_b], show_progress="hidden", **private)

    def quick_ab(version_a, version_b):
        if not version_a or not version_b:
            raise gr.Error("Choose two versions of the adapter.", print_exception=False)
        with user_errors():
            a, b = ctx.adapters.get(int(version_a)), ctx.adapters.get(int(version_b))
        choices = side_choices(ctx)
        known = {c[1] for c in choices}
        for info in (a, b):
            if str(info.id) not in known:
                gr.Warning(notify_text(f"{info.label} cannot run on the model loaded now: Create will refuse it."))
                choices.append((info.label, str(info.id)))
        return [gr.Tabs(selected=tab_id), f"{a.label} vs {b.label}",
                gr.Dropdown(choices=choices, value=str(a.id)), "", gr.Dropdown(choices=choices, value=str(b.id)),
                "", "\n".join(DEFAULT_PROMPTS)]

    quick.button.click(quick_ab, [quick.version_a, quick.version_b],
                       [tabs, tab.name, tab.side_a, tab.over_a, tab.side_b, tab.over_b, tab.prompts], **private)
