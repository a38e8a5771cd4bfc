"""Every package the code imports directly is pinned in requirements.txt (today's imports, and tomorrow's)."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Fixture build scripts (tests/fixtures/*/build.py) are run by hand with their own tools (audiocraft), never in CI
SOURCES = [ROOT / "app.py", *(p for d in ("studio", "tests", "bench") for p in (ROOT / d).rglob("*.py")
                              if "fixtures" not in p.relative_to(ROOT).parts)]
LOCAL = {"studio", "tests", "app", "bench"} | {p.stem for p in (ROOT / "bench").glob("*.py")}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(name: str) -> dict[str, str]:
    return {_normal(m.group(1)): m.group(2) for m in
            re.finditer(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s#]+)", (ROOT / name).read_text(), re.M)}


PINNED = _pins("requirements.txt")
EXTRAS = _pins("requirements-ray.txt")  # optional: GPU workers on Ray Serve (--workers ray...)


def _top_level_imports() -> dict[str, str]:
    """Third-party top-level modules imported anywhere, with one file that imports each."""
    found: dict[str, str] = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in LOCAL and top != "__future__":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


IMPORTS = _top_level_imports()
DISTRIBUTIONS = importlib.metadata.packages_distributions()


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_every_imported_package_is_pinned(module):
    dists = DISTRIBUTIONS.get(module)
    if not dists and _normal(module) in EXTRAS:
        pytest.skip(f"{module} is an optional extra (requirements-ray.txt), not installed here")
    assert dists, f"{module} (imported by {IMPORTS[module]}) is not installed"
    dist = _normal(dists[0])
    pins = PINNED | EXTRAS
    assert dist in pins, f"pin {dists[0]} in requirements.txt: {IMPORTS[module]} imports {module}"
    installed = importlib.metadata.version(dists[0]).split("+")[0]
    assert pins[dist] == installed, f"requirements pin {dist}=={pins[dist]}, {installed} is installed"


def test_a_plain_install_does_not_pull_ray():
    assert "ray" not in PINNED and "ray" in EXTRAS


def test_the_scan_sees_the_stack():
    assert {"torch", "transformers", "gradio", "fastapi", "sqlmodel", "pydantic_settings"} <= set(IMPORTS)
