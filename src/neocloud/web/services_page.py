"""The dashboard's services page: each service the caller may see, its replicas, request rate,
latency percentiles (the gateway's last minute) and tokens (today, from the store)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select

from neocloud.api.services import replica_jobs, service_out
from neocloud.store.tables import ServiceRow, ServiceUsageRow
from neocloud.web.dashboard import _page, _same_origin, _who

router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(_same_origin)])
DAY_S = 86400


@router.get("/services", response_class=HTMLResponse)
def services(request: Request) -> HTMLResponse:
    who = _who(request)
    service = request.app.state.service
    now = service.controller.clock()
    q = select(ServiceRow).where(ServiceRow.state == "RUNNING").order_by(ServiceRow.tenant, ServiceRow.name)
    tokens = select(ServiceUsageRow.tenant, ServiceUsageRow.service, func.sum(ServiceUsageRow.requests),
                    func.sum(ServiceUsageRow.prompt_tokens), func.sum(ServiceUsageRow.completion_tokens)
                    ).where(ServiceUsageRow.hour >= now - now % DAY_S).group_by(ServiceUsageRow.tenant,
                                                                                ServiceUsageRow.service)
    if not who.admin:
        q, tokens = q.where(ServiceRow.tenant == who.tenant), tokens.where(ServiceUsageRow.tenant == who.tenant)
    with service.sessions() as s:
        rows = list(s.scalars(q))
        today = {(t, n): (r, p, c) for t, n, r, p, c in s.execute(tokens)}
    jobs = replica_jobs(request, rows)
    shown: list[dict[str, Any]] = []
    for row in rows:
        out = service_out(request, row, jobs[row.id]).model_dump()
        out["recent"] = service.controller.metering.recent(row.tenant, row.name, now)
        out["today"] = today.get((row.tenant, row.name), (0, 0, 0))
        shown.append(out)
    return _page(request, "services.html", who, services=shown)
