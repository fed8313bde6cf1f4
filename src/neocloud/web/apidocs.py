"""The API's documentation page, Swagger UI at /docs, with its script and stylesheet served by
this server from an installed package (fastapi-offline's copy of swagger-ui-dist): it works where
the server has no internet, and its Content-Security-Policy names no other host. ReDoc is not
served: its sidebar loads a logo from its vendor's site whatever it is told; /redoc leads to /docs."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

ASSETS_URL = "/docs/assets"
ASSETS: dict[str, str] = {  # what /docs loads, by name, and its media type
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
FAVICON = "/ui/static/favicon.svg"  # the dashboard's own
CACHE = "public, max-age=86400"

router = APIRouter(include_in_schema=False)


def assets() -> Traversable:
    """The folder of swagger-ui-dist's files inside the installed fastapi-offline."""
    return files("fastapi_offline") / "static"


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI; its one inline script carries the response's CSP nonce."""
    page = get_swagger_ui_html(openapi_url=request.app.openapi_url, title=f"{request.app.title} - API",
                               swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                               swagger_css_url=f"{ASSETS_URL}/swagger-ui.css", swagger_favicon_url=FAVICON,
                               swagger_ui_parameters={"validatorUrl": None})  # no badge from swagger.io
    nonce = request.state.csp_nonce
    html = bytes(page.body).decode().replace("<script>", f'<script nonce="{nonce}">')
    return HTMLResponse(html)  # under the server's own policy (guards.SecurityHeaders): no other host


@router.get("/redoc")
def redoc() -> RedirectResponse:
    """The API's documentation is Swagger UI's."""
    return RedirectResponse("/docs", status_code=307)


@router.get(ASSETS_URL + "/{name}")
def asset(name: str) -> FileResponse:
    """Swagger UI's script or stylesheet, by name; anything else is not found."""
    if name not in ASSETS:
        raise HTTPException(404, f"no documentation asset {name!r}; there are {', '.join(sorted(ASSETS))}")
    path = Path(str(assets() / name))  # an installed package is a folder of real files
    return FileResponse(path, media_type=ASSETS[name], headers={"Cache-Control": CACHE})
