"""Jobs: submit, list, show, cancel, events, logs, and the queue."""

from __future__ import annotations

import asyncio
import itertools
from asyncio import wrap_future
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import Discriminator, Tag
from sqlalchemy import select

from neocloud.api.auth import Principal, caller
from neocloud.api.code import code_store
from neocloud.api.schemas import (
    MAX_ID,
    NAME,
    DryRunOut,
    EventOut,
    JobOut,
    JobSpec,
    LogsOut,
    QueueEntry,
)
from neocloud.api.service_specs import ServiceSpec
from neocloud.backends.base import read_file
from neocloud.control.controller import DEFAULT_TENANT, NotFound
from neocloud.control.forecasts import Base, Forecasts
from neocloud.sched.arrays import parse_array
from neocloud.store.tables import JobEvent, JobRow

router = APIRouter(prefix="/v1", tags=["jobs"])
Caller = Annotated[Principal, Depends(caller)]
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
MAX_LOG_CHUNK = 1 << 20
STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
ACTIVE = ("PENDING", "RUNNING")
DRY_RUN_TRIES = 4  # a dry run waits this many times for the loop's share to allow a snapshot


def job_dict(row: JobRow, expected: tuple[float | None, float | None] = (None, None)) -> dict:
    """A job as JSON, in `JobOut`'s shape; `expected`: its forecast start and end."""
    return {"id": row.id, "name": row.name, "tenant": row.tenant, "state": row.state, "priority": row.priority,
            "gpus": row.gpus, "command": row.spec["command"], "submitted_at": row.submitted_at,
            "started_at": row.started_at, "ended_at": row.ended_at, "attempts": row.attempts,
            "placement": row.placement, "exit_code": row.exit_code, "reason": row.reason,
            "cancel_requested": row.cancel_requested, "spec": row.spec, "expected_start": expected[0],
            "expected_end": expected[1], "array_job": row.array_job, "array_index": row.array_index}


def job_out(row: JobRow, forecasts: Forecasts | None = None, now: float = 0.0) -> JobOut:
    """A job as the API's model, for routes that return `JobOut` itself; with `forecasts`, a pending
    or running job's expected start and end."""
    expected = forecasts.of(str(row.id), now) if forecasts is not None and row.state in ACTIVE else (None, None)
    return JobOut(**job_dict(row, expected))


def own_job(request: Request, who: Principal, job_id: int) -> JobRow:
    """The job, if the caller may see it (another tenant's is a 404, as a missing one is)."""
    with request.app.state.service.sessions() as s:
        row = s.get(JobRow, job_id)
    if row is None or (not who.admin and row.tenant != who.tenant):
        raise HTTPException(404, f"no job {job_id}")
    return row


def submission(request: Request, spec: JobSpec, who: Principal) -> tuple[str, dict[str, Any]]:
    """Whose job a spec is and the body the controller keeps: a tenant submits only for itself."""
    if not who.admin and spec.tenant not in (None, who.tenant):
        raise HTTPException(403, f"a tenant token submits only for its own tenant ({who.tenant})")
    tenant = spec.tenant or who.tenant or DEFAULT_TENANT  # the admin submits for a tenant, or the default one
    if spec.code is not None and code_store(request).get(tenant, spec.code) is None:
        raise HTTPException(422, f"code: no upload {spec.code} of tenant {tenant}: upload the work directory to "
                                 "POST /v1/code first (`neocloud submit` does, from a spec's workdir)")
    missing = getattr(request.app.state.service.backend, "image_missing", None)  # a backend that can tell
    if spec.image is not None and missing is not None and (why := missing(spec.image)):
        raise HTTPException(422, f"image: {why}")
    return tenant, spec.model_dump(exclude={"tenant", "workdir"} | ({"kind"} if spec.kind == "job" else set()),
                                   mode="json")


def _kind(body: Any) -> str:
    return str((body.get("kind") if isinstance(body, dict) else getattr(body, "kind", None)) or "job")


Submission = Annotated[Annotated[JobSpec, Tag("job")] | Annotated[ServiceSpec, Tag("service")], Discriminator(_kind)]


@router.post("/jobs", status_code=201, response_model=JobOut,
             responses={200: {"model": DryRunOut, "description": "A dry run's answer: nothing was queued"},
                        422: {"description": "Invalid or unsatisfiable spec"}})
async def submit(spec: Submission, request: Request, who: Caller,
                 dry_run: Annotated[bool, Query(description="Answer when and where the job would start, by the "
                                                            "live forecast, without queueing it.")] = False,
                 ) -> JSONResponse:
    """Submit a job; or, with `kind: service`, create a service (its answer is then a ServiceOut)."""
    if isinstance(spec, ServiceSpec):
        if dry_run:
            raise HTTPException(422, "dry_run: a service runs until stopped; a dry run forecasts jobs only")
        from neocloud.api.services import create  # services.py builds on this module

        return await create(request, spec, who)
    # A job in an image asks the backend whether it has it (podman, a subprocess): off the event loop.
    tenant, body = submission(request, spec, who) if spec.image is None else \
        await run_in_threadpool(submission, request, spec, who)
    controller = request.app.state.service.controller
    if dry_run:
        for _ in range(DRY_RUN_TRIES):
            base, job, ended = await wrap_future(controller.dry_run(tenant, body))
            if isinstance(base, Base):
                break
            await asyncio.sleep(base)
        else:
            raise HTTPException(503, "the forecast is busy with other dry runs; try again in a few seconds")
        out = await run_in_threadpool(controller.forecasts.dry_run, base, job, ended)
        start, end = out.expected(job.id, controller.clock())
        nodes, gpus = out.where.get(job.id, ((), ()))
        answer = DryRunOut(name=job.name, tenant=tenant, gpus=job.gpus, expected_start=start, expected_end=end,
                           placement=[{"node": controller.fleet.nodes[n].name, "gpus": list(g)}
                                      for n, g in zip(nodes, gpus)] or None,
                           reason=out.why if start is not None or job.depends_on
                           else "not expected to start within 30 days" + (f": {out.why}" if out.why else ""),
                           array_tasks=None if spec.array is None else len(parse_array(spec.array).indices))
        return JSONResponse(answer.model_dump(), status_code=200)
    row = await wrap_future(controller.submit(tenant, body))
    # The hot path: answer in JobOut's shape without building and validating a model.
    return JSONResponse(job_dict(row), status_code=201)


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(request: Request, who: Caller,
              state: Annotated[str | None, Query(pattern="^(" + "|".join(STATES) + ")$")] = None,
              tenant: Annotated[str | None, Query(max_length=63, pattern=NAME)] = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only jobs with a lower id.")] = None,
              array: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Only the tasks of this array.")] = None,
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
    if array:
        q = q.where(JobRow.array_job == array)
    service = request.app.state.service
    with service.sessions() as s:
        return [job_out(r, service.controller.forecasts, service.controller.clock()) for r in s.scalars(q)]


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"description": "No such job"}})
def get_job(job_id: JobId, request: Request, who: Caller) -> JobOut:
    controller = request.app.state.service.controller
    return job_out(own_job(request, who, job_id), controller.forecasts, controller.clock())


@router.delete("/jobs/{job_id}", response_model=JobOut, responses={404: {"description": "No such job"}})
async def cancel(job_id: JobId, request: Request, who: Caller) -> JobOut:
    """Cancel a job (an array's id: every task of it still pending or running): the controller looks it up and refuses another tenant's (404), so this route
    reads nothing itself and only awaits that one turn."""
    try:
        row = await wrap_future(request.app.state.service.controller.cancel(job_id, who.tenant))
    except NotFound as e:
        raise HTTPException(404, str(e)) from None
    return job_out(row)


@router.get("/jobs/{job_id}/events", response_model=list[EventOut], responses={404: {"description": "No such job"}})
def events(job_id: JobId, request: Request, who: Caller,
           limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
           after: Annotated[int | None, Query(ge=0, le=MAX_ID, description="Only events with a higher id.")] = None,
           ) -> list[EventOut]:
    """A job's events, oldest first, a page at a time (`after` the last id seen)."""
    own_job(request, who, job_id)
    q = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id).limit(limit)
    if after is not None:
        q = q.where(JobEvent.id > after)
    with request.app.state.service.sessions() as s:
        return [event_out(e) for e in s.scalars(q)]


def latest_events(request: Request, job_id: int, limit: int) -> list[EventOut]:
    """A job's newest `limit` events, oldest first (its page shows those)."""
    q = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc()).limit(limit)
    with request.app.state.service.sessions() as s:
        return [event_out(e) for e in reversed(list(s.scalars(q)))]


def event_out(e: JobEvent) -> EventOut:
    """An event as the API shows it, with the id to ask for the next ones `after`."""
    return EventOut(id=e.id, at=e.at, kind=e.kind, message=e.message)


@router.get("/jobs/{job_id}/logs", response_model=LogsOut, responses={404: {"description": "No such job"}})
def logs(job_id: JobId, request: Request, who: Caller,
         rank: Annotated[int, Query(ge=0, le=100_000)] = 0,
         stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout",
         offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
         limit: Annotated[int, Query(ge=1, le=MAX_LOG_CHUNK)] = MAX_LOG_CHUNK) -> LogsOut:
    return log_chunk(request, own_job(request, who, job_id), rank, stream, offset, limit)


def log_chunk(request: Request, row: JobRow, rank: int, stream: str, offset: int, limit: int) -> LogsOut:
    """A chunk of a job's log, for a job already looked up and allowed."""
    try:
        data = read_file(request.app.state.service.backend.log_path(row.id, rank, stream), offset, limit)
    except OSError:  # not a log the backend wrote (see read_file): nothing to show
        data = b""
    text, used = _decode(data)
    return LogsOut(job_id=row.id, rank=rank, stream=stream, offset=offset, next_offset=offset + used, text=text,
                   done=row.state not in ("PENDING", "RUNNING"))


QUEUE_PAGE = 200  # queued jobs a page of /v1/queue holds by default: each is told why it waits


@router.get("/queue", response_model=list[QueueEntry])
async def queue(request: Request, who: Caller,
                limit: Annotated[int, Query(ge=1, le=1000)] = QUEUE_PAGE,
                offset: Annotated[int, Query(ge=0, le=MAX_ID, description="Skip this many of the caller's queued "
                                                                              "jobs.")] = 0) -> list[QueueEntry]:
    """The caller's queued jobs in the order they will run, each with its place in the whole queue
    and why it waits, then those a dependency or an array's throttle holds; a page at a time."""
    service = request.app.state.service
    entries, _ = await wrap_future(service.controller.view(queue_reader(who, limit, offset)))
    return queue_entries(entries, service.controller.clock(), service.controller.forecasts)


QueuePage = tuple[list[tuple], int | None]  # the page's jobs as queue_entries takes them; how many are queued


def queue_reader(who: Principal, limit: int, offset: int = 0, *, count: bool = False) -> Callable[[Any], QueuePage]:
    """What to read of the scheduler for a page of the queue, in one controller turn: the page's
    jobs (only theirs are asked why they wait, each a placement until the cluster changes) and,
    with `count`, how many the caller has queued."""

    def read(sched: Any) -> QueuePage:
        held = sched.gates.held()  # after the queue: they join it once their dependencies or slot allow
        order = enumerate(itertools.chain((rec.job for rec in sched.queue.order(sched.usage)), held))
        mine = order if who.admin else ((i, job) for i, job in order if job.tenant == who.tenant)
        upto = list(itertools.islice(mine, offset + limit))
        page = [(i, job.id, job.tenant, job.name, job.priority.value, job.gpus, job.submit_s,
                 sched.why_waiting(job.id)) for i, job in upto[offset:]]
        total = None
        if count:
            total = len(sched.queue) + len(held) if who.admin else len(upto) + sum(1 for _ in mine)
        return page, total

    return read


def queue_entries(page: list[tuple], now: float, forecasts: Forecasts) -> list[QueueEntry]:
    """A page read by `queue_reader`, as the API answers it (built outside the controller's turn)."""
    return [QueueEntry(position=i + 1, id=int(jid), tenant=t, name=name, priority=p, gpus=g,
                       waiting_s=max(now - sub, 0), reason=why, expected_start=forecasts.of(jid, now)[0])
            for i, jid, t, name, p, g, sub, why in page]


def _decode(data: bytes) -> tuple[str, int]:
    """Text of a log chunk, leaving a UTF-8 sequence cut at the end for the next read."""
    try:
        return data.decode(), len(data)
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data" and e.start >= len(data) - 3:
            return data[: e.start].decode(errors="replace"), e.start
        return data.decode(errors="replace"), len(data)
