"""studio/training runs inside the subprocess: no gradio, fastapi or database there (ARCHITECTURE.md), and the
runner's imports pull none of them in (the subprocess stays small and starts fast)."""
from __future__ import annotations

import ast
from pathlib import Path

TRAINING = Path(__file__).resolve().parents[2] / "studio" / "training"
FORBIDDEN = ("gradio", "fastapi", "starlette", "studio.db", "sqlmodel", "sqlalchemy", "studio.services", "studio.api",
             "studio.ui", "studio.context")


def test_training_imports_no_server_layer():
    bad = []
    for path in sorted(TRAINING.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            bad += [f"{path.name} imports {n}" for n in names
                    if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, bad
