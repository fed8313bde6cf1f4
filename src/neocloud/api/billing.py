"""Contracts, prices, usage, invoices and the backlog."""

from __future__ import annotations

import csv
import html
import io
from asyncio import wrap_future
from dataclasses import asdict
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from sqlalchemy import select

from neocloud.api.auth import Principal, admin, caller
from neocloud.api.schemas import MAX_ID, NAME, ContractAmend, ContractEnd, ContractIn, ContractOut, PriceIn
from neocloud.control.billing import Billing, contract_of
from neocloud.model.billing import CONCENTRATION_LIMIT, Credit, Usage, backlog, invoice, month
from neocloud.store.tables import ContractRow, CreditRow, JobRow, PriceRow, UsageRow

router = APIRouter(prefix="/v1", tags=["billing"])
Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]
Number = Annotated[int, Path(ge=1, le=MAX_ID)]
Tenant = Annotated[str, Path(max_length=63, pattern=NAME)]


def _out(row: ContractRow, warning: str | None = None) -> ContractOut:
    return ContractOut(contract=row.contract, version=row.version, tenant=row.tenant, gpu_type=row.gpu_type,
                       gpus=row.gpus, start=row.start_at, end=row.end_at, price_per_gpu_hour=Decimal(row.price),
                       take_or_pay=row.take_or_pay, site=row.site, fabric=row.fabric, valid_from=row.valid_from,
                       valid_to=row.valid_to, note=row.note, warning=warning)


def _book(request: Request) -> list:
    with request.app.state.service.sessions() as s:
        return [contract_of(r) for r in s.scalars(select(ContractRow))]


def _concentration(request: Request, tenant: str) -> str | None:
    now = request.app.state.service.controller.clock()
    book = backlog(_book(request), now, CONCENTRATION_LIMIT)
    if tenant in book["over_limit"]:
        share = next(c["share"] for c in book["customers"] if c["tenant"] == tenant)
        return (f"{tenant} now holds {100 * share:.1f}% of the backlog, above the {100 * CONCENTRATION_LIMIT:.0f}% "
                "concentration limit")
    return None


@router.post("/contracts", status_code=201, response_model=ContractOut,
             responses={403: {"description": "Admin only"}, 404: {"description": "No such tenant"}})
async def create_contract(body: ContractIn, request: Request, _: Admin) -> ContractOut:
    """A reserved contract: its GPUs are the tenant's guaranteed quota for its term."""
    terms = {"tenant": body.tenant, "gpu_type": body.gpu_type, "gpus": body.gpus, "start_at": body.start,
             "end_at": body.end, "price": body.price_per_gpu_hour, "take_or_pay": body.take_or_pay, "site": body.site,
             "fabric": body.fabric, "note": body.note}
    row = await wrap_future(request.app.state.service.controller.create_contract(terms))
    return _out(row, _concentration(request, body.tenant))


@router.get("/contracts", response_model=list[ContractOut])
def list_contracts(request: Request, who: Caller, history: bool = False) -> list[ContractOut]:
    """Contracts in force (a tenant sees its own); with `history`, every version."""
    q = select(ContractRow).order_by(ContractRow.contract, ContractRow.version)
    if not history:
        q = q.where(ContractRow.valid_to.is_(None))
    if not who.admin:
        q = q.where(ContractRow.tenant == who.tenant)
    with request.app.state.service.sessions() as s:
        return [_out(r) for r in s.scalars(q)]


@router.post("/contracts/{number}/amend", response_model=ContractOut, responses={404: {"description": "No such contract"}})
async def amend_contract(number: Number, body: ContractAmend, request: Request, _: Admin) -> ContractOut:
    """New terms from now on; the version before is kept, closed now."""
    changes = {k: v for k, v in (("gpus", body.gpus), ("end_at", body.end), ("price", body.price_per_gpu_hour))
               if v is not None}
    if not changes:
        raise HTTPException(422, "nothing to amend: give gpus, end or price_per_gpu_hour")
    row = await wrap_future(request.app.state.service.controller.amend_contract(number, changes, body.note))
    return _out(row)


@router.post("/contracts/{number}/terminate", response_model=ContractOut,
             responses={404: {"description": "No such contract"}})
async def terminate_contract(number: Number, body: ContractEnd, request: Request, _: Admin) -> ContractOut:
    """End a contract early (now, or at a given time): a new version with the earlier end."""
    at = body.at if body.at is not None else request.app.state.service.controller.clock()
    note = body.note or "terminated early"
    row = await wrap_future(request.app.state.service.controller.amend_contract(number, {"end_at": at}, note))
    return _out(row)


@router.put("/prices", status_code=201, responses={403: {"description": "Admin only"}})
async def set_price(body: PriceIn, request: Request, _: Admin) -> dict[str, Any]:
    """The on-demand or spot price of a GPU type from now on (earlier usage keeps its price)."""
    row = await wrap_future(request.app.state.service.controller.set_price(body.gpu_type, body.usage_class,
                                                                           body.price_per_gpu_hour))
    return {"gpu_type": row.gpu_type, "usage_class": row.usage_class, "price_per_gpu_hour": str(row.price),
            "since": row.since}


@router.get("/prices")
def prices(request: Request, _: Caller) -> list[dict[str, Any]]:
    with request.app.state.service.sessions() as s:
        return [{"gpu_type": p.gpu_type, "usage_class": p.usage_class, "price_per_gpu_hour": str(p.price),
                 "since": p.since} for p in s.scalars(select(PriceRow).order_by(PriceRow.since, PriceRow.id))]


def _usage(request: Request, tenant: str | None, t0: float, t1: float) -> list[Usage]:
    """Recorded attempts overlapping [t0, t1), and the running ones up to now."""
    service = request.app.state.service
    now = service.controller.clock()
    with service.sessions() as s:
        q = select(UsageRow).where(UsageRow.end_at > t0, UsageRow.start_at < t1)
        if tenant is not None:
            q = q.where(UsageRow.tenant == tenant)
        out = [Usage(u.job_id, u.attempt, u.tenant, u.usage_class, u.gpu_type, u.gpus, u.start_at, u.end_at)
               for u in s.scalars(q)]
        running = select(JobRow).where(JobRow.state == "RUNNING", JobRow.started_at < t1)
        if tenant is not None:
            running = running.where(JobRow.tenant == tenant)
        where = service.controller.billing.where
        for r in s.scalars(running):
            out.append(Usage(r.id, r.attempts, r.tenant, r.usage_class or "on-demand", where(r.placement)[0], r.gpus,
                             r.started_at, now))
    return out


def _credits(request: Request, tenant: str | None, t0: float, t1: float) -> list[Credit]:
    with request.app.state.service.sessions() as s:
        q = select(CreditRow).where(CreditRow.at >= t0, CreditRow.at < t1)
        if tenant is not None:
            q = q.where(CreditRow.tenant == tenant)
        return [Credit(c.tenant, c.at, c.gpu_type, Decimal(c.gpu_hours), c.reason) for c in s.scalars(q)]


def _period(month_: str | None, start: float | None, end: float | None) -> tuple[float, float]:
    if month_ is not None:
        return month(month_)
    if start is None or end is None or end <= start:
        raise HTTPException(422, "give month=YYYY-MM, or start and end (seconds since the epoch) with end after start")
    return start, end


@router.get("/usage")
def usage(request: Request, who: Caller, month_: Annotated[str | None, Query(alias="month", max_length=7)] = None,
          start: Annotated[float | None, Query(ge=0, le=2**40)] = None,
          end: Annotated[float | None, Query(ge=0, le=2**40)] = None,
          tenant: Annotated[str | None, Query(max_length=63, pattern=NAME)] = None) -> list[dict[str, Any]]:
    """Usage records (one per attempt, running ones up to now), for a month or a time range."""
    t0, t1 = _period(month_, start, end)
    whose = tenant if who.admin else who.tenant
    return [asdict(u) for u in _usage(request, whose, t0, t1)]


@router.get("/credits")
def credits(request: Request, who: Caller, month_: Annotated[str | None, Query(alias="month", max_length=7)] = None,
            start: Annotated[float | None, Query(ge=0, le=2**40)] = None,
            end: Annotated[float | None, Query(ge=0, le=2**40)] = None) -> list[dict[str, Any]]:
    """SLA credits: guaranteed GPU-hours node failures cost (a tenant sees its own)."""
    t0, t1 = _period(month_, start, end)
    return [asdict(c) for c in _credits(request, None if who.admin else who.tenant, t0, t1)]


@router.get("/invoices/{tenant}", responses={404: {"description": "No such tenant"}})
def get_invoice(tenant: Tenant, request: Request, who: Caller,
                month_: Annotated[str | None, Query(alias="month", max_length=7)] = None,
                start: Annotated[float | None, Query(ge=0, le=2**40)] = None,
                end: Annotated[float | None, Query(ge=0, le=2**40)] = None,
                format: Literal["json", "csv", "html"] = "json") -> Any:  # noqa: A002 - the query's name
    """A tenant's invoice for a month (or a range): commitments, usage by class, total; JSON, CSV or HTML."""
    if not who.admin and who.tenant != tenant:
        raise HTTPException(404, f"no tenant {tenant!r}")
    if tenant not in request.app.state.service.controller.tenants:
        raise HTTPException(404, f"no tenant {tenant!r}")
    t0, t1 = _period(month_, start, end)
    with request.app.state.service.sessions() as s:
        price_list = Billing.prices(s)
    bill = invoice(tenant, t0, t1, _book(request), _usage(request, tenant, t0, t1), price_list,
                   _credits(request, tenant, t0, t1))
    if format == "csv":
        return PlainTextResponse(_csv(bill), media_type="text/csv")
    if format == "html":
        return HTMLResponse(_html(bill))
    return bill


@router.get("/revenue", responses={403: {"description": "Admin only"}})
def get_revenue(request: Request, _: Admin, month_: Annotated[str | None, Query(alias="month", max_length=7)] = None,
                start: Annotated[float | None, Query(ge=0, le=2**40)] = None,
                end: Annotated[float | None, Query(ge=0, le=2**40)] = None) -> dict[str, Any]:
    """Revenue recognised in a period: what each tenant's invoice for it comes to, and the sum."""
    t0, t1 = _period(month_, start, end)
    with request.app.state.service.sessions() as s:
        price_list = Billing.prices(s)
    book, used = _book(request), _usage(request, None, t0, t1)
    tenants = sorted(request.app.state.service.controller.tenants | {u.tenant for u in used})
    credits = _credits(request, None, t0, t1)
    by_tenant = {t: invoice(t, t0, t1, book, used, price_list, credits)["total"] for t in tenants}
    return {"from": t0, "to": t1, "tenants": by_tenant, "total": sum(by_tenant.values(), Decimal(0)),
            "currency": "USD"}


@router.get("/backlog", responses={403: {"description": "Admin only"}})
def get_backlog(request: Request, _: Admin) -> dict[str, Any]:
    """Contracted value not yet delivered, by customer and quarter; concentration (largest share, HHI)."""
    return backlog(_book(request), request.app.state.service.controller.clock())


COLUMNS = ("kind", "contract", "gpu_type", "gpu_hours", "price", "amount")


def _csv(bill: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(COLUMNS)
    for line in bill["lines"]:
        w.writerow(["" if line.get(c) is None else line.get(c) for c in COLUMNS])
    w.writerow(["total", "", "", "", "", bill["total"]])
    return out.getvalue()


def _html(bill: dict[str, Any]) -> str:
    rows = "".join("<tr>" + "".join(f"<td>{html.escape('' if line.get(c) is None else str(line.get(c)))}</td>"
                                    for c in COLUMNS) + "</tr>" for line in bill["lines"])
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in COLUMNS)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Invoice {html.escape(bill['tenant'])}</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;"
            "padding:4px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>"
            f"<h1>Invoice: {html.escape(bill['tenant'])}</h1><p>Period {bill['from']:.0f} to {bill['to']:.0f} (UTC "
            f"seconds)</p><table><tr>{head}</tr>{rows}<tr><th colspan='5'>Total ({bill['currency']})</th>"
            f"<th>{bill['total']}</th></tr></table></body></html>")
