"""Admin: tenants, their tokens, and the audit log."""

from __future__ import annotations

from asyncio import wrap_future
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import func, select

from neocloud.api.auth import admin
from neocloud.api.schemas import MAX_ID, NAME, AuditOut, TenantIn, TenantOut, TokenIn, TokenOut
from neocloud.store.tables import AuditRow, JobRow, Tenant, Token

router = APIRouter(prefix="/v1", tags=["admin"], dependencies=[Depends(admin)],
                   responses={401: {"description": "No or unknown token"}, 403: {"description": "Admin only"}})


@router.post("/tenants", status_code=201, response_model=TenantOut, responses={409: {"description": "Exists"}})
async def create_tenant(body: TenantIn, request: Request) -> TenantOut:
    row = await wrap_future(request.app.state.service.controller.create_tenant(body.name))
    return TenantOut(name=row.name, created_at=row.created_at, tokens=0, jobs_active=0)


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(request: Request) -> list[TenantOut]:
    with request.app.state.service.sessions() as s:
        tokens = dict(s.execute(select(Token.tenant, func.count()).group_by(Token.tenant)).all())
        active = dict(s.execute(select(JobRow.tenant, func.count())
                                .where(JobRow.state.in_(("PENDING", "RUNNING"))).group_by(JobRow.tenant)).all())
        return [TenantOut(name=t.name, created_at=t.created_at, tokens=tokens.get(t.name, 0),
                          jobs_active=active.get(t.name, 0))
                for t in s.scalars(select(Tenant).order_by(Tenant.name))]


@router.post("/tenants/{name}/tokens", status_code=201, response_model=TokenOut,
             responses={404: {"description": "No such tenant"}})
async def create_token(name: Annotated[str, Path(pattern=NAME)], request: Request,
                       body: TokenIn | None = None) -> TokenOut:
    label = body.label if body else ""
    token = await wrap_future(request.app.state.service.controller.create_token(name, label))
    return TokenOut(tenant=name, label=label, token=token)


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
