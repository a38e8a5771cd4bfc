"""History tab: every generation, filtered, sorted and paged; a job's details with its player; rate it, use its settings
again, generate it again, delete it. What may be shown is JobService's decision (never a blind A/B test's clip; a
member's own jobs only, an admin's everyone's, with a User filter shown to admins)."""
from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

import gradio as gr
import pandas as pd

from studio.context import AppContext
from studio.errors import NotFound, StudioError
from studio.services.jobs import DELETED_ADAPTER, MAX_STARS, JobInfo, JobPage, JobQuery
from studio.ui.adapter_stack import adapter_value as stack_adapter_value, reuse_updates, stack_cells, stack_text
from studio.ui.common import NO_ADAPTER, failed_status, md_escape, notify_text, page_actor, plain_status, user_errors
from studio.ui.continue_input import continued_line, extend_updates, length_text
from studio.ui.generate_tab import (NO_RATING, RATING_CHOICES, GenerateTab, adapter_choices, adapter_widgets,
                                    next_model, rating_updates)
from studio.ui.melody_input import melody_text
from studio.ui.queue_panel import EVERYONE, model_namer, shorten, user_choices, user_dropdown
from studio.users import Actor

PAGE_SIZE = 20
HISTORY_EVERY_S = 4.0  # the table follows new and finished jobs (and others' ratings) while the page is open
HEADERS = ["Job", "When (UTC)", "Prompt", "Model", "Adapter", "Status", "Length", "Rating", "Yours", "Scores"]
TYPES = ["number", "str", "str", "str", "str", "str", "str", "str", "str", "str"]  # text: shown as written
ANY = "any"
STATUSES = ["succeeded", "failed", "cancelled", "interrupted", "queued", "running"]
RATING_FILTERS = [("Any rating", ANY), ("Not rated yet", "unrated"), ("Rated", "rated"),
                  *[(f"{'★' * n} or more" if n < MAX_STARS else "★" * n, f"{n}+") for n in range(MAX_STARS, 0, -1)],
                  ("★★ or less", "-2")]
SOURCES = [("People's generations", "person"), ("Evaluation clips", "evaluation"),
           ("Training auditions", "training"), ("All", "all")]
SORTS = [("Newest first", "newest"), ("Oldest first", "oldest"), ("Best rated", "best_rated"),
         ("Worst rated", "worst_rated"), ("Longest", "longest"), ("Shortest", "shortest")]
# Stored settings a job records but did not use as such: its own seed and duration are what it ran with.
NOT_USED = ("seed", "seed_policy", "default_duration_s")


@dataclass
class HistoryTab:
    text: gr.Textbox
    model: gr.Dropdown
    adapter: gr.Dropdown
    status: gr.Dropdown
    rating: gr.Dropdown
    who: gr.Dropdown  # User: one person's jobs (admins only)
    source: gr.Dropdown
    sort: gr.Dropdown
    refresh_btn: gr.Button
    table: gr.Dataframe
    empty: gr.Markdown
    prev_btn: gr.Button
    page_info: gr.Markdown
    next_btn: gr.Button
    detail: gr.Column
    info: gr.Markdown
    audio: gr.Audio
    stars: gr.Radio
    reuse_btn: gr.Button
    again_btn: gr.Button
    score_btn: gr.Button
    delete_btn: gr.Button
    confirm_row: gr.Row
    confirm_text: gr.Markdown
    confirm_btn: gr.Button
    confirm_cancel: gr.Button
    action_status: gr.Markdown
    offset: gr.State  # the page shown: how many jobs come before it
    seen: gr.State  # what the table shows (its rows and total): a tick sends nothing when that did not change
    selected: gr.State  # the job whose details are open
    extend_btn: gr.Button | None = None  # "Extend this": the Generate tab continues this job

    @property
    def filters(self) -> list:
        return [self.text, self.model, self.adapter, self.status, self.rating, self.who, self.source, self.sort]


# ---- what the table and the details show -----------------------------------------------------------------------
def stars_text(stars: float | None) -> str:
    return "" if stars is None else "★" * round(stars)


def rating_text(info: JobInfo) -> str:
    r = info.rating
    return "" if r.average is None else f"{r.average:.1f} ★ ({r.count})"


def scores_text(scores: dict[str, float]) -> str:
    return " · ".join(f"{name} {value:.3f}" for name, value in sorted(scores.items()))


def when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def adapter_text(info: JobInfo) -> str:
    if info.adapter_stack:
        return stack_cells(info.adapter_stack)
    if info.adapter_id is None:
        return "—"
    return f"⚠ {DELETED_ADAPTER}" if info.adapter_deleted else (info.adapter_label or "")


def table_rows(ctx: AppContext, jobs: list[JobInfo]) -> list[list]:
    """Plain text cells (the table shows them as written: prompts are user text)."""
    name = model_namer(ctx)
    return [[j.id, when(j.created_at), shorten(j.prompt, 80), name(j.model_id), adapter_text(j), j.status,
             f"{j.duration_s:g} s", rating_text(j), stars_text(j.rating.mine), scores_text(j.scores)] for j in jobs]


def history_query(text, model, adapter, status, rating, who, source, sort, offset) -> JobQuery:
    """The service's query from the filter widgets (values the widgets never offer are refused: gr.Error)."""
    try:
        fields: dict = dict(text=(text or "").strip() or None, submitted_by=(who or EVERYONE).strip() or None,
                            offset=max(int(offset or 0), 0), limit=PAGE_SIZE, source=source or "person",
                            sort=sort or "newest")
        if model not in (None, "", ANY):
            fields["model_id"] = model
        if adapter not in (None, "", ANY):
            fields["adapter"] = "none" if adapter == "none" else int(adapter)
        if status not in (None, "", ANY):
            fields["status"] = status
        if rating in ("unrated", "rated"):
            fields["rated"] = rating == "rated"
        elif isinstance(rating, str) and rating.endswith("+"):
            fields["min_rating"] = int(rating[:-1])
        elif isinstance(rating, str) and rating.startswith("-"):
            fields["max_rating"] = int(rating[1:])
        elif rating not in (None, "", ANY):
            raise ValueError(f"unknown rating filter {rating!r}")
        return JobQuery(**fields)
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        raise gr.Error(notify_text(f"Check the filters: {exc}"), print_exception=False) from None


def history_page(ctx: AppContext, actor: Actor, filters: list, offset) -> tuple[JobQuery, JobPage]:
    """The page of jobs the filter widgets ask for, as this person may see them (a member: their own, whatever the
    User filter says), and the query it answers (moved back to the last page when the asked one emptied)."""
    query = history_query(*filters, offset)
    with user_errors():
        page = ctx.jobs.search(query, actor)
    if page.total and query.offset >= page.total:  # the last page emptied (deleted jobs): show the last one
        query = query.model_copy(update={"offset": (page.total - 1) // PAGE_SIZE * PAGE_SIZE})
        with user_errors():
            page = ctx.jobs.search(query, actor)
    return query, page


def adapter_filter_choices(ctx: AppContext) -> list[tuple[str, str]]:
    live = ctx.adapters.list()
    gone = ctx.adapters.list(deleted=True)
    return [("Any adapter", ANY), ("No adapter (base model)", "none"),
            *[(a.label, str(a.id)) for a in live], *[(f"{a.label} (deleted)", str(a.id)) for a in gone]]


def page_text(total: int, offset: int, shown: int) -> str:
    if total == 0:  # the note above the table says why it is empty
        return ""
    return f"Jobs {offset + 1}–{offset + shown} of {total}"


def detail_markdown(ctx: AppContext, j: JobInfo) -> str:
    """Everything about a job, user text escaped (prompt, adapter, who, error)."""
    name = model_namer(ctx)(j.model_id)
    if j.adapter_id is None:
        adapter = "none (base model)"
    elif j.adapter_deleted:
        adapter = f"⚠️ **{DELETED_ADAPTER}** (id {j.adapter_id}): the job stays readable and playable"
    else:
        adapter = md_escape(j.adapter_label)
    if j.adapter_stack:  # strengths, or several adapters at once
        adapter = stack_text(j.adapter_stack)
    settings = " · ".join(f"{md_escape(k)} `{md_escape(str(v))}`" for k, v in sorted(j.settings.items())
                          if k not in NOT_USED)
    waited = (j.started_at - j.created_at).total_seconds() if j.started_at else None
    timings = [f"submitted {when(j.created_at)}"]
    if waited is not None:
        timings.append(f"waited {max(waited, 0):.1f} s")
    if j.elapsed_s is not None:
        timings.append(f"{j.elapsed_s:.1f} s to generate")
    if j.batch_size and j.batch_size > 1:
        timings.append(f"in a batch of {j.batch_size}")
    r = j.rating
    rating = (f"yours: {stars_text(r.mine) or 'not rated'} · average: "
              + (f"{r.average:.2f} ★ from {r.count} rating(s)" if r.average is not None else "not rated yet"))
    scores = md_escape(scores_text(j.scores)) or "none yet"
    status = j.status + (f": {md_escape(j.error)}" if j.error else "")
    loud = f"{j.loudness_lufs:.1f} LUFS" if j.loudness_lufs is not None else ""
    rows = [("Prompt", md_escape(j.prompt)), ("Model", md_escape(name)), ("Adapter", adapter),
            ("Status", status), ("Seed", f"`{j.seed}`"), ("Duration", f"{length_text(j.duration_s, j.continuation)} at "
                                                                        f"{j.sample_rate / 1000:g} kHz"),
            ("Settings", settings), ("Timings", " · ".join(timings)), ("Submitted by", md_escape(j.submitted_by)),
            ("Rating", rating), ("Scores", scores)]
    if loud:
        rows.append(("Loudness", loud))
    if j.evaluation_id is not None:
        rows.append(("Evaluation run", str(j.evaluation_id)))
    if j.continuation:
        rows.append(("Continues", continued_line(j.continuation)))
    if j.melody is not None:
        rows.append(("Melody", f"{melody_text(j.melody)} ([listen](/api/uploads/{quote(j.melody.upload_id)}/audio))"))
    return "\n".join([f"### Job {j.id}", "", "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]])


# ---- layout ----------------------------------------------------------------------------------------------------
def build_history_tab(ctx: AppContext) -> HistoryTab:
    with gr.Row(equal_height=True):
        text = gr.Textbox(label="Prompt contains", max_lines=1, elem_id="history-text", scale=3,
                          placeholder="piano")
        model = gr.Dropdown([("Any model", ANY), *[(m.display_name, m.id) for m in ctx.registry.models]],
                            value=ANY, label="Model", elem_id="history-model", scale=2)
        adapter = gr.Dropdown(adapter_filter_choices(ctx), value=ANY, label="Adapter", elem_id="history-adapter",
                              scale=2)
        status = gr.Dropdown([("Any status", ANY), *[(s, s) for s in STATUSES]], value=ANY, label="Status",
                             elem_id="history-status", scale=1)
    with gr.Row(equal_height=True):
        rating = gr.Dropdown(RATING_FILTERS, value=ANY, label="Rating (average)", elem_id="history-rating", scale=2)
        # shown to admins when the tab opens (a member sees their own jobs only, whatever it says)
        who = gr.Dropdown([("Everyone", EVERYONE)], value=EVERYONE, label="User", elem_id="history-who", scale=2,
                          visible=False)
        source = gr.Dropdown(SOURCES, value="person", label="Show", elem_id="history-source", scale=2)
        sort = gr.Dropdown(SORTS, value="newest", label="Sort", elem_id="history-sort", scale=2)
        refresh_btn = gr.Button("↻ Refresh", size="sm", scale=0, min_width=100, elem_id="history-refresh")
    empty = gr.Markdown(elem_id="history-empty")
    table = gr.Dataframe(pd.DataFrame([], columns=HEADERS), headers=HEADERS, datatype=TYPES, interactive=False,
                         label="Jobs (select one for its details)", elem_id="history-table", wrap=True,
                         max_height=520, column_widths=["5%", "13%", "26%", "9%", "10%", "8%", "6%", "8%", "7%", "8%"])
    with gr.Row(equal_height=True):
        prev_btn = gr.Button("← Newer", size="sm", scale=0, min_width=110, interactive=False, elem_id="history-prev")
        page_info = gr.Markdown(elem_id="history-page")
        next_btn = gr.Button("Older →", size="sm", scale=0, min_width=110, interactive=False, elem_id="history-next")
    with gr.Column(visible=False, elem_id="history-detail") as detail:
        with gr.Row():
            with gr.Column(scale=3):
                info = gr.Markdown(elem_id="history-info")
            with gr.Column(scale=2):
                audio = gr.Audio(label="Audio", type="filepath", interactive=False, elem_id="history-audio",
                                 buttons=["download"])
                stars = gr.Radio(RATING_CHOICES, label="Your rating", elem_id="history-stars",
                                 info="1-5 stars; rate again to change it")
                with gr.Row():
                    reuse_btn = gr.Button("Use these settings again", size="sm", elem_id="history-reuse")
                    again_btn = gr.Button("Generate again", size="sm", elem_id="history-again")
                    extend_btn = gr.Button("Extend this", size="sm", elem_id="history-extend")
                    score_btn = gr.Button("Score (CLAP)", size="sm", elem_id="history-score")
                    delete_btn = gr.Button("Delete…", size="sm", variant="stop", elem_id="history-delete")
                with gr.Row(visible=False, elem_id="history-delete-confirm", equal_height=True) as confirm_row:
                    confirm_text = gr.Markdown(elem_id="history-delete-text")
                    confirm_btn = gr.Button("Delete", variant="stop", scale=0, min_width=100,
                                            elem_id="history-delete-yes")
                    confirm_cancel = gr.Button("Keep", scale=0, min_width=100, elem_id="history-delete-no")
                action_status = gr.Markdown(elem_id="history-action-status")
    return HistoryTab(text, model, adapter, status, rating, who, source, sort, refresh_btn, table, empty, prev_btn,
                      page_info, next_btn, detail, info, audio, stars, reuse_btn, again_btn, score_btn, delete_btn,
                      confirm_row, confirm_text, confirm_btn, confirm_cancel, action_status, gr.State(0),
                      gr.State(None), gr.State(None), extend_btn)


# ---- events ----------------------------------------------------------------------------------------------------
def wire_history_tab(ctx: AppContext, tab: HistoryTab, gen: GenerateTab, tabs: gr.Tabs, history_tab: gr.Tab,
                     generate_tab: gr.Tab) -> None:
    private = dict(api_visibility="private", show_progress="hidden")
    list_outputs = [tab.table, tab.empty, tab.page_info, tab.prev_btn, tab.next_btn, tab.offset, tab.seen]

    def listing(filters: list, offset, seen=None, request: gr.Request | None = None, force: bool = True) -> list:
        """[table, empty note, page text, Newer, Older, offset, seen] for the filters and page; without `force`,
        nothing is sent when the rows did not change."""
        query, page = history_page(ctx, page_actor(request), filters, offset)
        rows = table_rows(ctx, page.items)
        key = repr((rows, page.total, query.offset))
        if not force and key == seen:
            return [gr.skip()] * len(list_outputs)
        if page.total:
            empty = ""
        elif any(f not in (None, "", ANY, "person", "newest") for f in filters):
            empty = "No jobs match these filters."
        else:
            empty = "No generations yet: make one in the Generate tab."
        shown = len(page.items)
        return [pd.DataFrame(rows, columns=HEADERS), empty, page_text(page.total, query.offset, shown),
                gr.Button(interactive=query.offset > 0),
                gr.Button(interactive=query.offset + shown < page.total), query.offset, key]

    # Gradio passes the request only to a parameter before *args (never to one after it): without it, page_actor
    # would see the local admin, and a member would list, rate and delete everyone's jobs.
    def first_page(request: gr.Request, *filters) -> list:
        return listing(list(filters), 0, request=request)

    def tick(request: gr.Request, *args) -> list:
        *filters, offset, seen = args
        try:
            return listing(filters, offset, seen, request, force=False)
        except gr.Error:  # a filter being typed that the studio refuses: said when the person applies it
            return [gr.skip()] * len(list_outputs)

    def move(step: int):
        def go(request: gr.Request, *args) -> list:
            *filters, offset = args
            return listing(filters, max(int(offset or 0) + step * PAGE_SIZE, 0), request=request)
        return go

    for widget in (tab.model, tab.adapter, tab.status, tab.rating, tab.who, tab.source, tab.sort):
        widget.input(first_page, tab.filters, list_outputs, **private)
    tab.text.submit(first_page, tab.filters, list_outputs, **private)
    tab.text.blur(first_page, tab.filters, list_outputs, **private)

    def who_choices(request: gr.Request | None = None) -> gr.Dropdown:
        """The people who have generations, again when the filter opens (some may have generated since)."""
        return gr.Dropdown(choices=user_choices(ctx, page_actor(request)))

    tab.who.focus(who_choices, None, tab.who, queue=False, **private)
    tab.refresh_btn.click(first_page, tab.filters, list_outputs, **private)
    tab.prev_btn.click(move(-1), [*tab.filters, tab.offset], list_outputs, **private)
    tab.next_btn.click(move(1), [*tab.filters, tab.offset], list_outputs, **private)

    def on_open(request: gr.Request, *args) -> list:
        *filters, offset = args
        return [gr.Dropdown(choices=adapter_filter_choices(ctx)), user_dropdown(ctx, page_actor(request)),
                *listing(filters, offset, request=request)]

    history_tab.select(on_open, [*tab.filters, tab.offset], [tab.adapter, tab.who, *list_outputs], **private)
    gr.Timer(HISTORY_EVERY_S).tick(tick, [*tab.filters, tab.offset, tab.seen], list_outputs, queue=False, **private)

    # ---- details ----
    detail_outputs = [tab.selected, tab.detail, tab.info, tab.audio, tab.stars, tab.action_status, tab.confirm_row]

    def details(job_id: int | None, request: gr.Request | None = None, status=None) -> list:
        """[selected, detail column, info, audio, stars, action status, confirmation] for a job (hidden when it
        is gone)."""
        job = None
        if job_id is not None:
            try:
                job = ctx.jobs.get(int(job_id), page_actor(request))
            except NotFound:
                job = None
        if job is None:
            return [None, gr.Column(visible=False), "", None, gr.Radio(value=None), status or plain_status(),
                    gr.Row(visible=False)]
        audio = None
        if job.has_audio:
            try:
                audio = str(ctx.jobs.audio_path(job.id, page_actor(request)))
            except NotFound:  # the file went missing: the record still says everything else
                audio = None
        return [job.id, gr.Column(visible=True), detail_markdown(ctx, job),
                gr.Audio(value=audio, label=f"Job {job.id}" + ("" if audio else " · no audio")),
                gr.Radio(value=job.rating.mine or NO_RATING, interactive=job.status == "succeeded"),
                status if status is not None else plain_status(), gr.Row(visible=False)]

    def select(evt: gr.SelectData, request: gr.Request | None = None) -> list:
        row = evt.row_value or []
        try:
            job_id = int(float(row[0]))
        except (IndexError, TypeError, ValueError):
            return [gr.skip()] * len(detail_outputs)
        return details(job_id, request)

    tab.table.select(select, None, detail_outputs, **private)

    def rate(job_id, stars, request: gr.Request, *args) -> list:
        *filters, offset, seen = args
        if job_id is None:
            return [gr.skip()] * (len(detail_outputs) + len(list_outputs))
        actor = page_actor(request)
        try:
            with user_errors():
                if stars in (None, NO_RATING):
                    ctx.jobs.unrate(int(job_id), actor)
                    said = plain_status("Your rating was removed.")
                else:
                    r = ctx.jobs.rate(int(job_id), actor, int(stars))
                    said = plain_status(f"Rated {stars_text(r.mine)}: average {r.average:.2f} from {r.count}.")
        except gr.Error as exc:
            said = failed_status(f"❌ {md_escape(html.unescape(str(exc.message)))}")
        return [*details(job_id, request, said), *listing(filters, offset, seen, request, force=False)]

    tab.stars.input(rate, [tab.selected, tab.stars, *tab.filters, tab.offset, tab.seen],
                    [*detail_outputs, *list_outputs], **private)

    # ---- the automatic score: computed by the evaluation model, in the worker's turn ----
    def score(job_id, request: gr.Request, *args) -> list:
        *filters, offset, seen = args
        if job_id is None:
            return [gr.skip()] * (len(detail_outputs) + len(list_outputs))
        try:
            with user_errors():
                got = ctx.evaluation.score_job(int(job_id), page_actor(request))
            said = plain_status(f"Score ({md_escape(got.scorer)}): **{got.value:.3f}** (text-audio agreement, "
                                "-1 to 1; compare clips of the same prompt).")
        except gr.Error as exc:
            said = failed_status(f"❌ {md_escape(html.unescape(str(exc.message)))}")
        return [*details(job_id, request, said), *listing(filters, offset, seen, request, force=False)]

    tab.score_btn.click(score, [tab.selected, *tab.filters, tab.offset, tab.seen], [*detail_outputs, *list_outputs],
                        api_visibility="private", show_progress="minimal")

    # ---- delete, with a confirmation ----
    def ask_delete(job_id, request: gr.Request | None = None) -> list:
        if job_id is None:
            return [gr.skip(), gr.skip()]
        try:
            job = ctx.jobs.get(int(job_id), page_actor(request))
        except NotFound:
            return [gr.Row(visible=False), ""]
        return [gr.Row(visible=True), f"Delete job {job.id} (“{md_escape(shorten(job.prompt, 60))}”) with its "
                                      "audio, codes, ratings and scores? This cannot be undone."]

    tab.delete_btn.click(ask_delete, tab.selected, [tab.confirm_row, tab.confirm_text], queue=False, **private)
    tab.confirm_cancel.click(lambda: gr.Row(visible=False), None, tab.confirm_row, queue=False, **private)

    def delete(job_id, request: gr.Request, *args) -> list:
        *filters, offset = args
        if job_id is None:
            return [gr.skip()] * (len(detail_outputs) + len(list_outputs))
        try:
            with user_errors():
                done = ctx.jobs.delete(int(job_id), page_actor(request))
        except gr.Error as exc:
            said = failed_status(f"❌ {md_escape(html.unescape(str(exc.message)))}")
            return [*details(job_id, request, said), *listing(filters, offset, request=request)]
        gr.Info(notify_text(f"Job {done.job_id} deleted, with its audio and codes."))
        return [*details(None, request), *listing(filters, offset, request=request)]

    tab.confirm_btn.click(delete, [tab.selected, *tab.filters, tab.offset], [*detail_outputs, *list_outputs],
                          **private)

    # ---- generate again: same model, seed and settings (the same audio), through the queue ----
    def model_mismatch(job: JobInfo) -> str | None:
        """Why the job's model is not the one the next job runs on (said, never changed behind the person's
        back), or None."""
        model = next_model(ctx)
        if model is not None and model.id == job.model_id:
            return None
        made = model_namer(ctx)(job.model_id)
        now = f"{model.display_name} is loaded" if model else "no model is loaded"
        return f"Job {job.id} was made with {made}, and {now}."

    def again(job_id, request: gr.Request, *args) -> list:
        *filters, offset = args
        if job_id is None:
            return [gr.skip()] * (1 + len(list_outputs))
        try:
            with user_errors():
                job = ctx.jobs.get(int(job_id), page_actor(request))
                problem = model_mismatch(job)
                if problem:
                    made = md_escape(model_namer(ctx)(job.model_id))
                    return [failed_status(f"❌ **Not generated.** {md_escape(problem)} Choose {made} in the Generate "
                                          "tab's Model list first: the same seed on another model is other music."),
                            *[gr.skip()] * len(list_outputs)]
                accepted = ctx.generation.resubmit(job.id, page_actor(request))
        except gr.Error as exc:
            return [failed_status(f"❌ **Not generated.** {md_escape(html.unescape(str(exc.message)))}"),
                    *[gr.skip()] * len(list_outputs)]
        where = "running" if accepted.position == 0 else f"waiting (number {accepted.position} in the queue)"
        return [plain_status(f"Queued as **job {accepted.job_id}** with seed `{accepted.seeds[0]}`: {where}. "
                             "It appears in the list above."), *listing(filters, 0, request=request)]

    tab.again_btn.click(again, [tab.selected, *tab.filters, tab.offset], [tab.action_status, *list_outputs],
                        **private)

    # ---- use these settings again: fill the Generate tab and go there ----
    reuse_outputs = [tabs, gen.prompt, gen.duration, gen.seed, gen.takes, *gen.sampling.values(), gen.adapter,
                     gen.adapter_hint, tab.action_status, *gen.stack.inputs]

    def stored_differences(job: JobInfo) -> list[str]:
        """The job's settings that the Generate tab does not set and that differ from the model's saved ones
        (output format, loudness, ...): they apply as saved."""
        try:
            saved = ctx.gen_config.get(job.model_id).values
        except StudioError:  # a model gone from the registry
            return []
        return [f"{k} {job.settings[k]} (saved: {saved[k]})" for k in sorted(job.settings)
                if k in saved and k not in NOT_USED and k not in gen.sampling and job.settings[k] != saved[k]]

    def reuse(job_id, request: gr.Request | None = None) -> list:
        if job_id is None:
            return [gr.skip()] * len(reuse_outputs)
        try:
            job = ctx.jobs.get(int(job_id), page_actor(request))
        except NotFound:
            stack = len(gen.stack.inputs)  # after the status
            return [*[gr.skip()] * (len(reuse_outputs) - 1 - stack), failed_status("❌ This job was deleted."),
                    *[gr.skip()] * stack]
        problem = model_mismatch(job)
        if problem:
            gr.Warning(notify_text(f"{problem} Its settings are filled in, but Generate would use the loaded model: "
                                   f"choose {model_namer(ctx)(job.model_id)} in the Model list to make the same "
                                   "music."))
        differ = stored_differences(job)
        if differ:
            gr.Info(notify_text("Filled in. These settings of the job apply as saved in the Settings tab, not as the "
                                f"job had them: {'; '.join(differ)}."))
        model = next_model(ctx)
        adapter_value = stack_adapter_value(job.adapter_stack, job.adapter_id)
        sampling = [gr.update(value=job.settings[name]) if name in job.settings else gr.skip()
                    for name in gen.sampling]
        return [gr.Tabs(selected="generate"), job.prompt, gr.Number(value=job.duration_s), job.seed, 1, *sampling,
                *adapter_widgets(ctx.adapters.list(), model, adapter_value), plain_status(),
                *reuse_updates(job.adapter_stack, job.adapter_id, adapter_choices(ctx.adapters.list(), model))]

    # The Generate tab's stars follow ratings changed here (or elsewhere) when the person goes back to it.
    rates = [gen.rate_result, *gen.take_rates]

    def generate_ratings(ids, request: gr.Request | None = None) -> list:
        return rating_updates(ctx, ids, page_actor(request))

    cont = gen.continuation

    def extend(job_id, request: gr.Request | None = None) -> list:
        """Go to the Generate tab set to continue this job (its codes): Generate then extends it."""
        if job_id is None:
            return [gr.skip()] * 6
        try:
            job = ctx.jobs.get(int(job_id), page_actor(request))
        except NotFound:
            return [*[gr.skip()] * 5, failed_status("❌ This job was deleted.")]
        if job.status != "succeeded" or not job.has_codes:
            return [*[gr.skip()] * 5, failed_status(f"❌ Job {job.id} cannot be extended: only a finished job "
                                                    "with its codes kept can.")]
        problem = model_mismatch(job)
        if problem:
            gr.Warning(notify_text(f"{problem} Choose {model_namer(ctx)(job.model_id)} in the Model list to extend "
                                   "it: its codes mean nothing to another model."))
        return [gr.Tabs(selected="generate"), *extend_updates(ctx, job.id), plain_status()]

    tab.extend_btn.click(extend, tab.selected, [tabs, cont.extend_job, cont.extend_note, cont.clear_btn, cont.clip,
                                                tab.action_status], **private)
    tab.reuse_btn.click(reuse, tab.selected, reuse_outputs, **private).then(
        generate_ratings, gen.result_jobs, rates, queue=False, **private)
    generate_tab.select(generate_ratings, gen.result_jobs, rates, queue=False, **private)

