"""The dashboard in a real browser against a real server: admin and tenants log in, see the fleet,
submit a job, watch it wait and run, read its logs, cancel it; a tenant is denied another's job;
no page logs an error."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.api.conftest import ADMIN, Server
from tests.web.conftest import Errors
from tests.web.conftest import login as _login

SLOW_JOB = """name: {name}
command: |
  for i in $(seq 1 600); do echo "step $i"; sleep 0.2; done
gpus: {gpus}
"""


def test_admin_sees_every_page_without_errors(browser, shared_server: Server) -> None:  # noqa: ANN001
    server = shared_server
    errors = Errors()
    page = _login(browser, server, ADMIN, errors)
    expect(page.locator("h1")).to_have_text("Fleet: 2 nodes")
    cells = page.locator(".cells a")
    expect(cells).to_have_count(2)
    cells.first.click()
    expect(page.locator("h1")).to_have_text("Node leaf-a-n0")
    expect(page.get_by_text("16 GPUs").or_(page.get_by_text("8 / 8 free"))).to_be_visible()
    for href, heading in [("/ui/jobs", "Jobs"), ("/ui/performance", "Performance"), ("/ui/business", "Business"),
                          ("/ui/capacity", "Capacity: the buildout plan"),
                          ("/ui/twin", "Twin: replay a trace through the same scheduler")]:
        page.goto(href)
        expect(page.locator("h1")).to_have_text(heading)
    page.goto("/ui/capacity")
    page.fill("input[name=runs]", "500")
    page.get_by_role("button", name="Plan").click()
    expect(page.locator("#fan")).to_be_visible()
    expect(page.get_by_text("Reported 2025-12-31")).to_be_visible()
    page.goto("/ui/twin")
    page.select_option("select[name=trace]", "mixed-2k.csv")
    page.select_option("select[name=policy]", "fifo")
    page.get_by_role("button", name="Simulate").click()
    page.select_option("select[name=policy]", "neocloud")
    page.get_by_role("button", name="Simulate").click()
    expect(page.locator("#reports th")).to_have_count(3)  # two runs side by side
    expect(page.locator("#reports")).to_contain_text("fifo / neocloud")
    page.goto("/ui/fleet")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/ui/login"))
    assert errors == []


def test_a_tenant_submits_watches_and_cancels_and_cannot_see_another(browser, shared_server: Server) -> None:  # noqa: ANN001
    server = shared_server
    admin = server.client()
    admin.create_tenant("acme")
    admin.create_tenant("rival")
    acme_token, rival_token = admin.create_token("acme"), admin.create_token("rival")
    errors = Errors()
    page = _login(browser, server, acme_token, errors)
    expect(page.locator(".who")).to_have_text("tenant acme")

    page.goto("/ui/jobs")
    page.fill("textarea[name=spec]", SLOW_JOB.format(name="blocker", gpus=16))  # the whole fleet
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#state")).to_have_text("RUNNING", timeout=20_000)
    blocker = page.url.rsplit("/", 1)[1]

    page.goto("/ui/jobs")
    page.fill("textarea[name=spec]", SLOW_JOB.format(name="mine", gpus=1))
    page.get_by_role("button", name="Submit").click()
    mine = page.url.rsplit("/", 1)[1]
    expect(page.locator("#state")).to_have_text("PENDING")
    page.goto("/ui/jobs")
    row = page.locator("#queue tr", has_text="mine")
    expect(row).to_contain_text("capacity: needs 1 GPUs, 0 free")  # why it waits
    expect(row).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))  # and when it should start

    page.goto(f"/ui/jobs/{blocker}")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#state")).to_have_text("CANCELLED", timeout=30_000)
    page.goto("/ui/jobs")
    expect(page.locator("#running")).to_contain_text("mine", timeout=30_000)  # the live table moves it
    expect(page.locator("#queue")).to_contain_text("nothing waits")

    page.goto(f"/ui/jobs/{mine}")
    expect(page.locator("#state")).to_have_text("RUNNING")
    expect(page.locator("#log")).to_contain_text("step 3", timeout=20_000)  # live logs
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#state")).to_have_text("CANCELLED", timeout=30_000)

    rival = _login(browser, server, rival_token, errors)
    rival.goto(f"/ui/jobs/{mine}")
    expect(rival.locator(".error")).to_have_text(f"no job {mine}")
    rival.goto("/ui/jobs")
    expect(rival.locator("#recent")).to_contain_text("no jobs yet")
    rival.goto("/ui/capacity")
    expect(rival.get_by_text("Buildout plans are the operator's")).to_be_visible()
    assert errors == []


def test_a_bad_token_and_a_bad_spec_are_told_what_to_fix(browser, shared_server: Server) -> None:  # noqa: ANN001
    server = shared_server
    errors = Errors()
    page = browser.new_context(base_url=server.url).new_page()
    errors.watch(page)
    page.goto("/ui/login")
    page.fill("#token", "nope")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("That token is not known here.")
    page.fill("#token", ADMIN)
    page.click("button[type=submit]")
    page.goto("/ui/jobs")
    page.fill("textarea[name=spec]", "name: x\ncommand: echo\ngpus: 9999\n")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator(".error")).to_contain_text("ask for fewer GPUs")
    page.fill("textarea[name=spec]", "name: x\ncommand: echo\ngpus: -1\n")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator(".error")).to_have_text("gpus: Input should be greater than or equal to 0")
    expect(page.locator("textarea[name=spec]")).to_have_value("name: x\ncommand: echo\ngpus: -1\n")  # kept to fix
    assert errors == []
