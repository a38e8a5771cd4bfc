"""Adapter strength and stacks: several LoRA adapters active at once, each at its own strength, without merging.

PEFT does the work: `LoraLayer.set_scale(name, s)` sets an adapter's scaling to s x lora_alpha / r (its trained
scale times s), and `set_adapter([names])` activates several adapters at once; a LoRA layer's forward then adds
`s_i x scaling_i x B_i(A_i(x))` of each active adapter to the base layer's output. The base weights are never
touched (no merge), so removing a stack is restoring each layer's scaling values and active adapters as they were:
the base model's output stays bit-identical (tests/runtime/test_stacks.py).

A row's stack is `Row.adapters` (name, strength) in order, or `Row.adapter` alone at strength 1, or nothing (the
base model). Rows whose stacks are plain (no adapter, or one adapter at strength 1) mix in one batch through
PEFT's per-row `adapter_names`; other stacks only batch with the same stack (see `batch_key`).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

from studio.runtime.backend import Row

MAX_STACK = 3  # adapters in one stack: each one active adds its LoRA products to every adapted layer's forward
MIN_STRENGTH, MAX_STRENGTH = 0.0, 2.0

Stack = tuple[tuple[str, float], ...]


def row_stack(row: Row) -> Stack:
    """The (adapter name, strength) pairs a row runs with, in order; () for the base model."""
    if row.adapters:
        return tuple((str(name), float(strength)) for name, strength in row.adapters)
    return ((row.adapter, 1.0),) if row.adapter is not None else ()


def is_plain(stack: Stack) -> bool:
    """No adapter, or one adapter at its trained strength: what PEFT's mixed-batch path runs row by row."""
    return len(stack) == 0 or (len(stack) == 1 and stack[0][1] == 1.0)


def batch_key(row: Row) -> Stack | None:
    """Rows decode together only when their keys are equal: None for every plain row (they mix, as before
    strengths existed), the stack itself otherwise (a layer has one scaling per adapter and one set of active
    adapters at a time)."""
    stack = row_stack(row)
    return None if is_plain(stack) else stack


def lora_layers(modules: Iterable) -> list:
    """PEFT's LoRA layers among `modules` (model.modules())."""
    from peft.tuners.lora import LoraLayer

    return [m for m in modules if isinstance(m, LoraLayer)]


@contextmanager
def scaled(layers: Sequence, strengths: dict[str, float]) -> Iterator[None]:
    """Each named adapter at its strength (PEFT's set_scale) in every layer that has it, for the duration; every
    layer's scaling values are put back exactly as they were after (saved values, not recomputed)."""
    saved = [(layer, {name: layer.scaling[name] for name in strengths if name in layer.scaling})
             for layer in layers]
    try:
        for layer in layers:
            for name, strength in strengths.items():
                layer.set_scale(name, float(strength))
        yield
    finally:
        for layer, values in saved:
            layer.scaling.update(values)


@contextmanager
def stacked(layers: Sequence, stack: Stack) -> Iterator[None]:
    """The adapters of `stack` active together, each at its strength; afterwards every layer has the scaling
    values, the active adapters and the enabled/disabled state it had before."""
    names = [name for name, _ in stack]
    saved = [(layer, list(layer.active_adapters), layer.disable_adapters) for layer in layers]
    with scaled(layers, dict(stack)):
        try:
            for layer in layers:
                _activate(layer, names, enabled=True)
            yield
        finally:
            for layer, active, disabled in saved:
                _activate(layer, active, enabled=not disabled)


def _activate(layer, names: list[str], enabled: bool) -> None:
    if enabled and layer.disable_adapters:
        layer.enable_adapters(True)
    layer.set_adapter(names, inference_mode=True)  # after enabling, which marks the adapters' weights trainable
    if not enabled and not layer.disable_adapters:
        layer.enable_adapters(False)
