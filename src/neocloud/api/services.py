"""Services: create (here, or POST /v1/jobs with `kind: service`), list, show, update, scale and
stop them. A tenant sees only its own; the admin names a tenant with `?tenant=` (default: the
default tenant). The gateway, under the same prefix, is gateway.py."""

from __future__ import annotations

from asyncio import wrap_future
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select

from neocloud.api.auth import Principal
from neocloud.api.jobs import Caller, submission
from neocloud.api.schemas import NAME
from neocloud.api.service_specs import ReplicaOut, ScaleIn, ServiceOut, ServiceSpec
from neocloud.control.controller import DEFAULT_TENANT
from neocloud.store.tables import JobRow, ServiceRow

router = APIRouter(prefix="/v1", tags=["services"])
ServiceName = Annotated[str, Path(max_length=63, pattern=NAME)]
TenantQuery = Annotated[str | None, Query(max_length=63, pattern=NAME, description="Admin only: whose service.")]


def whose(who: Principal, tenant: str | None) -> str:
    if not who.admin and tenant not in (None, who.tenant):
        raise HTTPException(404, "no such service")  # another tenant's is as missing as one that is not
    return who.tenant or tenant or DEFAULT_TENANT


def replica_jobs(request: Request, rows: list[ServiceRow]) -> dict[int, list[JobRow]]:
    """The replicas not ended of these services, by service: one statement however many."""
    found: dict[int, list[JobRow]] = {r.id: [] for r in rows}
    if rows:
        with request.app.state.service.sessions() as s:
            for job in s.scalars(select(JobRow).where(JobRow.service_id.in_(list(found)),
                                                      JobRow.state.in_(("PENDING", "RUNNING"))).order_by(JobRow.id)):
                found[job.service_id].append(job)
    return found


def service_out(request: Request, row: ServiceRow, jobs: list[JobRow] | None = None) -> ServiceOut:
    """The service with its replicas: their jobs from the store (or as given), their readiness from
    the gateway's table."""
    endpoints = {e.job_id: e for e in request.app.state.service.controller.endpoints.replicas(row.id)}
    if jobs is None:
        jobs = replica_jobs(request, [row])[row.id]
    replicas = [ReplicaOut(job=j.id, state=j.state, generation=j.generation or 0,
                           ready=bool(e and e.ready), draining=bool(e and e.draining), in_flight=e.in_flight if e else 0,
                           address=j.address, node=(j.placement or [{}])[0].get("node"),
                           problem=e.problem if e else None)
                for j in jobs for e in [endpoints.get(j.id)]]
    return ServiceOut(name=row.name, tenant=row.tenant, state=row.state, generation=row.generation,  # type: ignore[arg-type]
                      replicas=row.replicas, ready=sum(r.ready for r in replicas),
                      endpoint=f"/v1/services/{row.tenant}/{row.name}/", model=row.spec.get("model"), spec=row.spec,
                      created_at=row.created_at, updated_at=row.updated_at, replica_list=replicas)


async def create(request: Request, spec: ServiceSpec, who: Principal) -> JSONResponse:
    tenant, body = await run_in_threadpool(submission, request, spec, who)
    row = await wrap_future(request.app.state.service.controller.create_service(tenant, body))
    return JSONResponse(service_out(request, row).model_dump(mode="json"), status_code=201)


@router.post("/services", status_code=201, response_model=ServiceOut,
             responses={409: {"description": "A service of that name exists"}})
async def create_service(spec: ServiceSpec, request: Request, who: Caller) -> JSONResponse:
    """Create a service: its replicas are queued at once, and reached through its endpoint once ready."""
    return await create(request, spec, who)


@router.get("/services", response_model=list[ServiceOut])
def list_services(request: Request, who: Caller, tenant: TenantQuery = None,
                  stopped: Annotated[bool, Query(description="Stopped ones too.")] = False) -> list[ServiceOut]:
    q = select(ServiceRow).order_by(ServiceRow.tenant, ServiceRow.name)
    if not who.admin or tenant:
        q = q.where(ServiceRow.tenant == whose(who, tenant))
    if not stopped:
        q = q.where(ServiceRow.state == "RUNNING")
    with request.app.state.service.sessions() as s:
        rows = list(s.scalars(q))
    jobs = replica_jobs(request, rows)
    return [service_out(request, r, jobs[r.id]) for r in rows]


def _own(request: Request, who: Principal, name: str, tenant: str | None) -> ServiceRow:
    owner = whose(who, tenant)
    with request.app.state.service.sessions() as s:
        row = s.scalars(select(ServiceRow).where(ServiceRow.tenant == owner, ServiceRow.name == name)).first()
    if row is None:
        raise HTTPException(404, f"no service {name!r}")
    return row


@router.get("/services/{name}", response_model=ServiceOut)
def get_service(name: ServiceName, request: Request, who: Caller, tenant: TenantQuery = None) -> ServiceOut:
    return service_out(request, _own(request, who, name, tenant))


async def _change(request: Request, who: Principal, name: str, tenant: str | None, how: str,
                  value: object) -> ServiceOut:
    controller = request.app.state.service.controller
    return service_out(request, await wrap_future(controller.change_service(whose(who, tenant), name, how, value)))


@router.put("/services/{name}", response_model=ServiceOut)
async def update_service(name: ServiceName, spec: ServiceSpec, request: Request, who: Caller,
                         tenant: TenantQuery = None) -> ServiceOut:
    """A new spec for the service: its replicas roll to it, the new ready before the old stop."""
    if spec.name != name:
        raise HTTPException(422, f"name: the spec names {spec.name!r}, the path {name!r}: a service keeps its name")
    owner = whose(who, tenant)
    if spec.tenant not in (None, owner):
        raise HTTPException(422, f"tenant: the service is {owner}'s")
    _, body = await run_in_threadpool(submission, request, spec.model_copy(update={"tenant": owner}),
                                      Principal(None) if who.admin else who)
    return await _change(request, who, name, tenant, "update", body)


@router.post("/services/{name}/scale", response_model=ServiceOut)
async def scale_service(name: ServiceName, body: ScaleIn, request: Request, who: Caller,
                        tenant: TenantQuery = None) -> ServiceOut:
    """Set the number of replicas (until the autoscaler, if it has one, sets another)."""
    return await _change(request, who, name, tenant, "scale", body.replicas)


@router.delete("/services/{name}", response_model=ServiceOut)
async def stop_service(name: ServiceName, request: Request, who: Caller, tenant: TenantQuery = None) -> ServiceOut:
    """Stop the service: its replicas are drained (their requests answered), then stopped."""
    return await _change(request, who, name, tenant, "stop", None)
