"""Service keys: bearer tokens a tenant makes for those who call its services, and revokes. The
gateway takes one for its service ('*': any of the tenant's); the rest of the API never does, so
a key handed to an application cannot submit, read or cancel anything."""

from __future__ import annotations

from asyncio import wrap_future
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request

from neocloud.api.admin import Limit, TokenAfter, token_info, token_page
from neocloud.api.jobs import Caller
from neocloud.api.schemas import MAX_ID, NAME, ServiceKeyIn, TokenInfo, TokenOut
from neocloud.control.controller import DEFAULT_TENANT

router = APIRouter(prefix="/v1/service-keys", tags=["services"],
                   responses={401: {"description": "No or unknown token"}})
KeyId = Annotated[int, Path(ge=1, le=MAX_ID)]
TenantQuery = Annotated[str | None, Query(max_length=63, pattern=NAME, description="Admin only: whose keys.")]


def _whose(request: Request, who: Caller, tenant: str | None) -> str | None:
    if not who.admin and tenant not in (None, who.tenant):
        raise HTTPException(404, f"no tenant {tenant!r}")  # another tenant is as missing as one that is not
    if tenant is not None and tenant not in request.app.state.service.controller.tenants:
        raise HTTPException(404, f"no tenant {tenant!r}")
    return who.tenant or tenant


@router.post("", status_code=201, response_model=TokenOut, responses={409: {"description": "Too many live keys"}})
async def create_key(request: Request, who: Caller, body: ServiceKeyIn | None = None,
                     tenant: TenantQuery = None) -> TokenOut:
    """A new key for one of the caller's services ('*': any), expiring after `expires_in` if given;
    its secret is shown only now."""
    body = body or ServiceKeyIn()
    owner = _whose(request, who, tenant) or DEFAULT_TENANT
    key, row = await wrap_future(request.app.state.service.controller.create_token(
        owner, body.label, body.expires_in, service=body.service))
    return TokenOut(id=row.id, tenant=owner, label=row.label, expires_at=row.expires_at, token=key,
                    service=row.service)


@router.get("", response_model=list[TokenInfo])
def list_keys(request: Request, who: Caller, tenant: TenantQuery = None, limit: Limit = 1000,
              after: TokenAfter = None) -> list[TokenInfo]:
    """The caller's service keys (the admin's: every tenant's, or `tenant`'s), revoked and expired
    ones too, by id, a page at a time; never their secrets."""
    return token_page(request, _whose(request, who, tenant), limit, after, keys=True)


@router.delete("/{key_id}", response_model=TokenInfo, responses={404: {"description": "No such key"}})
async def revoke_key(key_id: KeyId, request: Request, who: Caller) -> TokenInfo:
    """Revoke a key: the gateway refuses it from now on. A tenant revokes only its own."""
    controller = request.app.state.service.controller
    return token_info(await wrap_future(controller.revoke_token(key_id, who.tenant, key=True)), controller.clock())
