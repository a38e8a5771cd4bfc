"""Which parts of the page are for admins, by one mark: `elem_classes` containing ADMIN_ONLY.

The contract with the auth layer: a Gradio function is admin-only when one of its triggers is inside a block marked
ADMIN_ONLY (the trigger itself or one of its ancestors). The page marks every area that changes models, adapters,
settings, training, datasets, evaluation runs, A/B tests or users; `hide_admin_areas` hides them all from a member
when the page loads (one event over every marked block), so a member meets no button the server would refuse.
Admins, and a studio without login (its one person is an admin), see the page as it always was.

A page-load or timer function of a member-visible trigger that fills an admin area skips for members
(`is_admin_page`): a value it set could fire a `.change` listener in that area, an admin-only function the server
refuses, and a member would see that refusal.
"""
from __future__ import annotations

from typing import Iterable

import gradio as gr
from gradio.block_function import BlockFunction
from gradio.blocks import Block

from studio.ui.common import page_actor

ADMIN_ONLY = "admin-only"


def admin_only(*classes: str) -> list[str]:
    """elem_classes for an admin area (its other classes kept)."""
    return [*classes, ADMIN_ONLY]


def _classes(block: Block) -> list[str]:
    value = getattr(block, "elem_classes", None) or []
    return [value] if isinstance(value, str) else list(value)


def in_admin_area(block: Block | None) -> bool:
    """Whether this block or one of its ancestors is marked ADMIN_ONLY."""
    while block is not None:
        if ADMIN_ONLY in _classes(block):
            return True
        block = getattr(block, "parent", None)
    return False


def admin_areas(demo: gr.Blocks) -> list[Block]:
    """The outermost marked blocks of the page (hiding one hides what is inside it)."""
    return [b for b in demo.blocks.values()
            if ADMIN_ONLY in _classes(b) and not in_admin_area(getattr(b, "parent", None))]


def is_admin_only(demo: gr.Blocks, fn: BlockFunction) -> bool:
    """The contract: one of the function's triggers is inside an admin area. A function chained with .then /
    .success / .failure has no trigger block of its own (Gradio records `(None, "then")`): its trigger is the
    function it follows."""
    seen: set[int] = set()
    while fn is not None and fn._id not in seen:
        seen.add(fn._id)
        if any(in_admin_area(demo.blocks.get(block_id)) for block_id, _event in _targets(fn)):
            return True
        fn = demo.fns.get(fn.trigger_after) if fn.trigger_after is not None else None
    return False


def _targets(fn: BlockFunction) -> Iterable[tuple[int, str]]:
    return [(t[0], t[1]) for t in (fn.targets or []) if t and t[0] is not None]


def is_admin_page(request: gr.Request | None) -> bool:
    """Whether the page's person is an admin (without login: yes, the local person)."""
    return page_actor(request).is_admin


def hide_admin_areas(demo: gr.Blocks) -> None:
    """At page load, every admin area is hidden from a member (call last, inside `with demo`). An admin's page is
    left as built."""
    areas = admin_areas(demo)
    if not areas:
        return

    # A tab's button only goes with "hidden" (Gradio 6 keeps it for visible=False); other blocks leave the page.
    hidden = [gr.update(visible="hidden" if isinstance(area, gr.Tab) else False) for area in areas]

    def hide(request: gr.Request) -> list:
        return [gr.skip()] * len(areas) if is_admin_page(request) else hidden

    demo.load(hide, None, areas, queue=False, show_progress="hidden", api_visibility="private")
