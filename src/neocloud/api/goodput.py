"""Goodput: per job and per tenant, productive GPU-time against GPU-time allocated, losses by cause."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import Float, Select, and_, case, func, null, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from neocloud.api.jobs import Caller, JobId, own_job
from neocloud.api.schemas import NAME, JobGoodput, TenantGoodput
from neocloud.control.jobs import goodput_of
from neocloud.model.goodput import LOSSES
from neocloud.store.tables import JobRow

router = APIRouter(prefix="/v1", tags=["goodput"])


@router.get("/jobs/{job_id}/goodput", response_model=JobGoodput, responses={404: {"description": "No such job"}})
def job_goodput(job_id: JobId, request: Request, who: Caller) -> JobGoodput:
    """A job's allocated and productive GPU-time, what it lost to each cause, and its ETTR."""
    row = own_job(request, who, job_id)
    g = goodput_of(row, request.app.state.service.controller.clock())
    return JobGoodput(job_id=row.id, tenant=row.tenant, interruptions=row.interruptions, **g.to_dict())


@router.get("/goodput", response_model=list[TenantGoodput])
def tenant_goodput(request: Request, who: Caller,
                   tenant: Annotated[str | None, Query(max_length=63, pattern=NAME)] = None) -> list[TenantGoodput]:
    """Per tenant (a tenant sees its own): jobs that have run, their GPU-time, losses and goodput.

    Summed by the database, one row per tenant: `goodput()`'s arithmetic in SQL, so the answer
    costs one statement however many jobs have run."""
    whose = who.tenant if not who.admin else tenant
    with request.app.state.service.sessions() as s:
        rows = s.execute(totals(request.app.state.service.controller.clock(), whose)).all()
    out = []
    for name, jobs, interruptions, allocated, productive, *lost in rows:
        allocated, productive = round(allocated or 0.0, 3), round(productive or 0.0, 3)
        out.append(TenantGoodput(tenant=name, jobs=jobs, interruptions=interruptions or 0, allocated_gpu_s=allocated,
                                 productive_gpu_s=productive,
                                 lost_gpu_s={k: round(v or 0.0, 3) for k, v in zip(LOSSES, lost, strict=True)},
                                 goodput=round(productive / allocated, 4) if allocated else None))
    return out


class Floor(FunctionElement):
    """FLOOR of a non-negative number, on SQLite built without its math functions too."""

    type = Float()
    inherit_cache = True


@compiles(Floor)
def _floor(element: Floor, compiler: Any, **kw: Any) -> str:
    return f"FLOOR({compiler.process(element.clauses, **kw)})"


@compiles(Floor, "sqlite")
def _floor_sqlite(element: Floor, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"  # truncation: the floor at 0 and above


def _number(value: Any) -> Any:
    """A number from a JSON field, NULL where it is missing, null or a word ("auto")."""
    return case((value.as_string() == "auto", null()), else_=value.as_float())


def totals(now: float, tenant: str | None) -> Select:
    """Per tenant: jobs that have run, interruptions, and the sums of `goodput()`'s allocated,
    productive and lost GPU-seconds (in LOSSES' order), for every job with an attempt."""
    j = JobRow
    per_job = select(
        j.tenant, j.gpus, j.interruptions,
        (j.run_s + case((and_(j.state == "RUNNING", j.started_at.is_not(None)), now - j.started_at), else_=0.0))
        .label("run"),
        func.coalesce(j.ledger["detection_s"].as_float(), 0.0).label("detection"),
        func.coalesce(j.ledger["recomputation_s"].as_float(), 0.0).label("recomputation"),
        (func.coalesce(_number(j.spec["restart_cost"]), 0.0) * case((j.attempts > 1, j.attempts - 1), else_=0))
        .label("restarts"),
        _number(j.spec["checkpoint_interval"]).label("interval"), _number(j.spec["checkpoint_cost"]).label("cost"),
    ).where(j.attempts > 0)
    if tenant is not None:
        per_job = per_job.where(j.tenant == tenant)
    # OFFSET 0 keeps the database from merging the two queries, which would read each job's JSON
    # fields again wherever the arithmetic below uses them.
    job = per_job.offset(0).subquery()
    run = job.c.run
    restart = case((job.c.restarts < run, job.c.restarts), else_=run)
    writes = case((and_(job.c.interval != 0, job.c.cost != 0),  # neither missing (NULL) nor 0
                   Floor(run / (job.c.interval + job.c.cost)) * job.c.cost), else_=0.0)
    lost = job.c.detection + job.c.recomputation + restart + writes
    productive = case((lost < run, run - lost), else_=0.0)
    lost_by_cause = {"detection": job.c.detection, "restart": restart, "recomputation": job.c.recomputation,
                     "checkpoint writes": writes}
    return (select(job.c.tenant, func.count(), func.sum(job.c.interruptions), func.sum(job.c.gpus * run),
                   func.sum(job.c.gpus * productive), *(func.sum(job.c.gpus * lost_by_cause[k]) for k in LOSSES))
            .group_by(job.c.tenant).order_by(job.c.tenant))
