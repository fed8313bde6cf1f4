"""What stands between the network and the routes: a cap on request bodies, security headers on
every answer, validation errors that quote only a short excerpt of what was sent."""

from __future__ import annotations

import math
import secrets
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 2 * 1024 * 1024  # the dashboard's capacity form takes up to 1 MB of pipeline YAML
EXCERPT = 200  # characters of a bad input a 422 quotes
POLICY = ("default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data:; font-src 'self'; worker-src 'self'; object-src 'none'; "
          "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class BodyLimit:
    """Refuse a request body over `max_bytes` with a 413 before it is read: at once when its
    Content-Length says so, else as soon as a chunked body has sent that much. It runs before
    authentication, so an anonymous client cannot make the server buffer a large body either.
    `larger` gives routes that take more (a job's code) their own limit, by path (or by prefix, for
    a path that ends in "/")."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = max([self.max_bytes, *(n for p, n in self.larger.items() if path == p or
                                       (p.endswith("/") and path.startswith(p)))])
        length = _content_length(scope)
        if length is not None and length > limit:
            return await self._refuse(send, limit)
        seen, refused, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    if not started:
                        await self._refuse(send, limit)
                    return {"type": "http.disconnect"}  # the route stops reading; its answer is dropped
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, send: Send, limit: int) -> None:
        size = f"{limit / 1048576:g} MiB" if limit % 1024 == 0 else f"{limit} bytes"
        response = JSONResponse({"detail": f"request body over the limit of {size} ({limit} bytes); the server's "
                                           "operator can raise it with `neocloud up --max-body-bytes N`"},
                                status_code=413, headers={"Connection": "close"})
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class SecurityHeaders:
    """Security headers on every answer: a Content-Security-Policy that lets pages run only this
    server's scripts (and inline ones carrying the response's nonce, `request.state.csp_nonce`),
    framed by nobody; no MIME sniffing; no referrer sent elsewhere."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        policy = POLICY.format(nonce=nonce)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Content-Security-Policy", policy)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
            await send(message)

        await self.app(scope, receive, with_headers)


async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
    """A 422 naming each bad field, quoting at most a short excerpt of what was sent (FastAPI's own
    would echo all of it: a 10 MB command would come back whole)."""
    detail = []
    for error in e.errors():
        loc = tuple(error.get("loc", ()))
        if request.url.path == "/v1/jobs" and loc[:1] == ("body",) and loc[1:2] in (("job",), ("service",)):
            loc = loc[:1] + loc[2:]  # which kind of spec it was read as: the spec's own `kind` says so
        item: dict[str, Any] = {"type": error.get("type", ""), "loc": [_safe(p) for p in loc],
                                "msg": _safe(str(error.get("msg", "")), 1000)}
        if "input" in error and (quoted := _excerpt(error["input"])) is not None:
            item["input"] = quoted
        ctx = {k: _safe(v) for k, v in (error.get("ctx") or {}).items() if isinstance(v, int | float | str | bool)}
        if ctx:
            item["ctx"] = ctx
        detail.append(item)
    return JSONResponse({"detail": detail}, status_code=422)


def _excerpt(value: Any) -> Any:
    """The input as the 422 quotes it: short strings and scalars as they are, a long string cut to
    its first EXCERPT characters, a container only if it is small."""
    if isinstance(value, str):
        return _safe(value)
    if value is None or isinstance(value, bool | int | float):
        return _safe(value)
    if isinstance(value, dict | list) and len(repr(value)) <= EXCERPT:
        return _safe(value)
    return None


def _safe(value: Any, limit: int = EXCERPT) -> Any:
    """Something JSON can carry back: strings cut to `limit` characters and their lone surrogates
    replaced, numbers that are not finite as text, integers past 64 bits by their size."""
    if isinstance(value, str):
        cut = value if len(value) <= limit else value[:limit] + f"... ({len(value)} characters)"
        return cut.encode("utf-8", "replace").decode("utf-8") if not cut.isascii() else cut
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, dict):
        return {_safe(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value
