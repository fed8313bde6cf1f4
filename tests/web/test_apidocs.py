"""/docs (Swagger UI) loads everything from the server itself: it works offline, and its page names
no other host, in its HTML or in its Content-Security-Policy."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from tests.api.conftest import Server
from tests.web.conftest import Errors

ASSETS = {"/docs/assets/swagger-ui-bundle.js": "text/javascript", "/docs/assets/swagger-ui.css": "text/css",
          "/ui/static/favicon.svg": "image/svg+xml"}


def test_the_page_and_its_scripts_come_from_the_server(shared_server: Server) -> None:
    r = httpx.get(shared_server.url + "/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text
    assert '"validatorUrl": null' in r.text  # else Swagger UI shows a badge from swagger.io's validator
    linked = set(re.findall(r'(?:src|href)="([^"]*)"', r.text))
    assert linked == set(ASSETS), linked
    csp = r.headers["content-security-policy"]
    assert "http" not in csp and "script-src 'self' 'nonce-" in csp, csp
    nonce = re.search(r"'nonce-([\w-]+)'", csp).group(1)
    assert all(f'nonce="{nonce}"' in attrs or "src=" in attrs for attrs in re.findall(r"<script([^>]*)>", r.text))
    for path, media in ASSETS.items():
        asset = httpx.get(shared_server.url + path)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media), path
        assert len(asset.content) > (100_000 if path.startswith("/docs/assets") else 100)


def test_only_the_pages_own_assets_are_served(shared_server: Server) -> None:
    for name in ("index.html", "favicon.png", "swagger-ui.js", "LICENSE"):
        r = httpx.get(f"{shared_server.url}/docs/assets/{name}")
        assert r.status_code == 404, name
        assert "swagger-ui-bundle.js" in r.json()["detail"]  # says what there is
    assert httpx.get(f"{shared_server.url}/docs/assets/..%2Fcore.py").status_code == 404
    assert httpx.get(f"{shared_server.url}/redoc", follow_redirects=True).url.path == "/docs"


def test_the_page_renders_the_api_with_no_network_but_the_server(browser, shared_server: Server) -> None:  # noqa: ANN001
    errors, elsewhere = Errors(), []
    context = browser.new_context(base_url=shared_server.url)

    def offline(route) -> None:  # noqa: ANN001 - a Playwright route
        if route.request.url.startswith(shared_server.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", offline)
    tab = context.new_page()
    errors.watch(tab)
    tab.goto("/docs")
    expect(tab.locator(".swagger-ui .info .title")).to_contain_text("neocloud", timeout=20_000)
    expect(tab.get_by_text("/v1/jobs").first).to_be_attached()
    context.close()
    assert elsewhere == [] and errors == []
