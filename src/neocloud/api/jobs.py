"""Jobs: submit, list, show, cancel, events, logs, and the queue."""

from __future__ import annotations

from asyncio import wrap_future
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from neocloud.api.auth import Principal, caller
from neocloud.api.schemas import MAX_ID, NAME, EventOut, JobOut, JobSpec, LogsOut, QueueEntry
from neocloud.backends.base import read_file
from neocloud.control.controller import DEFAULT_TENANT, NotFound
from neocloud.store.tables import JobEvent, JobRow

router = APIRouter(prefix="/v1", tags=["jobs"])
Caller = Annotated[Principal, Depends(caller)]
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
MAX_LOG_CHUNK = 1 << 20
STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")


def job_dict(row: JobRow) -> dict:
    """A job as JSON, in `JobOut`'s shape."""
    return {"id": row.id, "name": row.name, "tenant": row.tenant, "state": row.state, "priority": row.priority,
            "gpus": row.gpus, "command": row.spec["command"], "submitted_at": row.submitted_at,
            "started_at": row.started_at, "ended_at": row.ended_at, "attempts": row.attempts,
            "placement": row.placement, "exit_code": row.exit_code, "reason": row.reason,
            "cancel_requested": row.cancel_requested, "spec": row.spec}


def job_out(row: JobRow) -> JobOut:
    return JobOut(**job_dict(row))


def _own_job(request: Request, who: Principal, job_id: int) -> JobRow:
    with request.app.state.service.sessions() as s:
        row = s.get(JobRow, job_id)
    if row is None or (not who.admin and row.tenant != who.tenant):
        raise HTTPException(404, f"no job {job_id}")
    return row


@router.post("/jobs", status_code=201, response_model=JobOut, responses={422: {"description": "Invalid or unsatisfiable spec"}})
async def submit(spec: JobSpec, request: Request, who: Caller) -> JSONResponse:
    if not who.admin and spec.tenant not in (None, who.tenant):
        raise HTTPException(403, f"a tenant token submits only for its own tenant ({who.tenant})")
    tenant = spec.tenant or who.tenant or DEFAULT_TENANT  # the admin submits for a tenant, or the default one
    body = spec.model_dump(exclude={"tenant"}, mode="json")
    row = await wrap_future(request.app.state.service.controller.submit(tenant, body))
    # The hot path: answer in JobOut's shape without building and validating a model.
    return JSONResponse(job_dict(row), status_code=201)


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(request: Request, who: Caller,
              state: Annotated[str | None, Query(pattern="^(" + "|".join(STATES) + ")$")] = None,
              tenant: Annotated[str | None, Query(max_length=63, pattern=NAME)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only jobs with a lower id.")] = None,
              ) -> list[JobOut]:
    q = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
    if not who.admin:
        q = q.where(JobRow.tenant == who.tenant)
    elif tenant:
        q = q.where(JobRow.tenant == tenant)
    if state:
        q = q.where(JobRow.state == state)
    if before:
        q = q.where(JobRow.id < before)
    with request.app.state.service.sessions() as s:
        return [job_out(r) for r in s.scalars(q)]


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"description": "No such job"}})
def get_job(job_id: JobId, request: Request, who: Caller) -> JobOut:
    return job_out(_own_job(request, who, job_id))


@router.delete("/jobs/{job_id}", response_model=JobOut, responses={404: {"description": "No such job"}})
async def cancel(job_id: JobId, request: Request, who: Caller) -> JobOut:
    _own_job(request, who, job_id)
    try:
        row = await wrap_future(request.app.state.service.controller.cancel(job_id, who.tenant))
    except NotFound as e:
        raise HTTPException(404, str(e)) from None
    return job_out(row)


@router.get("/jobs/{job_id}/events", response_model=list[EventOut], responses={404: {"description": "No such job"}})
def events(job_id: JobId, request: Request, who: Caller) -> list[EventOut]:
    _own_job(request, who, job_id)
    with request.app.state.service.sessions() as s:
        rows = s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        return [EventOut(at=e.at, kind=e.kind, message=e.message) for e in rows]


@router.get("/jobs/{job_id}/logs", response_model=LogsOut, responses={404: {"description": "No such job"}})
def logs(job_id: JobId, request: Request, who: Caller,
         rank: Annotated[int, Query(ge=0, le=100_000)] = 0,
         stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout",
         offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
         limit: Annotated[int, Query(ge=1, le=MAX_LOG_CHUNK)] = MAX_LOG_CHUNK) -> LogsOut:
    row = _own_job(request, who, job_id)
    try:
        data = read_file(request.app.state.service.backend.log_path(job_id, rank, stream), offset, limit)
    except OSError:  # not a log the backend wrote (see read_file): nothing to show
        data = b""
    text, used = _decode(data)
    return LogsOut(job_id=job_id, rank=rank, stream=stream, offset=offset, next_offset=offset + used, text=text,
                   done=row.state not in ("PENDING", "RUNNING"))


WHY_DEPTH = 200  # queued jobs whose reason for waiting is worked out (each costs a placement)


@router.get("/queue", response_model=list[QueueEntry])
async def queue(request: Request, who: Caller) -> list[QueueEntry]:
    service = request.app.state.service

    def read(sched) -> list[tuple]:  # noqa: ANN001 - the scheduler, read in the loop's thread
        return [(rec.job.id, rec.job.tenant, rec.job.name, rec.job.priority.value, rec.job.gpus, rec.job.submit_s,
                 sched.why_waiting(rec.job.id) if i < WHY_DEPTH else "")
                for i, rec in enumerate(sched.queue.order(sched.usage))]

    waiting = await wrap_future(service.controller.view(read))
    now = service.controller.clock()
    return [QueueEntry(position=i + 1, id=int(jid), tenant=t, name=name, priority=p, gpus=g, waiting_s=max(now - sub, 0),
                       reason=why)
            for i, (jid, t, name, p, g, sub, why) in enumerate(waiting) if who.admin or t == who.tenant]


def _decode(data: bytes) -> tuple[str, int]:
    """Text of a log chunk, leaving a UTF-8 sequence cut at the end for the next read."""
    try:
        return data.decode(), len(data)
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data" and e.start >= len(data) - 3:
            return data[: e.start].decode(errors="replace"), e.start
        return data.decode(errors="replace"), len(data)
