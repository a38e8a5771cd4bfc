"""The README documents every generation setting a user can change (like datasette's test_docs)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from studio.gen_settings import SETTINGS_CLASSES

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
DOCUMENTED = set(re.findall(r"^\| `(\w+)` \|", README.split("## Generation settings")[1].split("\n## ")[0], re.M))
ALL_SETTINGS = sorted({name for cls in SETTINGS_CLASSES.values() for name in cls.model_fields})


@pytest.mark.parametrize("name", ALL_SETTINGS)
def test_every_setting_is_documented_in_the_readme(name):
    assert name in DOCUMENTED, f"add `{name}` to the README's generation settings table"


def test_the_readme_documents_no_setting_that_does_not_exist():
    assert DOCUMENTED <= set(ALL_SETTINGS)


@pytest.mark.parametrize("name", ALL_SETTINGS)
def test_every_setting_has_a_title_and_description_for_the_forms(name):
    for cls in SETTINGS_CLASSES.values():
        if name in cls.model_fields:
            field = cls.model_fields[name]
            assert field.title and len(field.description or "") > 20
