"""Small helpers shared by the tabs: error mapping and how models are described to a person."""
from __future__ import annotations

import functools
import html
import re
from contextlib import contextmanager
from typing import Callable

import gradio as gr

from studio.errors import StudioError
from studio.users import LOCAL_ACTOR, Actor
from studio.services.models import CurrentModel, ModelInfo

NO_ADAPTER = "None (base model)"

# Warn before the tab is closed while a model switch runs (the switch would go on, unseen). Gradio's own
# beforeunload listener, registered before ours, closes the page's connection: if the person chooses to stay, the
# page reloads (the switch goes on in the server, and the page shows it).
HEAD = """<script>
window.addEventListener('beforeunload', (e) => {
  if (!window.__studioSwitching) return;
  e.preventDefault(); e.returnValue = '';
  setTimeout(() => { window.__studioSwitching = false; location.reload(); }, 500);  // only runs if we stayed
});
</script>"""
# Inline rename in the Adapters tab: Escape in the name box puts the saved name back (through a hidden button whose
# handler reads it from the server), Enter saves (the textbox's submit event).
HEAD += """<script>
document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape' || !e.target || !e.target.closest || !e.target.closest('#adapter-name-edit')) return;
  e.preventDefault();
  const reset = document.getElementById('adapter-name-reset');
  if (reset) reset.click();
  e.target.blur();
}, true);
</script>"""
# Settings forms: hovering a setting shows its description (the help text under it, errors included) as a tooltip.
HEAD += """<script>
document.addEventListener('mouseover', (e) => {
  const field = e.target && e.target.closest && e.target.closest('.cfg-field');
  const info = field && field.querySelector('.info-text, [data-testid="block-info"] + div');
  if (info) field.title = info.textContent.trim();
});
</script>"""
JS_SWITCH_START = "(...args) => { window.__studioSwitching = true; return args; }"
JS_SWITCH_END = "(...args) => { window.__studioSwitching = false; return args; }"
CSS = """
/* Generate tab: Cancel is quieter than Generate, red only while there is something to cancel */
#cancel-btn:not(:disabled) { color: var(--button-cancel-background-fill, #dc2626); border-color: currentColor; }
#current-model { padding: 6px 12px; border-radius: 8px; background: var(--block-background-fill); }
#model-card table { width: 100%; }
/* Dropdowns cannot disable one choice: adapters that need another model are greyed (the server refuses them). */
li[role="option"][aria-label*=" — Requires "], li[role="option"][aria-label*=" — Not usable: "] {
  opacity: 0.45; font-style: italic; pointer-events: none; }
#adapter-hint { color: var(--body-text-color-subdued); font-size: var(--text-sm); margin-top: -6px; }
#adapter-hint p { margin: 0; }
#generate-problems p { margin: 0; color: var(--error-text-color, #b91c1c); }
/* Generation settings forms (built from the settings schema) */
#config-form .cfg-field { flex: 1 1 320px !important; min-width: min(320px, 100%) !important; }  /* checkboxes too */
#config-summary { padding: 4px 12px; }
/* Reset: a real button, quieter than Save (a group strips buttons' borders and backgrounds). */
#config-reset, #config-reset-no { border: 1px solid var(--button-secondary-border-color, var(--border-color-primary)) !important;
  background: var(--background-fill-primary) !important; font-weight: normal; }
/* A failed switch: a message in the status area, clearly one. */
#switch-status.switch-failed, #gen-model-status.switch-failed { border: 1px solid var(--error-border-color, #ef4444); border-radius: 8px;
  padding: 6px 10px; background: var(--error-background-fill, #fef2f2); }
#loaded-model-section, #gen-config { margin-bottom: 12px; }
/* A refused action's message in its status line (instead of Gradio's "Error" badge over the outputs). */
.studio-failed { border: 1px solid var(--error-border-color, #ef4444); border-radius: 8px; padding: 6px 10px !important;
  background: var(--error-background-fill, #fef2f2); }
#loaded-model-section > .styler > .form, #loaded-model-section .prose h3, #gen-config .prose h3 { margin-top: 0; }
#config-reset-confirm { border: 2px solid var(--error-border-color, #ef4444); border-radius: 10px; padding: 10px 12px; }
/* Training tab: the run form's fields side by side; the audition grid (a row per checkpoint, a column per prompt) */
.training-form .cfg-field { flex: 1 1 220px !important; min-width: min(220px, 100%) !important; }
#training-audition { overflow-x: auto; }
#training-audition table { border-collapse: collapse; font-size: var(--text-sm); }
#training-audition th, #training-audition td { padding: 4px 8px; border-bottom: 1px solid var(--border-color-primary);
  text-align: left; vertical-align: top; }
#training-audition audio { width: 220px; height: 32px; display: block; }
#training-audition tr.tr-start { background: var(--block-background-fill); }
#training-audition .tr-facts, #training-audition .tr-seed, #training-audition .tr-score, #training-audition .tr-pending {
  color: var(--body-text-color-subdued); font-size: 0.9em; font-weight: normal; }
/* Adapters tab */
#adapter-name-reset, .studio-hidden { display: none !important; }
#adapters-empty p { margin: 4px 0; color: var(--body-text-color-subdued); }
#rename-dialog, #delete-confirm { border: 2px solid var(--color-accent); border-radius: 10px; padding: 10px 12px;
  box-shadow: 0 6px 24px rgba(0, 0, 0, 0.15); background: var(--background-fill-primary); }
#delete-confirm { border-color: var(--error-border-color, #ef4444); }
#adapter-detail { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px 12px; }
#adapter-detail-info table, #adapter-history table { width: 100%; font-size: var(--text-sm); }
#adapter-detail-info th, #adapter-detail-info td, #adapter-history th, #adapter-history td { padding: 4px 8px; }
#adapter-detail-info td:first-child { width: 22%; color: var(--body-text-color-subdued); }
.adapter-config { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 10px 16px; }
.adapter-config .cfg-note, .adapter-config .cfg-hint { grid-column: 1 / -1; margin: 0; }
.adapter-config .cfg-note { padding: 8px 10px; border-radius: 8px; background: var(--block-background-fill); }
.adapter-config .cfg-hint { color: var(--body-text-color-subdued); font-size: var(--text-sm); }
.adapter-config h4 { margin: 0 0 4px; }
.adapter-config table { width: 100%; border-collapse: collapse; font-size: var(--text-sm); border: none; }
.adapter-config th, .adapter-config td { text-align: left; padding: 3px 6px;
  border: none; border-bottom: 1px solid var(--border-color-primary); vertical-align: top; }
.adapter-config th { font-weight: normal; cursor: help; width: 55%; }
.adapter-config .cfg-name { text-decoration: underline dotted; }
.adapter-config .cfg-key { font-size: 0.8em; color: var(--body-text-color-subdued); background: none; }
.adapter-config td { word-break: break-word; font-family: var(--font-mono); }
/* History tab */
#history-info table { width: 100%; font-size: var(--text-sm); }
#history-info thead { display: none; }
#history-info td { padding: 4px 8px; word-break: break-word; }
#history-info td:first-child { width: 20%; white-space: nowrap; color: var(--body-text-color-subdued); }
#history-delete-confirm { border: 2px solid var(--error-border-color, #ef4444); border-radius: 10px; padding: 8px 10px; }
#history-empty p { margin: 4px 0; color: var(--body-text-color-subdued); }
.adapter-config .cfg-missing { color: var(--body-text-color-subdued); font-family: inherit; font-style: italic; }
"""


# What GFM turns into a link by itself (autolinks): a scheme's "://", "www." and e-mail addresses. Backslashes do
# not stop them (nothing there is Markdown punctuation), so their trigger characters become HTML entities, which
# show as the same characters but are never parsed as Markdown.
_AUTOLINK_TRIGGERS = re.compile(r"[:@]|(?i:(?<=www)\.)")


def md_escape(text: str | None) -> str:
    """User text (adapter names, descriptions) inside Markdown: shown as written, never as emphasis, a link (written
    or automatic), an image, HTML, an entity or a table cell."""
    out = str(text or "").replace("&", "&amp;")  # "&lt;" typed stays "&lt;" on the page
    for ch in "\\`*_{}[]<>()#+!|~":
        out = out.replace(ch, "\\" + ch)
    out = _AUTOLINK_TRIGGERS.sub(lambda m: f"&#{ord(m.group())};", out)
    return out.replace("\r", " ").replace("\n", " ")


def notify_text(text: object) -> str:
    """Text for gr.Info / gr.Warning / gr.Error, which Gradio renders as (sanitised) HTML: user text such as an
    adapter named `<img src=...>` must show as written, never load or link anything. Quotes are safe in text."""
    return html.escape(str(text), quote=False)


@contextmanager
def user_errors():
    """Domain errors become a message box for the person, never a traceback."""
    try:
        yield
    except StudioError as exc:
        raise gr.Error(notify_text(exc.message), print_exception=False) from None


def failed_status(text: str) -> gr.Markdown:
    """A status line saying an action was refused, styled as a failure (text: Markdown, user text escaped)."""
    return gr.Markdown(text, elem_classes=["studio-failed"])


def plain_status(text: str = "") -> gr.Markdown:
    return gr.Markdown(text, elem_classes=[])


def failures_as_status(fn: Callable, on_failure: Callable[[str], list]) -> Callable:
    """The page's version of an action that scripts call too: a refusal (gr.Error, its text already escaped for
    HTML) becomes on_failure(plain text)'s outputs, a message in the action's status line, instead of failing the
    event, which put Gradio's red "Error" badge over the outputs, where it stayed. Scripts keep the failing event
    (their endpoint is registered separately), so they still get the error. Same signature (functools.wraps), so
    Gradio still injects gr.Progress and gr.Request."""
    @functools.wraps(fn)
    def page_fn(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as exc:
            return on_failure(html.unescape(str(exc.message)))
    return page_fn


def page_user(request: gr.Request | None) -> str:
    """Who acts on the page, for audit records: the logged-in user, or LOCAL_USER without auth."""
    return page_actor(request).name


def page_actor(request: gr.Request | None) -> Actor:
    """Who acts on the page and with which role: what the auth middleware let in (request.state.actor), or the
    local person (an admin) without auth."""
    inner = getattr(request, "request", None)  # gr.Request wraps the Starlette request of the event
    actor = getattr(getattr(inner, "state", None), "actor", None)
    return actor if isinstance(actor, Actor) else LOCAL_ACTOR


def fmt_params(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.0f}M" if n >= 1e7 else f"{n / 1e6:.2f}M"
    return f"{n / 1e3:.0f}K"


def fmt_channels(n: int) -> str:
    return {1: "mono", 2: "stereo"}.get(n, f"{n} channels")


def fmt_gb(gb: float) -> str:
    return f"{gb:.1f} GB" if gb >= 1 else f"{gb * 1024:.0f} MB"


def weights_state(m: ModelInfo) -> str:
    if m.builtin:
        return "built in"
    return "downloaded" if m.available else f"{fmt_gb(m.download_gb)} download"


def model_choice_label(m: ModelInfo) -> str:
    # Dropdowns cannot disable a choice: say it in the label; the server refuses it anyway.
    fit = "" if m.fits_memory else " · needs more memory than is free"
    return f"{m.display_name} · {fmt_params(m.parameters)} · {weights_state(m)}{fit}"


def model_card(m: ModelInfo | None) -> str:
    if m is None:
        return "No model selected."
    if m.builtin:
        weights = "Built on this machine (no download)"
    elif m.folder:  # a custom model used where it is
        weights = f"In the folder `{md_escape(m.folder)}` on the server" + ("" if m.available else " (missing now)")
    elif m.available:
        weights = f"Downloaded (`{m.hub_repo}`)"
    else:
        weights = f"Not downloaded: about {fmt_gb(m.download_gb)} from `{m.hub_repo}` when you choose it"
    return "\n".join([
        f"### {md_escape(m.display_name)}{'  (loaded)' if m.loaded else ''}",
        md_escape(m.description),
        "",
        "| Capability | Value |",
        "|---|---|",
        f"| Max duration | {m.max_duration_s:g} s per piece |",
        f"| Memory needed | {fmt_gb(m.memory_gb)} (about half on a GPU, which uses half precision)"
        f"{'' if m.fits_memory else ' · ⚠️ ' + (m.memory_note or '')} |",
        f"| Sample rate | {m.sample_rate / 1000:g} kHz, {fmt_channels(m.channels)} ({m.codebooks} codebooks) |",
        f"| Conditioning | {', '.join(m.conditioning)} |",
        f"| Parameters | {fmt_params(m.parameters)} |",
        f"| Weights | {weights}{' · added in the studio (removable in *Add or remove a model*)' if m.custom else ''} |",
        f"| Studio defaults | Top-k {m.generation['top_k']}, Top-p {m.generation['top_p']:g}, Temperature "
        f"{m.generation['temperature']:g}, Guidance {m.generation['guidance_scale']:g} (what a new model starts "
        "from; its saved settings, in use: Generation settings, below) |",
    ])


def status_line(cur: CurrentModel) -> str:
    """The header: which model is loaded and why (the note), or which model the studio is switching to. A switch
    locks nothing but the model dropdowns: jobs submitted meanwhile wait in the queue and run on the new model."""
    if cur.state == "switching":
        msg = cur.progress.message if cur.progress else cur.activity
        loaded = f"  \n<small>Loaded until then: {md_escape(cur.model.display_name)}.</small>" if cur.model else ""
        return (f"⏳ **Switching model:** {md_escape(msg)}. Jobs submitted now wait for it and run on the new "
                f"model.{loaded}")
    # Names and notes are shown as written (md_escape): a note quoting an error or a URL never becomes markup.
    if cur.model is None:
        return f"**No model loaded.** {md_escape(cur.note)}"
    m = cur.model
    doing = f" · ⏳ {md_escape(cur.activity)}" if cur.state == "generating" else ""
    longest = (f"up to {m.max_duration_s:g} s" + (f" ({m.max_extended_duration_s:g} s in windows)"
                                                   if m.max_extended_duration_s else ""))
    return (f"**Model: {md_escape(m.display_name)}** · {longest} · {m.sample_rate / 1000:g} kHz "
            f"{fmt_channels(m.channels)}{doing}  \n<small>{md_escape(cur.note)}</small>")
