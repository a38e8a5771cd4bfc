"""Forms built from a settings JSON Schema: one widget per property (a number box, dropdown for options, checkbox
for booleans), the description as help text and tooltip, unsaved edits
marked, values that differ from the default hinted (two different things: "● unsaved" goes away on Save, the
"default: 250" hint stays while the saved value differs), and per-field error messages. Pure functions, plus one
that creates the widgets."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gradio as gr

UNSAVED_MARK = " ● unsaved"
DEFAULT_HINT = " · default: {}"
KEEP = object()  # widget_update: leave the value alone


@dataclass(frozen=True)
class FieldSpec:
    """How one schema property is shown."""

    name: str
    kind: str  # number | dropdown | checkbox
    label: str
    description: str
    default: Any
    integer: bool = False
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple = ()


def _step(prop: dict, integer: bool) -> float:
    if integer:
        return 1
    if "x-step" in prop:
        return float(prop["x-step"])
    span = prop.get("maximum", 1.0) - prop.get("minimum", 0.0)
    return 10 ** math.floor(math.log10(span / 100)) if span > 0 else 0.01


def field_spec(name: str, prop: dict) -> FieldSpec:
    label, description, default = prop.get("title", name), prop.get("description", ""), prop.get("default")
    if "enum" in prop or "const" in prop:
        choices = tuple(prop.get("enum", [prop.get("const")]))
        return FieldSpec(name, "dropdown", label, description, default, choices=choices)
    kind = prop.get("type")
    if kind == "boolean":
        return FieldSpec(name, "checkbox", label, description, default)
    if kind in ("integer", "number"):
        integer = kind == "integer"
        step = _step(prop, integer)
        low = prop.get("minimum", prop["exclusiveMinimum"] + step if "exclusiveMinimum" in prop else None)
        high = prop.get("maximum", prop["exclusiveMaximum"] - step if "exclusiveMaximum" in prop else None)
        return FieldSpec(name, "number", label, description, default, integer=integer, minimum=low, maximum=high,
                         step=step)
    raise ValueError(f"setting {name!r}: no widget for schema type {kind!r}")


def field_specs(schema: dict) -> list[FieldSpec]:
    """Every property of the schema, in declaration order."""
    return [field_spec(name, prop) for name, prop in schema["properties"].items()]


def fmt_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def bounds_text(f: FieldSpec) -> str:
    if f.kind == "dropdown":
        return "one of " + ", ".join(map(str, f.choices))
    if f.kind == "number" and f.minimum is not None and f.maximum is not None:
        return f"{fmt_value(f.minimum)} to {fmt_value(f.maximum)}"
    return ""


def label_for(f: FieldSpec, unsaved: bool = False, non_default: bool = False) -> str:
    """The label: the setting's name, "● unsaved" for an edit not saved yet, and the default when the value shown
    differs from it."""
    return (f.label + (UNSAVED_MARK if unsaved else "")
            + (DEFAULT_HINT.format(fmt_value(f.default)) if non_default else ""))


def info_for(f: FieldSpec, error: str | None = None) -> str:
    """Help text under the widget: the error first when there is one, then the default and allowed range."""
    facts = [f"default {fmt_value(f.default)}"] + ([bounds_text(f)] if bounds_text(f) else [])
    text = f"{f.description} ({'; '.join(facts)})"
    return f"⚠️ {error} · {text}" if error else text


def coerce(f: FieldSpec, raw: Any) -> Any:
    """A widget's value as the JSON the schema expects (Gradio hands sliders back as floats with binary noise).
    Values that cannot be read are passed on unchanged, for the validation to name them."""
    if raw is None or f.kind in ("dropdown", "checkbox"):
        return raw
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return raw
    if f.integer:
        return int(number) if number.is_integer() else number
    digits = max(0, -math.floor(math.log10(f.step))) + 2 if f.step else 6
    return round(number, digits)


def make_widget(f: FieldSpec, value: Any, elem_id: str, visible: bool = True, non_default: bool = False,
                min_width: int | None = None):
    common = dict(label=label_for(f, non_default=non_default), info=info_for(f), elem_id=elem_id,
                  elem_classes=["cfg-field"], visible=visible)
    if min_width:
        common["min_width"] = min_width
    if f.kind == "checkbox":
        return gr.Checkbox(value=bool(value), **common)
    if f.kind == "dropdown":
        return gr.Dropdown(list(f.choices), value=value, **common)
    # A number box without Gradio bounds, never a slider: Gradio's slider silently clamped a typed value (2 in
    # Top-p became 1 when the field lost focus) and its bounds check failed events with a traceback. Musicians
    # copy exact values from recipes ("temperature 1.1"): the box keeps what was typed, the allowed range is in the
    # help text, the arrows step by a sensible amount, and the studio's own check names a bad value at the field.
    # No precision either: Gradio would round 2.5 to 2 behind the person's back; the check says "whole number".
    return gr.Number(value=value, step=f.step or 1, **common)


def widget_update(f: FieldSpec | None, *, value: Any = KEEP, error: str | None = None, unsaved: bool = False,
                  non_default: bool = False) -> Any:
    """An update for a field's widget; None (a field this model does not have): hidden."""
    if f is None:
        return gr.update(visible=False)
    kw: dict[str, Any] = dict(label=label_for(f, unsaved, non_default), info=info_for(f, error), visible=True)
    if value is not KEEP:
        kw["value"] = value
    if f.kind == "dropdown":
        kw["choices"] = list(f.choices)
    return gr.update(**kw)
