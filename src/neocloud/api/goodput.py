"""Goodput: per job and per tenant, productive GPU-time against GPU-time allocated, losses by cause."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from neocloud.api.jobs import Caller, JobId, _own_job
from neocloud.api.schemas import NAME, JobGoodput, TenantGoodput
from neocloud.model.goodput import LOSSES, Goodput, fixed_interval, goodput
from neocloud.store.tables import JobRow

router = APIRouter(prefix="/v1", tags=["goodput"])


def of(row: JobRow, now: float) -> Goodput:
    running = now - row.started_at if row.state == "RUNNING" and row.started_at is not None else 0.0
    spec = row.spec
    return goodput(row.gpus, row.run_s + running, row.attempts, row.ledger or {},
                   until=row.ended_at if row.ended_at is not None else now,
                   checkpoint_interval=fixed_interval(spec.get("checkpoint_interval")),
                   checkpoint_cost=spec.get("checkpoint_cost"),
                   restart_cost=spec.get("restart_cost"))


@router.get("/jobs/{job_id}/goodput", response_model=JobGoodput, responses={404: {"description": "No such job"}})
def job_goodput(job_id: JobId, request: Request, who: Caller) -> JobGoodput:
    """A job's allocated and productive GPU-time, what it lost to each cause, and its ETTR."""
    row = _own_job(request, who, job_id)
    g = of(row, request.app.state.service.controller.clock())
    return JobGoodput(job_id=row.id, tenant=row.tenant, interruptions=row.interruptions, **g.to_dict())


@router.get("/goodput", response_model=list[TenantGoodput])
def tenant_goodput(request: Request, who: Caller,
                   tenant: Annotated[str | None, Query(max_length=63, pattern=NAME)] = None) -> list[TenantGoodput]:
    """Per tenant (a tenant sees its own): jobs that have run, their GPU-time, losses and goodput."""
    q = select(JobRow).where(JobRow.attempts > 0)
    if not who.admin:
        q = q.where(JobRow.tenant == who.tenant)
    elif tenant:
        q = q.where(JobRow.tenant == tenant)
    now = request.app.state.service.controller.clock()
    sums: dict[str, dict] = {}
    with request.app.state.service.sessions() as s:
        for row in s.scalars(q):
            g = of(row, now)
            t = sums.setdefault(row.tenant, {"tenant": row.tenant, "jobs": 0, "interruptions": 0, "allocated_gpu_s": 0.0,
                                             "productive_gpu_s": 0.0, "lost_gpu_s": dict.fromkeys(LOSSES, 0.0)})
            t["jobs"] += 1
            t["interruptions"] += row.interruptions
            t["allocated_gpu_s"] += g.allocated_gpu_s
            t["productive_gpu_s"] += g.productive_gpu_s
            for k, v in g.lost_gpu_s.items():
                t["lost_gpu_s"][k] += v
    return [TenantGoodput(**t, goodput=round(t["productive_gpu_s"] / t["allocated_gpu_s"], 4)
                          if t["allocated_gpu_s"] else None) for t in sorted(sums.values(), key=lambda t: t["tenant"])]
