"""A real `neocloud up` and Debian's Chromium driven by Playwright; every page is watched for
console errors."""

from __future__ import annotations

import os
import re
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


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module's tests that leave nothing another test could trip on: sessions
    and tenants of their own, jobs they end, requests refused; they count what they add. A start
    saved per test."""
    with serving(Server(tmp_path_factory.mktemp("shared") / "data", None)) as srv:
        yield srv


class Errors(list):
    """Console errors and uncaught exceptions of every page a test opens. A page that answers with
    its own 4xx status (not found, a form to fix, refused) is not an error of the page: Chromium's
    note about that status is left out, while a failed script or stylesheet still counts."""

    def watch(self, page) -> None:  # noqa: ANN001 - a Playwright page
        page.on("console", lambda m: m.type == "error" and not _own_status(page, m)
                and self.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.append(f"{page.url}: {e}"))


def _own_status(page, message) -> bool:  # noqa: ANN001 - Playwright objects
    return (message.text.startswith("Failed to load resource: the server responded with a status of 4")
            and message.location.get("url") == page.url)


def login(browser, srv: Server, token: str, errors: Errors):  # noqa: ANN001, ANN201 - Playwright objects
    """A new browser context sent to log in by the fleet page, logged in with `token`."""
    from playwright.sync_api import expect

    page = browser.new_context(base_url=srv.url).new_page()
    errors.watch(page)
    page.goto("/ui/fleet")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/ui/fleet$"))
    return page
