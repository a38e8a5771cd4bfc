"""The house rules of ARCHITECTURE.md, read from the code: layer imports, and no module-level mutable state."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

STUDIO = Path(__file__).resolve().parents[1] / "studio"
SOURCES = sorted(STUDIO.rglob("*.py")) + [STUDIO.parent / "app.py"]

FORBIDDEN = {
    "ui": {"studio.db", "sqlmodel", "sqlalchemy", "torch", "transformers", "peft"},
    "api": {"studio.db", "sqlmodel", "sqlalchemy", "torch", "transformers", "peft"},
    "services": {"gradio", "fastapi", "starlette"},
    "runtime": {"gradio", "fastapi", "starlette", "studio.db", "sqlmodel", "sqlalchemy"},
    "db": {"gradio", "fastapi", "torch", "transformers"},
}
MUTATORS = {"append", "extend", "insert", "update", "setdefault", "pop", "popitem", "clear", "add", "discard",
            "remove", "sort", "reverse"}
MUTABLE_CALLS = {"list", "dict", "set", "defaultdict", "deque", "OrderedDict", "Counter", "Queue", "SimpleQueue",
                 "Lock", "RLock", "Event", "Thread", "ThreadPoolExecutor"}


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer):
    bad = []
    for path in (STUDIO / layer).rglob("*.py"):
        for name in _imports(ast.parse(path.read_text())):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[layer]):
                bad.append(f"{path.relative_to(STUDIO)} imports {name}")
    assert not bad, bad


def _module_state_offences(source: str) -> list[str]:
    """Where code changes state that lives in a module rather than in an object with one owner: `global`,
    module-level names bound to a lock, queue, thread or a lower-case container, and functions that mutate a
    module-level name (item assignment, `del`, augmented assignment, mutating methods)."""
    tree = ast.parse(source)
    module_names: set[str] = set()
    offences = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        value = getattr(node, "value", None)
        for t in targets:
            if isinstance(t, ast.Name):
                module_names.add(t.id)
                call = value.func if isinstance(value, ast.Call) else None
                called = getattr(call, "id", None) or getattr(call, "attr", None)
                if called in MUTABLE_CALLS and called not in {"list", "dict", "set"}:
                    offences.append(f"line {node.lineno}: module-level {t.id} = {called}(...)")
                elif not t.id.isupper() and (isinstance(value, (ast.List, ast.Dict, ast.Set))
                                             or called in {"list", "dict", "set"}):
                    offences.append(f"line {node.lineno}: module-level mutable {t.id}")
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Global):
                offences.append(f"line {node.lineno}: global {', '.join(node.names)}")
            targets = []
            if isinstance(node, (ast.Assign, ast.Delete)):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for t in targets:
                base = t.value if isinstance(t, (ast.Subscript, ast.Attribute)) else None
                if isinstance(base, ast.Name) and base.id in module_names:
                    offences.append(f"line {node.lineno}: changes module-level {base.id}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr in MUTATORS and isinstance(node.func.value, ast.Name) and \
                    node.func.value.id in module_names:
                offences.append(f"line {node.lineno}: {node.func.value.id}.{node.func.attr}(...)")
    return offences


@pytest.mark.parametrize("source, expected", [
    ("X = []\ndef f():\n    X.append(1)\n", "X.append"),
    ("CACHE = {}\ndef f(k):\n    CACHE[k] = 1\n", "changes module-level CACHE"),
    ("n = 0\ndef f():\n    global n\n    n += 1\n", "global n"),
    ("import threading\nLOCK = threading.Lock()\n", "Lock(...)"),
    ("models = {}\n", "module-level mutable models"),
], ids=["append", "item", "global", "lock", "lower-case dict"])
def test_the_state_check_catches_module_level_state(source, expected):
    assert any(expected in o for o in _module_state_offences(source))


def test_constants_and_owned_state_pass_the_check():
    source = ("FORMATS = {'wav': 1}\nclass Owner:\n    def __init__(self):\n        self.items = []\n"
              "    def add(self, x):\n        self.items.append(x)\n        local = {}\n        local['a'] = FORMATS['wav']\n")
    assert _module_state_offences(source) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(STUDIO.parent)))
def test_no_module_level_mutable_state(path):
    assert _module_state_offences(path.read_text()) == []
