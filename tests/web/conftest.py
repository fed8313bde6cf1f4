"""A real `neocloud up` and Debian's Chromium driven by Playwright; every page is watched for
console errors."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import Server, serving

CHROMIUM = os.environ.get("NEOCLOUD_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if CHROMIUM is None:
        pytest.skip("no Chromium here: install Debian's chromium (as .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(Server(tmp_path / "data", None)) as srv:
        yield srv


class Errors(list):
    """Console errors and uncaught exceptions of every page a test opens."""

    def watch(self, page) -> None:  # noqa: ANN001 - a Playwright page
        page.on("console", lambda m: m.type == "error" and self.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.append(f"{page.url}: {e}"))
