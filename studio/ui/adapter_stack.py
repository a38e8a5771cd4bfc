"""The Generate tab's adapter strength and "Stack adapters": the chosen adapter's strength, and up to three
adapters of the loaded model active together, each with its own strength. The studio checks everything again
(each adapter against the model, no duplicates, strengths 0-2): the page only builds the request's fields."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.context import AppContext
from studio.services.generation import MAX_STACK, MAX_STRENGTH, MIN_STRENGTH
from studio.ui.common import NO_ADAPTER, md_escape

STRENGTH_INFO = f"{MIN_STRENGTH:g}: no effect · 1: as trained · {MAX_STRENGTH:g}: twice its effect"
STACK_HELP = (f"Up to {MAX_STACK} adapters of the loaded model at once, each with its own strength: their effects "
              f"add up. Leave the Adapter above on {NO_ADAPTER} to use a stack.")
BOTH = (f"Choose either one adapter (Adapter) or a stack (Stack adapters), not both: set Adapter to {NO_ADAPTER} "
        "to use the stack.")


@dataclass
class StackWidgets:
    strength: gr.Number  # the strength of the Adapter dropdown's choice
    adapters: list[gr.Dropdown]  # the stack's adapters (NO_ADAPTER: an empty slot)
    strengths: list[gr.Number]
    accordion: gr.Accordion

    @property
    def inputs(self) -> list:
        """What the Generate handlers take after their own inputs: strength, then each slot's adapter and
        strength (the handlers' parameters `strength, stack1, strength1, ...`)."""
        out = [self.strength]
        for adapter, strength in zip(self.adapters, self.strengths):
            out += [adapter, strength]
        return out


def _slider(label: str, elem_id: str, visible: bool = True) -> gr.Number:
    """A number box without Gradio bounds, like every number on the page (a slider clamps a typed value
    silently; Gradio's bounds fail with a traceback): the studio checks it and says so under the box."""
    return gr.Number(value=1.0, step=0.05, label=label, elem_id=elem_id, info=STRENGTH_INFO, visible=visible)


def strength_problem(value) -> str | None:
    """What is wrong with a typed strength, in the studio's words (None: fine)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number from {MIN_STRENGTH:g} to {MAX_STRENGTH:g}"
    if not MIN_STRENGTH <= value <= MAX_STRENGTH:
        return f"⚠️ {value:g} is out of range: {MIN_STRENGTH:g} (no effect) to {MAX_STRENGTH:g}"
    return None


def build_strength(ctx: AppContext) -> gr.Number:
    """The chosen adapter's strength, under the Adapter dropdown (hidden while the base model is chosen)."""
    return _slider("Adapter strength", "adapter-strength", visible=False)


def build_stack(ctx: AppContext, strength: gr.Number) -> StackWidgets:
    adapters, strengths = [], []
    with gr.Accordion("Stack adapters", open=False, elem_id="adapter-stack") as accordion:
        gr.Markdown(STACK_HELP, elem_classes=["cfg-hint"])
        for i in range(1, MAX_STACK + 1):
            with gr.Row(equal_height=True):
                # allow_custom_value: as the Adapter dropdown (scripts' sessions never get the page's choices)
                adapters.append(gr.Dropdown([(NO_ADAPTER, NO_ADAPTER)], value=NO_ADAPTER, label=f"Stack adapter {i}",
                                            elem_id=f"stack-adapter-{i}", allow_custom_value=True, scale=2))
                strengths.append(_slider(f"Strength {i}", f"stack-strength-{i}"))
    return StackWidgets(strength, adapters, strengths, accordion)


def wire_stack(ctx: AppContext, adapter: gr.Dropdown, widgets: StackWidgets, choices) -> None:
    """The strength slider shows with an adapter chosen; the stack's lists are filled from the adapters usable
    now each time one is opened (choices(): the Adapter dropdown's (label, value) list)."""
    private = dict(queue=False, show_progress="hidden", api_visibility="private")
    adapter.change(lambda v: gr.Number(visible=v not in (None, "", NO_ADAPTER)), adapter, widgets.strength,
                   **private)
    for box in [widgets.strength, *widgets.strengths]:
        box.change(lambda v: gr.Number(info=strength_problem(v) or STRENGTH_INFO), box, box, **private,
                   preprocess=False, trigger_mode="always_last")
    for dropdown in widgets.adapters:
        dropdown.focus(lambda current: gr.Dropdown(choices=_with_current(choices(), current)), dropdown, dropdown,
                       **private)


def _with_current(options: list[tuple[str, str]], current) -> list[tuple[str, str]]:
    """The choices, keeping the person's current choice listed (a dropdown must hold its value)."""
    if current in (None, "") or any(value == current for _, value in options):
        return options
    return [*options, (str(current), str(current))]


def _strength(value, name: str) -> float:
    if value is None or value == "":
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise gr.Error(f"{name} must be a number from {MIN_STRENGTH:g} to {MAX_STRENGTH:g}.", print_exception=False)
    return float(value)


def request_fields(adapter_id: int | None, strength, slots: list, resolve) -> dict:
    """The request's adapter fields from the page's values: adapter_id (+ adapter_strength) for one adapter,
    adapters for a stack. slots: [adapter, strength, adapter, strength, ...]; resolve(value) -> adapter id or
    None (the Adapter dropdown's own reading of a choice, which refuses unknown ones)."""
    stack = []
    for i in range(0, len(slots), 2):
        chosen = resolve(slots[i])
        if chosen is not None:
            # plain values: the request checks them where the page's other values are checked
            stack.append({"adapter_id": chosen, "strength": _strength(slots[i + 1], f"Strength {i // 2 + 1}")})
    if stack:
        if adapter_id is not None:
            raise gr.Error(BOTH, print_exception=False)
        return {"adapters": stack}
    if adapter_id is None:
        return {}
    return {"adapter_id": adapter_id, "adapter_strength": _strength(strength, "Adapter strength")}


def stack_text(stack, bold: bool = True) -> str:
    """'**a v1** at 0.5 + **b v2** at 1.5' (labels escaped; a deleted adapter said so)."""
    mark = "**" if bold else ""
    return " + ".join(f"{mark}{md_escape(s.label)}{mark}{' (deleted)' if s.deleted else ''} at {s.strength:g}"
                      for s in stack)


def stack_cells(stack) -> str:
    """A History table cell (plain text, shown as written): 'a v1 (0.5) + b v2 (1.5)'."""
    return " + ".join(f"{'⚠ ' if s.deleted else ''}{s.label} ({s.strength:g})" for s in stack)


def reuse_updates(stack, adapter_id: int | None, options: list[tuple[str, str]]) -> list:
    """Updates for StackWidgets.inputs that run a recorded job's adapters again: one adapter's strength, or the
    stack's slots (the Adapter dropdown is then set to the base model by the caller: adapter_value)."""
    slots: list = []
    several = bool(stack) and len(stack) > 1
    for i in range(MAX_STACK):
        item = stack[i] if several and i < len(stack) else None
        value = str(item.adapter_id) if item else NO_ADAPTER
        slots += [gr.Dropdown(choices=_with_current(options, value), value=value),
                  gr.Number(value=item.strength if item else 1.0)]
    single = stack[0].strength if stack and not several else 1.0
    return [gr.Number(value=single, visible=adapter_id is not None and not several), *slots]


def adapter_value(stack, adapter_id: int | None) -> str:
    """The Adapter dropdown's value for a recorded job: its adapter, or the base model when it ran a stack."""
    if adapter_id is None or (stack and len(stack) > 1):
        return NO_ADAPTER
    return str(adapter_id)
