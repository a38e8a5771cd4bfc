"""The queue panel: what the studio runs and what waits (the model switches and the jobs the person may see: a
member's own, an admin's everyone's, filtered by user), and what it does next."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import gradio as gr

from studio.context import AppContext
from studio.errors import NotFound
from studio.services.queue import QueueItem, QueueView
from studio.ui.common import md_escape, page_actor
from studio.users import Actor

QUEUE_EVERY_S = 1.5  # the panel's refresh while the page is open (a gr.Timer only ticks on an open page)
PROMPT_CHARS = 48  # a prompt's length in the table; the whole prompt is the job's own business
REST_NOTE = ("<small>Scripts use the same queue: `POST /api/jobs` (the generate body, `variations` 1-4) answers at "
             "once with the job ids, place and ETA; `GET /api/jobs/{id}/events` streams its progress and audio "
             "(Server-Sent Events); `POST /api/jobs/{id}/cancel` stops it; `GET /api/queue` lists this "
             "table.</small>")
EVERYONE = ""  # the user filter's "everyone" (no user is named "")


@dataclass
class QueuePanel:
    table: gr.Markdown
    user: gr.Dropdown  # admins only: one person's jobs


def user_filter(user: str | None) -> str | None:
    """The service's submitter filter from the User dropdown (everyone: None)."""
    return None if user in (None, EVERYONE) else user


def user_choices(ctx: AppContext, actor: Actor) -> list[tuple[str, str]]:
    """The User filter's choices: everyone, then the people who have generations."""
    return [("Everyone", EVERYONE), *[(name, name) for name in ctx.jobs.submitters(actor)]]


def user_dropdown(ctx: AppContext, actor: Actor) -> gr.Dropdown:
    """The User filter for this person: shown to admins only (a member sees their own jobs whatever it says)."""
    return gr.Dropdown(choices=user_choices(ctx, actor), visible=actor.is_admin)


def shorten(text: str | None, limit: int = PROMPT_CHARS) -> str:
    """One line of at most `limit` characters (an ellipsis says it was cut). Not escaped."""
    line = " ".join(str(text or "").split())
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"


def fmt_eta(eta_s: float | None) -> str:
    """'about 40 s', 'about 3 min', or '' when not known yet."""
    if eta_s is None:
        return ""
    if eta_s < 1:
        return "under a second"
    if eta_s < 90:
        return f"about {eta_s:.0f} s"
    return f"about {eta_s / 60:.0f} min"


def _state(item: QueueItem) -> str:
    if item.kind == "switch":
        return "switching" if item.state == "running" else "waiting"
    if item.state == "queued":
        return "waiting"
    done = f" {item.fraction * 100:.0f} %" if item.fraction is not None else ""
    batch = f" (batch of {item.batch_size})" if item.batch_size and item.batch_size > 1 else ""
    where = f" on worker {md_escape(item.replica)}" if item.replica else ""  # GPU workers (--workers ray)
    return f"generating{done}{batch}{where}"


def queue_rows(view: QueueView, model_name: Callable[[str], str], mine: Iterable[int] = ()) -> list[list[str]]:
    """The table's rows, as Markdown cells (user text escaped): place, job, prompt, model, who, state, ready in.
    This page's own jobs say so, so a person finds theirs among everyone's."""
    own = set(mine or ())
    rows = []
    for item in view.items:
        place = "▶" if item.state == "running" else str(item.position)
        if item.kind == "switch":
            job, prompt, who = "—", f"*model switch to {md_escape(model_name(item.model_id))}*", ""
        else:
            job = str(item.job_id)
            prompt = md_escape(shorten(item.prompt))
            who = md_escape(item.submitted_by or "")
            if item.job_id in own:
                who += " **(this page)**"
        rows.append([place, job, prompt, md_escape(model_name(item.model_id)), who, _state(item),
                     fmt_eta(item.eta_s)])
    return rows


def queue_markdown(view: QueueView, model_name: Callable[[str], str], mine: Iterable[int] = ()) -> str:
    """The panel: a table of what runs and waits, then what the studio does next, and the training run that
    trains beside it (its name is a person's text: escaped)."""
    rows = queue_rows(view, model_name, mine)
    nxt = f"**What the studio does next:** {md_escape(view.next)}"
    if view.training:
        nxt += f"  \n**Training:** {md_escape(view.training)}"
    if not rows:
        return f"Nothing runs or waits.  \n{nxt}"
    head = ["#", "Job", "Prompt", "Model", "Who", "State", "Ready in"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    waiting = f"{view.waiting} job(s) waiting, at most {view.max_queue}."
    return "\n".join([*lines, "", f"{waiting}  \n{nxt}"])


def model_namer(ctx: AppContext) -> Callable[[str], str]:
    def name(model_id: str) -> str:
        try:
            return ctx.registry.get(model_id).display_name
        except NotFound:  # a model dropped from the registry while its job waited: its id says enough
            return model_id
    return name


def render_queue(ctx: AppContext, actor: Actor, mine: Iterable[int] = (), user: str | None = None) -> str:
    """The panel as this person sees it (a member: their own jobs), filtered by the User dropdown's value."""
    return queue_markdown(ctx.queue.view(actor, user_filter(user)), model_namer(ctx), mine)


def build_queue_panel(ctx: AppContext) -> QueuePanel:
    """The accordion under the Generate tab's controls (filled and refreshed by wire_queue_panel: what it shows
    depends on who looks)."""
    with gr.Accordion("Queue: what runs and waits", open=True, elem_id="queue-panel"):
        user = gr.Dropdown([("Everyone", EVERYONE)], value=EVERYONE, label="User", visible=False,
                           elem_id="queue-user", info="one person's jobs")
        table = gr.Markdown(elem_id="queue-table")
        gr.Markdown(REST_NOTE, elem_id="queue-rest-note")
    return QueuePanel(table, user)


def wire_queue_panel(ctx: AppContext, panel: QueuePanel, jobs: gr.State) -> None:
    private = dict(queue=False, show_progress="hidden", api_visibility="private")

    def render(mine, user, request: gr.Request | None = None) -> str:
        return render_queue(ctx, page_actor(request), mine or (), user)

    def opened(request: gr.Request | None = None) -> list:
        """The panel for who looks, at load: the table, and the User filter (admins only)."""
        actor = page_actor(request)
        return [render_queue(ctx, actor), user_dropdown(ctx, actor)]

    def choices(request: gr.Request | None = None) -> gr.Dropdown:
        return gr.Dropdown(choices=user_choices(ctx, page_actor(request)))

    gr.on(None, opened, None, [panel.table, panel.user], **private)  # no inputs: at page load only
    panel.user.focus(choices, None, panel.user, **private)  # people who generated since the page loaded
    panel.user.input(render, [jobs, panel.user], panel.table, **private)
    # queue=False: a tick never waits behind anything in Gradio's queue; view() reads memory only.
    gr.Timer(QUEUE_EVERY_S).tick(render, [jobs, panel.user], panel.table, **private)
