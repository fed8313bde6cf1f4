"""Admin: tenants, their tokens, and the audit log."""

from __future__ import annotations

from asyncio import wrap_future
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from sqlalchemy import func, or_, select

from neocloud.api.auth import Principal, admin, caller
from neocloud.api.schemas import MAX_ID, NAME, AuditOut, TenantIn, TenantOut, TokenIn, TokenInfo, TokenOut
from neocloud.store.tables import AuditRow, JobRow, Tenant, Token

Limit = Annotated[int, Query(ge=1, le=10_000)]
TokenAfter = Annotated[int | None, Query(ge=0, le=MAX_ID, description="Only tokens with a higher id.")]
router = APIRouter(prefix="/v1", tags=["admin"], dependencies=[Depends(admin)],
                   responses={401: {"description": "No or unknown token"}, 403: {"description": "Admin only"}})


@router.post("/tenants", status_code=201, response_model=TenantOut, responses={409: {"description": "Exists"}})
async def create_tenant(body: TenantIn, request: Request) -> TenantOut:
    row = await wrap_future(request.app.state.service.controller.create_tenant(body.name))
    return TenantOut(name=row.name, created_at=row.created_at, tokens=0, jobs_active=0)


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(request: Request, limit: Limit = 1000,
                 after: Annotated[str | None, Query(max_length=63, description="Only tenants named after it.")] = None,
                 ) -> list[TenantOut]:
    """Tenants by name, a page at a time, each with its live tokens and active jobs counted: three
    statements, the counts only for the page's tenants."""
    now = request.app.state.service.controller.clock()
    q = select(Tenant).order_by(Tenant.name).limit(limit)
    if after is not None:
        q = q.where(Tenant.name > after)
    with request.app.state.service.sessions() as s:
        page = list(s.scalars(q))
        names = [t.name for t in page]
        if not names:
            return []
        tokens = dict(s.execute(select(Token.tenant, func.count()).where(Token.tenant.in_(names), *_live(now))
                                .group_by(Token.tenant)).all())
        active = dict(s.execute(select(JobRow.tenant, func.count())
                                .where(JobRow.tenant.in_(names), JobRow.state.in_(("PENDING", "RUNNING")))
                                .group_by(JobRow.tenant)).all())
    return [TenantOut(name=t.name, created_at=t.created_at, tokens=tokens.get(t.name, 0),
                      jobs_active=active.get(t.name, 0)) for t in page]


@router.post("/tenants/{name}/tokens", status_code=201, response_model=TokenOut,
             responses={404: {"description": "No such tenant"}})
async def create_token(name: Annotated[str, Path(pattern=NAME)], request: Request,
                       body: TokenIn | None = None) -> TokenOut:
    """A new token for the tenant, expiring after `expires_in` if given; its secret is shown only now."""
    body = body or TokenIn()
    token, row = await wrap_future(request.app.state.service.controller.create_token(name, body.label,
                                                                                     body.expires_in))
    return TokenOut(id=row.id, tenant=name, label=row.label, expires_at=row.expires_at, token=token)


@router.get("/tenants/{name}/tokens", response_model=list[TokenInfo], responses={404: {"description": "No such tenant"}})
def tenant_tokens(name: Annotated[str, Path(pattern=NAME)], request: Request, limit: Limit = 1000,
                  after: TokenAfter = None) -> list[TokenInfo]:
    """A tenant's tokens, revoked and expired ones too, by id, a page at a time; never their secrets."""
    if name not in request.app.state.service.controller.tenants:
        raise HTTPException(404, f"no tenant {name!r}")
    return token_page(request, name, limit, after)


@router.get("/audit", response_model=list[AuditOut])
def audit(request: Request,
          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
          before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None) -> list[AuditOut]:
    q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if before:
        q = q.where(AuditRow.id < before)
    with request.app.state.service.sessions() as s:
        return [AuditOut(id=r.id, at=r.at, actor=r.actor, method=r.method, path=r.path, client=r.client,
                         status=r.status, detail=r.detail) for r in s.scalars(q)]


tokens_router = APIRouter(prefix="/v1/tokens", tags=["admin"],
                          responses={401: {"description": "No or unknown token"}})
TokenId = Annotated[int, Path(ge=1, le=MAX_ID)]


@tokens_router.get("", response_model=list[TokenInfo])
def own_tokens(request: Request, who: Annotated[Principal, Depends(caller)], limit: Limit = 1000,
               after: TokenAfter = None) -> list[TokenInfo]:
    """The caller's tenant's tokens (the admin's: every tenant's), by id, a page at a time."""
    return token_page(request, who.tenant, limit, after)


@tokens_router.delete("/{token_id}", response_model=TokenInfo, responses={404: {"description": "No such token"}})
async def revoke_token(token_id: TokenId, request: Request, who: Annotated[Principal, Depends(caller)]) -> TokenInfo:
    """Revoke a token: refused from now on. The admin revokes any; a tenant only its own (another's is a 404)."""
    controller = request.app.state.service.controller
    row = await wrap_future(controller.revoke_token(token_id, who.tenant, key=False))
    return token_info(row, controller.clock())


def _live(now: float) -> tuple:
    """Conditions on tokens that still work."""
    return Token.revoked_at.is_(None), or_(Token.expires_at.is_(None), Token.expires_at > now)


def token_page(request: Request, tenant: str | None, limit: int, after: int | None, keys: bool = False) -> list[TokenInfo]:
    """API tokens, or with `keys` service keys."""
    q = select(Token).where(Token.service.is_not(None) if keys else Token.service.is_(None)).order_by(Token.id).limit(limit)
    if tenant is not None:
        q = q.where(Token.tenant == tenant)
    if after is not None:
        q = q.where(Token.id > after)
    now = request.app.state.service.controller.clock()
    with request.app.state.service.sessions() as s:
        return [token_info(t, now) for t in s.scalars(q)]


def token_info(t: Token, now: float) -> TokenInfo:
    state: Literal["active", "expired", "revoked"] = "revoked" if t.revoked_at is not None else \
        "expired" if t.expires_at is not None and t.expires_at <= now else "active"
    return TokenInfo(id=t.id, tenant=t.tenant, label=t.label, created_at=t.created_at, expires_at=t.expires_at,
                     revoked_at=t.revoked_at, state=state, service=t.service)
