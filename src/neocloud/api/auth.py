"""Bearer tokens: the admin's (from the environment or the data directory) and tenants' (hashed)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import HTTPException, Request

from neocloud.control.controller import digest


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the admin, or one tenant."""

    tenant: str | None  # None for the admin

    @property
    def admin(self) -> bool:
        return self.tenant is None

    @property
    def name(self) -> str:
        return "admin" if self.tenant is None else self.tenant


def identify(request: Request) -> Principal | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return holder(request, token)


def holder(request: Request, token: str) -> Principal | None:
    """Whose token this is, if anyone's."""
    if not token.strip():
        return None
    d = digest(token.strip())
    service = request.app.state.service
    if hmac.compare_digest(d, service.admin_digest):
        return Principal(None)
    tenant = service.controller.tokens.get(d)
    return Principal(tenant) if tenant is not None else None


async def caller(request: Request) -> Principal:
    """Any valid token (FastAPI dependency; async, as it never blocks, so it runs on the loop)."""
    who = identify(request)
    if who is None:
        raise HTTPException(401, "missing or unknown bearer token: send 'Authorization: Bearer TOKEN'",
                            headers={"WWW-Authenticate": "Bearer"})
    return who


async def admin(request: Request) -> Principal:
    """The admin token only (FastAPI dependency)."""
    who = await caller(request)
    if not who.admin:
        raise HTTPException(403, "this needs the admin token")
    return who
