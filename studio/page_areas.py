"""Which of the page's functions are admin-only: one rule, read by the page (ui/access.py hides those areas from
members) and by the auth edge (api/roles.py refuses their functions to members).

The rule: a block whose `elem_classes` holds ADMIN_ONLY marks an admin area; a Gradio function is admin-only when
one of its triggers is inside one (the trigger itself or a block around it). A function chained with .then /
.success / .failure has no trigger block of its own (Gradio records `(None, "then")`): its triggers are those of the
function it follows. Works on Gradio's objects by their attributes only (no gradio import: the rule is data).
"""
from __future__ import annotations

ADMIN_ONLY = "admin-only"


def admin_only(*classes: str) -> list[str]:
    """elem_classes for an admin area (its other classes kept)."""
    return [*classes, ADMIN_ONLY]


def _classes(block) -> list[str]:
    value = getattr(block, "elem_classes", None) or []
    return [value] if isinstance(value, str) else list(value)


def in_admin_area(block) -> bool:
    """The block, or a block around it, carries the admin-only marker."""
    seen = 0
    while block is not None and seen < 1000:  # parents form a tree; the bound is a guard, not a limit
        if ADMIN_ONLY in _classes(block):
            return True
        block, seen = getattr(block, "parent", None), seen + 1
    return False


def trigger_blocks(blocks, fn) -> list:
    """The blocks whose events start fn, following a chained function back to the event a person (or a timer, or
    the page's load) started."""
    seen: set[int] = set()
    found = []
    while fn is not None and fn._id not in seen:
        seen.add(fn._id)
        for target in fn.targets or []:
            if target and target[0] is not None and target[0] in blocks.blocks:
                found.append(blocks.blocks[target[0]])
        fn = blocks.fns.get(fn.trigger_after) if fn.trigger_after is not None else None
    return found


def is_admin_only(blocks, fn) -> bool:
    """The rule, for one function of the page."""
    return any(in_admin_area(b) for b in trigger_blocks(blocks, fn))
