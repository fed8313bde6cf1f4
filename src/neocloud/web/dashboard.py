"""The dashboard: server-rendered pages over the API's own route functions (the same queries, the
same rules on who may see what), with htmx to keep tables live. A token logs in once and is kept
in an HttpOnly, SameSite=Strict cookie; the JSON API itself stays bearer-only."""

from __future__ import annotations

import datetime as dt
import json
from asyncio import wrap_future
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from neocloud.api import billing, goodput, jobs, nodes
from neocloud.api.auth import Principal, holder
from neocloud.api.schemas import JobSpec
from neocloud.errors import NeocloudError
from neocloud.store.tables import UsageRow
from neocloud.web import templates
from neocloud.web.capacity import chart_data

router = APIRouter(prefix="/ui", include_in_schema=False)
COOKIE = "neocloud_token"
LOG_TAIL = 20_000  # bytes of a job's output its page shows
STATIC = Path(__file__).parent / "static"
EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SAMPLE = """name: hello
command: |
  echo "hello from job $NEOCLOUD_JOB_ID on $NEOCLOUD_NODE"
  for i in $(seq 1 30); do echo "step $i"; sleep 1; done
gpus: 1
estimated_duration: 1m
"""


class Login(Exception):
    """No valid token in the cookie: the page sends the browser to log in."""


def _who(request: Request) -> Principal:
    who = holder(request, request.cookies.get(COOKIE, ""))
    if who is None:
        raise Login
    return who


def _page(request: Request, template: str, who: Principal | None, **context: Any) -> HTMLResponse:
    html = templates.get_template(template).render(who=who, path=request.url.path, **context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def login_redirect(request: Request, exc: Login) -> RedirectResponse:
    return RedirectResponse(f"/ui/login?next={request.url.path}", status_code=303)


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = STATIC / name
    if path.parent != STATIC or not path.is_file():
        raise HTTPException(404, "no such file")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/ui/fleet") -> HTMLResponse:  # noqa: A002
    return _page(request, "login.html", None, next=next if next.startswith("/ui/") else "/ui/fleet", error="")


@router.post("/login")
def login(request: Request, token: Annotated[str, Form(max_length=512)],
          next: Annotated[str, Form(max_length=512)] = "/ui/fleet") -> Response:  # noqa: A002
    if holder(request, token) is None:
        return _page(request, "login.html", None, next=next, error="That token is not known here.")
    response = RedirectResponse(next if next.startswith("/ui/") else "/ui/fleet", status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", path="/ui")
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


@router.get("", include_in_schema=False)
@router.get("/")
def home() -> Response:
    return RedirectResponse("/ui/fleet", status_code=303)


# -- fleet ------------------------------------------------------------------------------------------
@router.get("/fleet", response_class=HTMLResponse)
async def fleet(request: Request) -> HTMLResponse:
    who = _who(request)
    service = request.app.state.service
    all_nodes = await nodes.list_nodes(request, who)
    layout: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for n in all_nodes:
        layout[f"{n.site} / {n.fabric}"][n.leaf].append(n)
    states = Counter(n.state for n in all_nodes)
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for n in all_nodes:
        by_type[n.gpu_type or "none"][0] += n.gpus
        by_type[n.gpu_type or "none"][1] += n.gpus_free
    fl = service.fleet
    kw: dict[str, float] = defaultdict(float)
    for n in fl.nodes:
        kw[fl.fabrics[fl.leaves[n.leaf].fabric].site] += n.it_kw
    sites = [{"name": s.name, "kind": s.kind, "it_mw": s.it_mw, "pue": s.pue, "drawn_mw": kw[s.name] / 1000}
             for s in fl.sites]
    return _page(request, "fleet.html", who, layout=layout, states=states, by_type=dict(by_type), sites=sites,
                 total=len(all_nodes))


@router.get("/nodes/{name}", response_class=HTMLResponse)
async def node(name: str, request: Request) -> HTMLResponse:
    who = _who(request)
    try:
        detail = await nodes.get_node(name, request, who)
    except NeocloudError:
        return _page(request, "missing.html", who, what=f"no node {name!r}")
    return _page(request, "node.html", who, node=detail)


# -- work -------------------------------------------------------------------------------------------
async def _work(request: Request, who: Principal) -> dict[str, Any]:
    queue = await jobs.queue(request, who)
    running = jobs.list_jobs(request, who, state="RUNNING", limit=500)
    recent = jobs.list_jobs(request, who, limit=50)
    return {"queue": queue, "running": running, "recent": recent}


@router.get("/jobs", response_class=HTMLResponse)
async def work(request: Request, fragment: bool = False) -> HTMLResponse:
    who = _who(request)
    context = await _work(request, who)
    if fragment:
        return _page(request, "jobs_tables.html", who, **context)
    return _page(request, "jobs.html", who, sample=SAMPLE, error="", spec=SAMPLE, **context)


@router.post("/jobs")
async def submit(request: Request, spec: Annotated[str, Form(max_length=200_000)]) -> Response:
    who = _who(request)
    try:
        parsed = JobSpec.model_validate(yaml.safe_load(spec) or {})
        created = await jobs.submit(parsed, request, who)
    except (yaml.YAMLError, ValidationError, HTTPException, NeocloudError) as e:
        return _page(request, "jobs.html", who, sample=SAMPLE, error=_message(e), spec=spec, **await _work(request, who))
    return RedirectResponse(f"/ui/jobs/{json.loads(created.body)['id']}", status_code=303)


def _message(e: Exception) -> str:
    """What to fix, in one line, whichever layer refused."""
    if isinstance(e, HTTPException):
        return str(e.detail)
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, x['loc'])) or 'spec'}: {x['msg']}" for x in e.errors(include_url=False))
    return str(e)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(job_id: int, request: Request) -> HTMLResponse:
    return _job(job_id, request, "job.html")


@router.get("/jobs/{job_id}/live", response_class=HTMLResponse)
def job_live(job_id: int, request: Request) -> HTMLResponse:
    """The parts of a job's page that move: its state, events and log tail."""
    return _job(job_id, request, "job_live.html")


def _job(job_id: int, request: Request, template: str) -> HTMLResponse:
    who = _who(request)
    try:
        row = jobs.get_job(job_id, request, who)
    except HTTPException:
        return _page(request, "missing.html", who, what=f"no job {job_id}")
    log = ""
    if row.attempts:  # the tail of rank 0's output
        path = Path(request.app.state.service.backend.log_path(job_id, 0, "stdout"))
        size = path.stat().st_size if path.exists() else 0
        log = jobs.logs(job_id, request, who, offset=max(size - LOG_TAIL, 0), limit=LOG_TAIL).text
    return _page(request, template, who, job=row, events=jobs.events(job_id, request, who), log=log)


@router.post("/jobs/{job_id}/cancel")
async def cancel(job_id: int, request: Request) -> Response:
    who = _who(request)
    try:
        await jobs.cancel(job_id, request, who)
    except HTTPException:
        return _page(request, "missing.html", who, what=f"no job {job_id}")
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


# -- performance, business, capacity, twin -----------------------------------------------------------
BUCKETS = 60


@router.get("/performance", response_class=HTMLResponse)
async def performance(request: Request, hours: float = 6.0) -> HTMLResponse:
    """GPUs allocated over time (from the metered attempts and the running jobs), goodput by tenant,
    fragmentation and decisions now."""
    who = _who(request)
    service = request.app.state.service
    now = service.controller.clock()
    t0 = now - max(min(hours, 24 * 31), 0.1) * 3600
    step = (now - t0) / BUCKETS
    allocated = [0.0] * BUCKETS
    with service.sessions() as s:
        q = select(UsageRow.gpus, UsageRow.start_at, UsageRow.end_at).where(UsageRow.end_at > t0)
        if not who.admin:
            q = q.where(UsageRow.tenant == who.tenant)
        spans = list(s.execute(q))
    spans += [(j.gpus, j.started_at, now) for j in jobs.list_jobs(request, who, state="RUNNING", limit=1000)
              if j.started_at is not None]
    for gpus, start, end in spans:  # GPU-seconds in each bucket, then the average GPUs held
        for i in range(max(int((start - t0) // step), 0), min(int((end - t0) // step) + 1, BUCKETS)):
            lo = t0 + i * step
            allocated[i] += gpus * max(min(end, lo + step) - max(start, lo), 0.0) / step
    all_nodes = await nodes.list_nodes(request, who)
    total = sum(n.gpus for n in all_nodes) or 1
    free = sum(n.gpus_free for n in all_nodes)
    stranded = sum(n.gpus_free for n in all_nodes if 0 < n.gpus_free < n.gpus and n.state in ("MIXED", "IDLE"))
    series = {"t": [t0 + (i + 1) * step for i in range(BUCKETS)], "allocated": allocated, "total": total}
    return _page(request, "performance.html", who, series=json.dumps(series), hours=hours,
                 per_tenant=goodput.tenant_goodput(request, who, None), total=total, free=free,
                 fragmentation=stranded / free if free else 0.0, decisions=service.controller.sched.decisions,
                 uptime=max(now - service.controller.started_at, 1e-9))


async def _guarantees(request: Request, who: Principal) -> list[dict[str, Any]]:
    now = await wrap_future(request.app.state.service.controller.view(lambda sched: sched.guarantees()))
    return [{"tenant": t, **g} for t, g in now.items() if who.admin or t == who.tenant]


@router.get("/business", response_class=HTMLResponse)
async def business(request: Request) -> HTMLResponse:
    who = _who(request)
    guarantees = await _guarantees(request, who)
    contracts = billing.list_contracts(request, who)
    month = dt.datetime.fromtimestamp(request.app.state.service.controller.clock(), dt.UTC).strftime("%Y-%m")
    tenants = sorted({c.tenant for c in contracts}) if who.admin else [who.tenant]
    invoices = []
    for tenant in tenants:
        try:
            invoices.append(billing.get_invoice(tenant, request, who, month_=month, format="json"))
        except (HTTPException, NeocloudError) as e:  # e.g. usage with no price set: say so, in its place
            invoices.append({"tenant": tenant, "error": e.detail if isinstance(e, HTTPException) else str(e)})
    backlog = billing.get_backlog(request, who) if who.admin else None
    return _page(request, "business.html", who, contracts=contracts, guarantees=guarantees, invoices=invoices,
                 backlog=backlog,
                 backlog_json=json.dumps(backlog or {}, default=str), month=month)


@router.get("/capacity", response_class=HTMLResponse)
def capacity(request: Request) -> HTMLResponse:
    who = _who(request)
    example = EXAMPLES / "capacity" / "pipeline.yaml"
    text = example.read_text() if example.is_file() else ""
    return _page(request, "capacity_page.html", who, plan=None, data="{}", pipeline=text, error="")


@router.post("/capacity", response_class=HTMLResponse)
def capacity_plan(request: Request, pipeline: Annotated[str, Form(max_length=1_000_000)],
                  runs: Annotated[int, Form(ge=100, le=50_000)] = 5000) -> HTMLResponse:
    """The buildout plan's fan chart against the target and the contracted power (admin)."""
    who = _who(request)
    if not who.admin:
        raise HTTPException(403, "capacity plans are the operator's: log in with the admin token")
    from neocloud.capacity.montecarlo import simulate
    from neocloud.capacity.plan import summarise
    from neocloud.capacity.schema import pipeline_from_dict

    try:
        p = pipeline_from_dict(yaml.safe_load(pipeline), "pipeline")
    except (yaml.YAMLError, NeocloudError) as e:
        return _page(request, "capacity_page.html", who, plan=None, data="{}", pipeline=pipeline, error=str(e))
    plan = summarise(p, simulate(p, runs, 0))
    data = chart_data(plan)
    return _page(request, "capacity_page.html", who, plan=plan, data=data, pipeline=pipeline, error="")


TWIN_LOCK = threading.Lock()


@router.get("/twin", response_class=HTMLResponse)
def twin(request: Request) -> HTMLResponse:
    who = _who(request)
    return _page(request, "twin.html", who, reports=request.app.state.twin_reports, error="",
                 traces=_traces(), fleets=_fleets())


@router.post("/twin")
def twin_run(request: Request, trace: Annotated[str, Form()], fleet_file: Annotated[str, Form()],
             policy: Annotated[str, Form()], placement: Annotated[str, Form()] = "neocloud") -> Response:
    """Replay a trace through the twin (the same scheduler) and keep the report beside the last one."""
    who = _who(request)
    from neocloud.fleet.loader import load_fleet
    from neocloud.sim.engine import simulate
    from neocloud.sim.traces import load_trace

    reports = request.app.state.twin_reports
    if trace not in _traces() or fleet_file not in _fleets():
        return _page(request, "twin.html", who, reports=reports, error="pick a trace and a fleet from the lists",
                     traces=_traces(), fleets=_fleets())
    try:
        with TWIN_LOCK:  # one replay at a time: it is CPU-bound
            report = simulate(load_fleet(EXAMPLES / "fleets" / fleet_file), load_trace(EXAMPLES / "traces" / trace),
                              policy=policy, placement=placement).to_dict()
    except NeocloudError as e:
        return _page(request, "twin.html", who, reports=reports, error=str(e), traces=_traces(), fleets=_fleets())
    reports.append({"trace": trace, "fleet": fleet_file, **report})
    del reports[:-2]
    return RedirectResponse("/ui/twin", status_code=303)


def _traces() -> list[str]:
    return sorted(p.name for p in (EXAMPLES / "traces").glob("*.csv"))


def _fleets() -> list[str]:
    return sorted(p.name for p in (EXAMPLES / "fleets").glob("*.yaml"))
