"""Contracts, prices, usage, invoices and the backlog."""

from __future__ import annotations

import csv
import html
import io
from asyncio import wrap_future
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from neocloud.api.auth import Principal, admin, caller
from neocloud.api.schemas import (
    MAX_ID,
    NAME,
    ContractAmend,
    ContractEnd,
    ContractIn,
    ContractOut,
    PriceIn,
    TokenPriceIn,
)
from neocloud.control.billing import Billing, contract_of
from neocloud.errors import NeocloudError
from neocloud.model.billing import CONCENTRATION_LIMIT, Contract, Credit, Tokens, Usage, backlog, invoice, month
from neocloud.store.tables import ContractRow, CreditRow, JobRow, PriceRow, ServiceUsageRow, UsageRow

router = APIRouter(prefix="/v1", tags=["billing"])
Caller = Annotated[Principal, Depends(caller)]
Admin = Annotated[Principal, Depends(admin)]
Number = Annotated[int, Path(ge=1, le=MAX_ID)]
Tenant = Annotated[str, Path(max_length=63, pattern=NAME)]
Limit = Annotated[int, Query(ge=1, le=10_000)]


def contract_out(row: ContractRow, warning: str | None = None) -> ContractOut:
    """A contract version as the API shows it."""
    return ContractOut(contract=row.contract, version=row.version, tenant=row.tenant, gpu_type=row.gpu_type,
                       gpus=row.gpus, start=row.start_at, end=row.end_at, price_per_gpu_hour=Decimal(row.price),
                       take_or_pay=row.take_or_pay, site=row.site, fabric=row.fabric, valid_from=row.valid_from,
                       valid_to=row.valid_to, note=row.note, warning=warning)


def _book(request: Request) -> list[Contract]:
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
    return contract_out(row, await run_in_threadpool(_concentration, request, body.tenant))  # it reads the store


@router.get("/contracts", response_model=list[ContractOut])
def list_contracts(request: Request, who: Caller, history: bool = False, limit: Limit = 1000,
                   after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="Only contracts with a higher "
                                                                                   "number.")] = None,
                   ) -> list[ContractOut]:
    """Contracts in force (a tenant sees its own); with `history`, every version. A page holds
    `limit` contracts (all versions of each), by number."""
    where: list[ColumnElement[bool]] = [] if history else [ContractRow.valid_to.is_(None)]
    if not who.admin:
        where.append(ContractRow.tenant == who.tenant)
    numbers = select(ContractRow.contract).where(*where).group_by(ContractRow.contract) \
        .order_by(ContractRow.contract).limit(limit)
    if after is not None:
        numbers = numbers.where(ContractRow.contract > after)
    q = select(ContractRow).where(ContractRow.contract.in_(numbers), *where) \
        .order_by(ContractRow.contract, ContractRow.version)
    with request.app.state.service.sessions() as s:
        return [contract_out(r) for r in s.scalars(q)]


@router.post("/contracts/{number}/amend", response_model=ContractOut, responses={404: {"description": "No such contract"}})
async def amend_contract(number: Number, body: ContractAmend, request: Request, _: Admin) -> ContractOut:
    """New terms from now on; the version before is kept, closed now."""
    changes = {k: v for k, v in (("gpus", body.gpus), ("end_at", body.end), ("price", body.price_per_gpu_hour))
               if v is not None}
    if not changes:
        raise HTTPException(422, "nothing to amend: give gpus, end or price_per_gpu_hour")
    row = await wrap_future(request.app.state.service.controller.amend_contract(number, changes, body.note))
    return contract_out(row)


@router.post("/contracts/{number}/terminate", response_model=ContractOut,
             responses={404: {"description": "No such contract"}})
async def terminate_contract(number: Number, body: ContractEnd, request: Request, _: Admin) -> ContractOut:
    """End a contract early (now, or at a given time): a new version with the earlier end."""
    at = body.at if body.at is not None else request.app.state.service.controller.clock()
    note = body.note or "terminated early"
    row = await wrap_future(request.app.state.service.controller.amend_contract(number, {"end_at": at}, note))
    return contract_out(row)


@router.put("/prices", status_code=201, responses={403: {"description": "Admin only"}})
async def set_price(body: PriceIn, request: Request, _: Admin) -> dict[str, Any]:
    """The on-demand or spot price of a GPU type from now on (earlier usage keeps its price)."""
    row = await wrap_future(request.app.state.service.controller.set_price(body.gpu_type, body.usage_class,
                                                                           body.price_per_gpu_hour))
    return {"gpu_type": row.gpu_type, "usage_class": row.usage_class, "price_per_gpu_hour": str(row.price),
            "since": row.since}


@router.put("/prices/tokens", status_code=201, responses={403: {"description": "Admin only"}})
async def set_token_price(body: TokenPriceIn, request: Request, _: Admin) -> dict[str, Any]:
    """The price per million prompt or completion tokens of a model ('*': any model with none of its
    own), from now on, for what services' gateways answer."""
    row = await wrap_future(request.app.state.service.controller.set_price(body.model, f"{body.kind}-tokens",
                                                                           body.price_per_million_tokens))
    return {"model": row.gpu_type, "kind": body.kind, "price_per_million_tokens": str(row.price), "since": row.since}


@router.get("/prices")
def prices(request: Request, _: Caller, limit: Limit = 1000,
           offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0) -> list[dict[str, Any]]:
    """Every price set, oldest first, a page at a time."""
    q = select(PriceRow).order_by(PriceRow.since, PriceRow.id).offset(offset).limit(limit)
    with request.app.state.service.sessions() as s:
        return [{"gpu_type": p.gpu_type, "usage_class": p.usage_class, "price_per_gpu_hour": str(p.price),
                 "since": p.since} for p in s.scalars(q)]


USAGE = (UsageRow.job_id, UsageRow.attempt, UsageRow.tenant, UsageRow.usage_class, UsageRow.gpu_type, UsageRow.gpus,
         UsageRow.start_at, UsageRow.end_at)  # a Usage's fields, in its order


def _usage(s: Session, request: Request, tenant: str | None, t0: float, t1: float,
           after: tuple[int, int] | None = None, limit: int | None = None) -> list[Usage]:
    """Recorded attempts overlapping [t0, t1), and the running ones up to now: two statements, the
    columns only. With `limit`, a page: the first attempts after `after` by (job, attempt)."""
    controller = request.app.state.service.controller
    now = controller.clock()
    recorded = select(*USAGE).where(UsageRow.end_at > t0, UsageRow.start_at < t1)
    running = select(JobRow.id, JobRow.attempts, JobRow.tenant, JobRow.usage_class, JobRow.placement, JobRow.gpus,
                     JobRow.started_at).where(JobRow.state == "RUNNING", JobRow.started_at < t1)
    if tenant is not None:
        recorded, running = recorded.where(UsageRow.tenant == tenant), running.where(JobRow.tenant == tenant)
    if after is not None:
        job, attempt = after
        recorded = recorded.where(or_(UsageRow.job_id > job, and_(UsageRow.job_id == job, UsageRow.attempt > attempt)))
        running = running.where(or_(JobRow.id > job, and_(JobRow.id == job, JobRow.attempts > attempt)))
    if limit is not None:
        recorded = recorded.order_by(UsageRow.job_id, UsageRow.attempt).limit(limit)
        running = running.order_by(JobRow.id).limit(limit)
    out = [Usage(*u) for u in s.execute(recorded)]
    where = controller.billing.where
    out += [Usage(job_id, attempts, who, cls or "on-demand", where(placement)[0], gpus, started, now)
            for job_id, attempts, who, cls, placement, gpus, started in s.execute(running)]
    if limit is not None:
        out = sorted(out, key=lambda u: (u.job_id, u.attempt))[:limit]
    return out


def _credit_rows(s: Session, tenant: str | None, t0: float, t1: float, after: int | None = None,
                 limit: int | None = None) -> list[tuple[int, Credit]]:
    q = select(CreditRow.id, CreditRow.tenant, CreditRow.at, CreditRow.gpu_type, CreditRow.gpu_hours,
               CreditRow.reason).where(CreditRow.at >= t0, CreditRow.at < t1).order_by(CreditRow.id)
    if tenant is not None:
        q = q.where(CreditRow.tenant == tenant)
    if after is not None:
        q = q.where(CreditRow.id > after)
    if limit is not None:
        q = q.limit(limit)
    return [(i, Credit(who, at, gpu, Decimal(hours), why)) for i, who, at, gpu, hours, why in s.execute(q)]


@dataclass(slots=True)
class Books:
    """What a period's invoices are made of, read with a fixed number of statements however many
    tenants, attempts and credits there are, and kept by tenant so that each invoice reads only its
    own."""

    contracts: list[ContractRow]  # every version
    prices: dict[tuple[str, str], list[tuple[float, Decimal]]]
    usage: dict[str, list[Usage]] = field(default_factory=lambda: defaultdict(list))
    credits: dict[str, list[Credit]] = field(default_factory=lambda: defaultdict(list))
    book: dict[str, list[Contract]] = field(default_factory=lambda: defaultdict(list))
    tokens: dict[str, list[Tokens]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, request: Request, tenant: str | None, t0: float, t1: float) -> Books:
        """The books of one tenant, or of all (None): five statements in one session."""
        q = select(ContractRow).order_by(ContractRow.contract, ContractRow.version)
        with request.app.state.service.sessions() as s:
            books = cls(list(s.scalars(q if tenant is None else q.where(ContractRow.tenant == tenant))),
                        Billing.prices(s))
            for u in _usage(s, request, tenant, t0, t1):
                books.usage[u.tenant].append(u)
            for _, c in _credit_rows(s, tenant, t0, t1):
                books.credits[c.tenant].append(c)
            served = select(ServiceUsageRow).where(ServiceUsageRow.hour >= t0, ServiceUsageRow.hour < t1)
            for u in s.scalars(served if tenant is None else served.where(ServiceUsageRow.tenant == tenant)):
                books.tokens[u.tenant].append(Tokens(u.tenant, u.model, u.hour, u.prompt_tokens, u.completion_tokens))
        for row in books.contracts:
            books.book[row.tenant].append(contract_of(row))
        return books

    def all_contracts(self) -> list[Contract]:
        """Every version of every contract read, as the backlog takes them."""
        return [c for cs in self.book.values() for c in cs]

    def invoice(self, tenant: str, t0: float, t1: float) -> dict[str, Any]:
        """The tenant's invoice for [t0, t1), from its own contracts, usage and credits only."""
        return invoice(tenant, t0, t1, self.book.get(tenant, []), self.usage.get(tenant, []), self.prices,
                       self.credits.get(tenant, []), self.tokens.get(tenant, []))

    def invoices(self, tenants: list[str], t0: float, t1: float) -> list[dict[str, Any]]:
        """Each tenant's invoice, or in its place what stops it (usage with no price set, say)."""
        out = []
        for tenant in tenants:
            try:
                out.append(self.invoice(tenant, t0, t1))
            except NeocloudError as e:
                out.append({"tenant": tenant, "error": str(e)})
        return out


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
          tenant: Annotated[str | None, Query(max_length=63, pattern=NAME)] = None, limit: Limit = 1000,
          after_job: Annotated[int, Query(ge=0, le=MAX_ID, description="Only attempts after this job's ...")] = 0,
          after_attempt: Annotated[int, Query(ge=0, le=MAX_ID, description="... attempt of this number.")] = 0,
          ) -> list[dict[str, Any]]:
    """Usage records (one per attempt, running ones up to now), for a month or a time range, by
    job and attempt, a page at a time: the next page is the one after the last job and attempt."""
    t0, t1 = _period(month_, start, end)
    whose = tenant if who.admin else who.tenant
    after = (after_job, after_attempt) if after_job or after_attempt else None
    with request.app.state.service.sessions() as s:
        return [asdict(u) for u in _usage(s, request, whose, t0, t1, after, limit)]


@router.get("/credits")
def credits(request: Request, who: Caller, month_: Annotated[str | None, Query(alias="month", max_length=7)] = None,
            start: Annotated[float | None, Query(ge=0, le=2**40)] = None,
            end: Annotated[float | None, Query(ge=0, le=2**40)] = None, limit: Limit = 1000,
            after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="Only credits with a higher id.")] = None,
            ) -> list[dict[str, Any]]:
    """SLA credits: guaranteed GPU-hours node failures cost (a tenant sees its own), a page at a time."""
    t0, t1 = _period(month_, start, end)
    with request.app.state.service.sessions() as s:
        rows = _credit_rows(s, None if who.admin else who.tenant, t0, t1, after, limit)
    return [{"id": i, **asdict(c)} for i, c in rows]


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
    bill = Books.read(request, tenant, t0, t1).invoice(tenant, t0, t1)
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
    books = Books.read(request, None, t0, t1)
    tenants = sorted(request.app.state.service.controller.tenants | set(books.usage))
    by_tenant = {t: books.invoice(t, t0, t1)["total"] for t in tenants}
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
