"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright for
Python (no browser download). Tests skip, with the reason, where either is missing."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("PARETUNE_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def unavailable() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PARETUNE_CHROMIUM)"
    return None


@contextmanager
def chromium_page(**context: Any) -> Iterator[Any]:
    """A fresh page in headless Chromium; its console errors and uncaught page errors are
    collected in ``page.errors``."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            page = browser.new_page(**{"viewport": {"width": 1280, "height": 900}, **context})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
            page.errors = errors
            yield page
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> None:
    """Save a full-page screenshot as ``$PARETUNE_SCREENSHOTS/<name>`` when that is set
    (``PARETUNE_SCREENSHOTS=docs pytest tests/... -k browser`` refreshes the README's)."""
    folder = os.environ.get("PARETUNE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)
