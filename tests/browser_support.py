"""Imported first by every browser test module: skips that module when Debian's Chromium or Playwright is missing
(never `playwright install`), and hands it Playwright's sync API."""
from __future__ import annotations

import os

import pytest

from tests.live import CHROMIUM

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
