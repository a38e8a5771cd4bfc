"""Which parts of the page are for admins, by one mark: `elem_classes` containing ADMIN_ONLY.

The rule that makes a function admin-only lives in studio/page_areas.py (the auth edge refuses those functions to
members by the same rule). The page marks every area that changes models, adapters,
settings, training, datasets, evaluation runs, A/B tests or users; `hide_admin_areas` hides them all from a member
when the page loads (one event over every marked block), so a member meets no button the server would refuse.
Admins, and a studio without login (its one person is an admin), see the page as it always was.

A page-load or timer function of a member-visible trigger that fills an admin area skips for members
(`is_admin_page`): a value it set could fire a `.change` listener in that area, an admin-only function the server
refuses, and a member would see that refusal.
"""
from __future__ import annotations

import gradio as gr

from studio.page_areas import ADMIN_ONLY, admin_only, in_admin_area, is_admin_only  # noqa: F401 - the page's names
from studio.ui.common import page_actor


def admin_areas(demo: gr.Blocks) -> list:
    """The outermost marked blocks of the page (hiding one hides what is inside it)."""
    return [b for b in demo.blocks.values()
            if in_admin_area(b) and not in_admin_area(getattr(b, "parent", None))]


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
