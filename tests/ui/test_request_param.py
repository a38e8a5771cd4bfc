"""Gradio hands the request (who is signed in) only to a parameter before *args: a `request` after *args stays
None, and page_actor then sees the local admin (a member listed, rated and deleted everyone's jobs in History)."""
from __future__ import annotations

import ast
from pathlib import Path

import studio

STUDIO = Path(studio.__file__).parent


def test_no_page_handler_takes_the_request_after_star_args():
    wrong = []
    for path in sorted(STUDIO.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.args.vararg \
                    and any(arg.arg == "request" for arg in node.args.kwonlyargs):
                wrong.append(f"{path.relative_to(STUDIO.parent)}:{node.lineno} {node.name}")
    assert wrong == [], f"request after *args is never given by Gradio: {wrong}"
