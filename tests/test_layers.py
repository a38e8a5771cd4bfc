"""The house rules of ARCHITECTURE.md, read from the imports."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

STUDIO = Path(__file__).resolve().parents[1] / "studio"

FORBIDDEN = {
    "ui": {"studio.db", "sqlmodel", "sqlalchemy", "torch", "transformers", "peft"},
    "api": {"studio.db", "sqlmodel", "sqlalchemy", "torch", "transformers", "peft"},
    "services": {"gradio", "fastapi", "starlette"},
    "runtime": {"gradio", "fastapi", "starlette", "studio.db", "sqlmodel", "sqlalchemy"},
    "db": {"gradio", "fastapi", "torch", "transformers"},
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer):
    bad = []
    for path in (STUDIO / layer).rglob("*.py"):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(STUDIO)} imports {name}")
    assert not bad, bad


def test_no_module_level_mutable_state():
    offenders = [str(p) for p in STUDIO.rglob("*.py") if "\nglobal " in p.read_text() or "    global " in p.read_text()]
    assert not offenders
