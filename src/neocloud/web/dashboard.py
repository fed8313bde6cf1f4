"""The dashboard: server-rendered pages over the API's own route functions (the same queries, the
same rules on who may see what), with htmx to keep tables live.

A token logs in once and opens a server-side session (`web/sessions.py`): the browser holds only
the session's random id, in an HttpOnly, SameSite=Strict cookie scoped to /ui, and the JSON API
stays bearer-only. Every state-changing request must come from the dashboard's own origin (Origin,
else Referer) and carry the session's CSRF token: SameSite does not stop a page on another port of
the same host, which is the same site."""

from __future__ import annotations

import datetime as dt
import hmac
import json
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from importlib.resources import as_file, files
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import Float, Select, case, func, literal, select, union_all

from neocloud.api import billing, goodput, jobs, nodes, tracking, views
from neocloud.api.auth import Principal, check_rate, holder, note_failure, principal_of_digest
from neocloud.api.schemas import MAX_ID, JobSpec
from neocloud.backends.base import file_size
from neocloud.control.controller import digest
from neocloud.errors import NeocloudError
from neocloud.fleet.loader import parse_yaml
from neocloud.model.billing import backlog, month
from neocloud.store.tables import JobRow, UsageRow
from neocloud.web import templates
from neocloud.web.capacity import chart_data
from neocloud.web.sessions import Session, Sessions

COOKIE = "neocloud_session"
LEGACY_COOKIE = "neocloud_token"  # where earlier versions kept the bearer token itself: cleared at login
CSRF_HEADER = "X-CSRF-Token"  # the token of the forms' hidden "csrf" field, as htmx sends it (hx-headers on <body>)
SAFE = {"GET", "HEAD", "OPTIONS"}
# "same-origin", not "no-referrer": under no-referrer a browser sends "Origin: null" with every form,
# even to its own server, and the origin check could not tell the dashboard's forms from forged ones.
PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "same-origin"}
LOG_TAIL = 20_000  # bytes of a job's output its page shows
STATIC = Path(__file__).parent / "static"
EXAMPLES = files("neocloud.web") / "examples"  # package data: examples/ of the source, shipped in the wheel
SAMPLE = """name: hello
command: |
  echo "hello from job $NEOCLOUD_JOB_ID on $NEOCLOUD_NODE"
  for i in $(seq 1 30); do echo "step $i"; sleep 1; done
gpus: 1
estimated_duration: 1m
"""


class Login(Exception):
    """No live session: the page sends the browser to log in."""


class Refused(Login):
    """A state-changing request that did not come from the dashboard's own pages (cross-site request
    forgery, or a stale form): answered 403 with why. A kind of Login so that the one handler the
    server registers for the dashboard answers it too."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


_STORE_LOCK = threading.Lock()


def sessions(request: Request) -> Sessions:
    """This server's dashboard sessions (in memory: a restart logs everyone out)."""
    state = request.app.state
    store = getattr(state, "ui_sessions", None)
    if store is None:
        with _STORE_LOCK:
            store = getattr(state, "ui_sessions", None)
            if store is None:
                store = state.ui_sessions = Sessions.from_env()
    return store


def _session(request: Request, *, touch: bool = True) -> tuple[Session, Principal] | None:
    """The request's live session and whose it is now: the token is re-resolved every time, so a
    revoked or expired token ends its sessions at once."""
    store = sessions(request)
    session_id = _session_id(request)
    session = store.get(session_id, touch=touch)
    if session is None:
        return None
    who = principal_of_digest(request, session.token_digest)
    if who is None:
        store.close(session_id)
        return None
    return session, who


def _session_id(request: Request) -> str:
    """The session cookie, only if the request carries one alone. Cookies know no ports: a page on
    another port of this host can plant a second, more specific one (its own session) for the
    browser to send first; a request with two is taken for one with none."""
    sent = [value for name, _, value in (c.strip().partition("=") for c in request.headers.get("cookie", "").split(";"))
            if name == COOKIE]
    return sent[0] if len(sent) == 1 else ""


def audit_principal(request: Request) -> Principal | None:
    """Who a dashboard request came from, for the audit log (without counting as activity)."""
    if not request.url.path.startswith("/ui/"):
        return None
    who = getattr(request.state, "dashboard_who", None)
    if who is not None:
        return who
    found = _session(request, touch=False)
    return found[1] if found else None


def _who(request: Request, csrf: str | None = None) -> Principal:
    """The logged-in caller; on a state-changing request, only with the session's CSRF token."""
    found = _session(request)
    if found is None:
        raise Login
    session, who = found
    request.state.dashboard_who = who
    request.state.dashboard_csrf = session.csrf
    if request.method not in SAFE:
        sent = csrf or request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode("utf-8", "replace"), session.csrf.encode()):
            raise Refused("this form does not carry this session's CSRF token (it was not sent from this "
                          "dashboard's own page, or the page is from an earlier session): reload the page and "
                          "try again")
    return who


def _origin(url: str) -> tuple[str, str, int] | None:
    """scheme, host and port of a URL, the default port filled in; None if it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def scheme(request: Request) -> str:
    """How the browser reached this server: https behind a TLS proxy that says so (X-Forwarded-Proto).
    Trusting the header is safe here: a forged cross-site request cannot set it (that would need a
    CORS preflight, which this server never grants), and a client that sends it itself only changes
    its own answer."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded if forwarded in ("http", "https") else request.url.scheme


def own_origin(request: Request) -> str:
    """This server's origin as the browser addressed it: the scheme and the Host header."""
    return f"{scheme(request)}://{request.headers.get('host', '')}"


def cross_origin(request: Request, *, strict: bool = False) -> str | None:
    """Why a request did not come from a page of this server (scheme, host and port all count), or
    None if it did. The Origin header, else the Referer's origin; a request with neither passes
    unless `strict` (the CSRF token still guards it), since browsers send Origin with every POST."""
    own = own_origin(request)
    sent = request.headers.get("origin")
    header = "Origin"
    if sent is None:
        sent, header = request.headers.get("referer"), "Referer"
        if sent is None:
            return "the request has neither an Origin nor a Referer header" if strict else None
    theirs = _origin(sent)
    if theirs is not None and theirs == _origin(own):
        return None
    shown = sent if theirs is None else "{}://{}:{}".format(*theirs)
    return f"this request came from {shown[:200]!r} ({header}), not from this dashboard ({own[:200]}): refused"


async def _same_origin(request: Request) -> None:
    """Every state-changing dashboard request, checked before its form is even validated."""
    if request.method in SAFE:
        return
    why = cross_origin(request, strict=request.url.path == "/ui/login")
    if why is not None:
        found = _session(request, touch=False)
        if found is not None:  # audited under the victim's name: the log shows whose session was targeted
            request.state.dashboard_who = found[1]
        raise Refused(why)


router = APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(_same_origin)])


def _page(request: Request, template: str, who: Principal | None, status: int = 200,
          headers: Mapping[str, str] | None = None, **context: Any) -> HTMLResponse:
    html = templates.get_template(template).render(who=who, path=request.url.path,
                                                   csrf=getattr(request.state, "dashboard_csrf", "") if who else "",
                                                   **context)
    return HTMLResponse(html, status_code=status, headers={**(headers or {}), **PAGE_HEADERS})


def _missing(request: Request, who: Principal, what: str) -> HTMLResponse:
    return _page(request, "missing.html", who, status=404, what=what)


def _json(value: Any) -> str:
    """JSON to place inside a <script type="application/json"> block: nothing in it can close the block."""
    return json.dumps(value, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _id(raw: str) -> int | None:
    """An id from a URL, if it is one the store can hold (1 to 2**31 - 1)."""
    if not re.fullmatch(r"[0-9]{1,10}", raw):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


def login_redirect(request: Request, exc: Login) -> Response:
    """The answer to the dashboard's exceptions: a refusal page (403), or off to log in; an htmx
    request (a live table) is sent there with HX-Redirect, as following a redirect would put the
    login page inside the table."""
    if isinstance(exc, Refused):  # shown without the session's header: no CSRF token in an answer to a forgery
        return _page(request, "refused.html", None, status=403, what=exc.why)
    page = request.url.path if request.method in SAFE else "/ui/fleet"
    if request.headers.get("hx-request") == "true":
        page = urlsplit(request.headers.get("hx-current-url", "")).path or page
    target = f"/ui/login?next={quote(_next(page))}"
    if request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": target, "Cache-Control": "no-store"})
    return RedirectResponse(target, status_code=303)


def _next(path: str) -> str:
    """Where to go after logging in: a dashboard page, never another site."""
    return path if path.startswith("/ui/") and "\\" not in path and path.isprintable() else "/ui/fleet"


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    path = STATIC / name
    if path.parent != STATIC or not path.is_file():
        raise HTTPException(404, "no such file")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: Annotated[str, Query(max_length=2048)] = "/ui/fleet") -> HTMLResponse:  # noqa: A002
    return _page(request, "login.html", None, next=_next(next), error="")


@router.post("/login")
def login(request: Request, token: Annotated[str, Form(max_length=512)],
          next: Annotated[str, Form(max_length=2048)] = "/ui/fleet") -> Response:  # noqa: A002
    """Open a session for a valid token. The login form carries no CSRF token (there is no session
    yet to bind one to, and a cookie-bound one is no stronger on a host whose other ports can set
    cookies): a login must show this server's own Origin (or Referer), which `_same_origin` checks.
    Failed logins count against the client's address like failed bearer tokens do."""
    who = holder(request, token)
    if who is None:
        try:
            check_rate(request)
        except HTTPException as e:
            return _page(request, "login.html", None, status=e.status_code, next=_next(next), error=str(e.detail),
                         headers=e.headers)
        note_failure(request)
        return _page(request, "login.html", None, status=401, next=_next(next), error="That token is not known here.")
    store = sessions(request)
    store.close(_session_id(request))  # a fresh id at every login: no session fixation
    session_id, _ = store.open(digest(token.strip()))
    request.state.dashboard_who = who
    response = RedirectResponse(_next(next), status_code=303)
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict", path="/ui",
                        secure=scheme(request) == "https")
    response.delete_cookie(LEGACY_COOKIE, path="/ui")
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    """End the session here, on the server (the id is worthless after), and clear the cookie."""
    if _session(request, touch=False) is not None:
        _who(request, csrf)
        sessions(request).close(_session_id(request))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui", secure=scheme(request) == "https", httponly=True, samesite="strict")
    response.delete_cookie(LEGACY_COOKIE, path="/ui")
    return response


@router.get("", include_in_schema=False)
@router.get("/")
def home() -> Response:
    return RedirectResponse("/ui/fleet", status_code=303)


# -- fleet ------------------------------------------------------------------------------------------
# Pages are plain `def` routes: they run in the server's threadpool, where reading the store,
# waiting on the controller (`views.view`) and rendering a large page block no other request.
@router.get("/fleet", response_class=HTMLResponse)
def fleet(request: Request) -> HTMLResponse:
    who = _who(request)
    service = request.app.state.service
    all_nodes = nodes.node_list(request, who)
    layout: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for n in all_nodes:
        layout[f"{n['site']} / {n['fabric']}"][n["leaf"]].append(n)
    states = Counter(n["state"] for n in all_nodes)
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for n in all_nodes:
        by_type[n["gpu_type"] or "none"][0] += n["gpus"]
        by_type[n["gpu_type"] or "none"][1] += n["gpus_free"]
    fl = service.fleet
    kw: dict[str, float] = defaultdict(float)
    for n in fl.nodes:
        kw[fl.fabrics[fl.leaves[n.leaf].fabric].site] += n.it_kw
    sites = [{"name": s.name, "kind": s.kind, "it_mw": s.it_mw, "pue": s.pue, "drawn_mw": kw[s.name] / 1000}
             for s in fl.sites]
    return _page(request, "fleet.html", who, layout=layout, states=states, by_type=dict(by_type), sites=sites,
                 total=len(all_nodes))


@router.get("/nodes/{name}", response_class=HTMLResponse)
def node(name: str, request: Request) -> HTMLResponse:
    who = _who(request)
    if name not in request.app.state.service.controller.node_ids:
        return _missing(request, who, f"no node {name[:255]!r}")
    try:
        detail = nodes.get_node(name, request, who)
    except (NeocloudError, HTTPException):
        return _missing(request, who, f"no node {name!r}")
    return _page(request, "node.html", who, node=detail)


# -- work -------------------------------------------------------------------------------------------
QUEUE_SHOWN = 50  # queued jobs the jobs page lists (and asks why they wait), every time it refreshes
RUNNING_SHOWN = 500
RECENT_SHOWN = 50
EVENTS_SHOWN = 200  # a job's newest events its page shows


def _work(request: Request, who: Principal) -> dict[str, Any]:
    """The jobs page's tables: the head of the queue in one controller turn, then two statements."""
    page, total = views.view(request, jobs.queue_reader(who, QUEUE_SHOWN, count=True))
    controller = request.app.state.service.controller
    queue = jobs.queue_entries(page, controller.clock(), controller.forecasts)
    running = jobs.list_jobs(request, who, state="RUNNING", limit=RUNNING_SHOWN + 1)
    recent = jobs.list_jobs(request, who, limit=RECENT_SHOWN)
    return {"queue": queue, "queued": total, "running": running[:RUNNING_SHOWN],
            "more_running": len(running) > RUNNING_SHOWN, "recent": recent}


@router.get("/jobs", response_class=HTMLResponse)
def work(request: Request, fragment: bool = False) -> HTMLResponse:
    who = _who(request)
    context = _work(request, who)
    if fragment:
        return _page(request, "jobs_tables.html", who, **context)
    return _page(request, "jobs.html", who, sample=SAMPLE, error="", spec=SAMPLE, **context)


@router.post("/jobs")
def submit(request: Request, spec: Annotated[str, Form(max_length=200_000)],
           csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    who = _who(request, csrf)
    try:
        tenant, body = jobs.submission(request, JobSpec.model_validate(_yaml(spec) or {}), who)
        row = views.wait(request.app.state.service.controller.submit(tenant, body))
    except (ValidationError, HTTPException, NeocloudError) as e:  # parse_yaml's errors are NeocloudErrors
        return _page(request, "jobs.html", who, status=422, sample=SAMPLE, error=_message(e), spec=_shown(spec),
                     **_work(request, who))
    return RedirectResponse(f"/ui/jobs/{row.id}", status_code=303)


def _yaml(text: str) -> Any:
    """A form's YAML, without aliases; refused, like the API refuses it, if it holds a lone
    surrogate (from a "\\ud800" escape), which no UTF-8 store can hold."""
    try:
        value = parse_yaml(text, "the form", aliases=False)
    except RecursionError:
        raise NeocloudError("the YAML is nested too deeply") from None
    try:
        json.dumps(value, default=str, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise NeocloudError("the text holds a lone surrogate (a \\ud800-\\udfff escape): not valid text") from None
    except RecursionError:
        raise NeocloudError("the YAML is nested too deeply") from None
    return value


def _shown(text: str) -> str:
    """A form's text to put back in the page for fixing, valid UTF-8 whatever it held."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _message(e: Exception) -> str:
    """What to fix, in one line, whichever layer refused."""
    if isinstance(e, HTTPException):
        detail = e.detail
        if isinstance(detail, list):  # FastAPI's validation errors
            return "; ".join(f"{'.'.join(map(str, x.get('loc', ()))) or 'spec'}: {x.get('msg', '')}"
                             if isinstance(x, dict) else str(x) for x in detail)
        return _shown(str(detail))
    if isinstance(e, ValidationError):
        return _shown("; ".join(f"{'.'.join(map(str, x['loc'])) or 'spec'}: {x['msg']}"
                                for x in e.errors(include_url=False)))
    return _shown(str(e))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(job_id: str, request: Request) -> HTMLResponse:
    return _job(job_id, request, "job.html")


@router.get("/jobs/{job_id}/live", response_class=HTMLResponse)
def job_live(job_id: str, request: Request) -> HTMLResponse:
    """The parts of a job's page that move: its state, events and log tail."""
    return _job(job_id, request, "job_live.html")


def _job(raw_id: str, request: Request, template: str) -> HTMLResponse:
    who = _who(request)
    job_id = _id(raw_id)
    if job_id is None:
        return _missing(request, who, f"no job {raw_id[:40]!r}")
    try:
        row = jobs.own_job(request, who, job_id)
    except HTTPException:
        return _missing(request, who, f"no job {job_id}")
    log = ""
    if row.attempts:  # the tail of rank 0's output
        try:
            size = file_size(request.app.state.service.backend.log_path(job_id, 0, "stdout"))
        except OSError:  # not a log the backend wrote: nothing to show
            size = 0
        log = jobs.log_chunk(request, row, 0, "stdout", max(size - LOG_TAIL, 0), LOG_TAIL).text
    events = jobs.latest_events(request, job_id, EVENTS_SHOWN)
    controller = request.app.state.service.controller
    run, run_error = None, None
    if template == "job.html" and controller.tracker is not None and row.tracking_run is not None:
        try:  # the run's metrics, drawn once: the live part of the page does not ask the tracking server
            run = tracking.run_metrics(controller.tracker, row.id, row.tracking_run)
        except NeocloudError as e:
            run_error = str(e)
    return _page(request, template, who, job=jobs.job_out(row, controller.forecasts, controller.clock()), events=events,
                 log=log, run=run, run_error=run_error,
                 run_json=_json({k: [p.model_dump() for p in v] for k, v in run.metrics.items()}) if run else "{}")


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, request: Request, csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    who = _who(request, csrf)
    number = _id(job_id)
    if number is None:
        return _missing(request, who, f"no job {job_id[:40]!r}")
    try:
        views.wait(request.app.state.service.controller.cancel(number, who.tenant))
    except (HTTPException, NeocloudError):
        return _missing(request, who, f"no job {number}")
    return RedirectResponse(f"/ui/jobs/{number}", status_code=303)


# -- performance, business, capacity, twin -----------------------------------------------------------
BUCKETS = 60


@router.get("/performance", response_class=HTMLResponse)
def performance(request: Request, hours: Annotated[float, Query(allow_inf_nan=False)] = 6.0) -> HTMLResponse:
    """GPUs allocated over time (from the metered attempts and the running jobs), goodput by tenant,
    fragmentation and decisions now."""
    who = _who(request)
    service = request.app.state.service
    now = service.controller.clock()
    hours = max(min(hours, 24 * 31), 0.1)
    t0 = now - hours * 3600
    step = (now - t0) / BUCKETS
    with service.sessions() as s:
        allocated = _spread(s.execute(_allocated(who, t0, now, step)).all(), step)
    all_nodes = nodes.node_list(request, who)
    total = sum(n["gpus"] for n in all_nodes) or 1
    free = sum(n["gpus_free"] for n in all_nodes)
    stranded = sum(n["gpus_free"] for n in all_nodes
                   if 0 < n["gpus_free"] < n["gpus"] and n["state"] in ("MIXED", "IDLE"))
    series = {"t": [t0 + (i + 1) * step for i in range(BUCKETS)], "allocated": allocated, "total": total}
    return _page(request, "performance.html", who, series=_json(series), hours=hours,
                 per_tenant=goodput.tenant_goodput(request, who, None), total=total, free=free,
                 fragmentation=stranded / free if free else 0.0, decisions=service.controller.sched.decisions,
                 uptime=max(now - service.controller.started_at, 1e-9))


def _allocated(who: Principal, t0: float, now: float, step: float) -> Select:
    """The metered attempts and the running jobs held within [t0, now), grouped by the buckets their
    start and end fall in: GPUs, and GPU-seconds from t0 to their starts and to their ends. One
    statement, at most BUCKETS**2 / 2 rows however many attempts there are."""
    spans = [select(UsageRow.gpus.label("gpus"), UsageRow.start_at.label("a"), UsageRow.end_at.label("b"))
             .where(UsageRow.end_at > t0, UsageRow.start_at < now),
             select(JobRow.gpus, JobRow.started_at, literal(now, Float)).where(JobRow.state == "RUNNING",
                                                                                JobRow.started_at < now)]
    if not who.admin:
        spans = [spans[0].where(UsageRow.tenant == who.tenant), spans[1].where(JobRow.tenant == who.tenant)]
    held = union_all(*spans).subquery()
    a = case((held.c.a > t0, held.c.a - t0), else_=0.0)  # from t0, so that sums keep their precision
    b = case((held.c.b < now, held.c.b - t0), else_=now - t0)
    first, last = goodput.Floor(a / step), goodput.Floor(b / step)
    return select(first, last, func.sum(held.c.gpus), func.sum(held.c.gpus * a), func.sum(held.c.gpus * b)) \
        .where(b > a).group_by(first, last)


def _spread(groups: Sequence[Any], step: float) -> list[float]:
    """The average GPUs held in each bucket, from `_allocated`'s groups: a group's GPUs hold every
    bucket between its first and last whole, and those two in part."""
    held = [0.0] * BUCKETS
    for first, last, gpus, gpu_s_to_start, gpu_s_to_end in groups:
        i, j = min(int(first), BUCKETS - 1), min(int(last), BUCKETS - 1)
        if i == j:
            held[i] += gpu_s_to_end - gpu_s_to_start
            continue
        held[i] += gpus * (i + 1) * step - gpu_s_to_start
        held[j] += gpu_s_to_end - gpus * j * step
        for k in range(i + 1, j):
            held[k] += gpus * step
    return [max(x, 0.0) / step for x in held]


def _guarantees(request: Request, who: Principal) -> list[dict[str, Any]]:
    now = views.view(request, lambda sched: sched.guarantees())
    return [{"tenant": t, **g} for t, g in now.items() if who.admin or t == who.tenant]


@router.get("/business", response_class=HTMLResponse)
def business(request: Request) -> HTMLResponse:
    """Contracts, guarantees, this month's invoices so far and the backlog: one controller turn and
    five statements, however many tenants there are."""
    who = _who(request)
    guarantees = _guarantees(request, who)
    now = request.app.state.service.controller.clock()
    this_month = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m")
    t0, t1 = month(this_month)
    books = billing.Books.read(request, None if who.admin else who.tenant, t0, t1)
    contracts = [billing.contract_out(r) for r in books.contracts if r.valid_to is None]
    tenants = sorted({c.tenant for c in contracts}) if who.tenant is None else [who.tenant]
    backlog_now = backlog(books.all_contracts(), now) if who.admin else None
    return _page(request, "business.html", who, contracts=contracts, guarantees=guarantees,
                 invoices=books.invoices(tenants, t0, t1), backlog=backlog_now, backlog_json=_json(backlog_now or {}),
                 month=this_month)


@router.get("/capacity", response_class=HTMLResponse)
def capacity(request: Request) -> HTMLResponse:
    who = _who(request)
    example = EXAMPLES / "capacity" / "pipeline.yaml"
    text = example.read_text() if example.is_file() else ""
    return _page(request, "capacity_page.html", who, plan=None, data="{}", pipeline=text, error="")


@router.post("/capacity", response_class=HTMLResponse)
def capacity_plan(request: Request, pipeline: Annotated[str, Form(max_length=1_000_000)],
                  runs: Annotated[int, Form(ge=100, le=50_000)] = 5000,
                  csrf: Annotated[str, Form(max_length=128)] = "") -> HTMLResponse:
    """The buildout plan's fan chart against the target and the contracted power (admin)."""
    who = _who(request, csrf)
    if not who.admin:
        return _page(request, "refused.html", who, status=403,
                     what="capacity plans are the operator's: log in with the admin token")
    from neocloud.capacity.montecarlo import simulate
    from neocloud.capacity.plan import summarise
    from neocloud.capacity.schema import pipeline_from_dict

    try:
        p = pipeline_from_dict(_yaml(pipeline), "pipeline")
    except NeocloudError as e:
        return _page(request, "capacity_page.html", who, status=422, plan=None, data="{}", pipeline=_shown(pipeline),
                     error=_message(e))
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
def twin_run(request: Request, trace: Annotated[str, Form(max_length=255)],
             fleet_file: Annotated[str, Form(max_length=255)], policy: Annotated[str, Form(max_length=64)],
             placement: Annotated[str, Form(max_length=64)] = "neocloud",
             csrf: Annotated[str, Form(max_length=128)] = "") -> Response:
    """Replay a trace through the twin (the same scheduler) and keep the report beside the last one."""
    who = _who(request, csrf)
    from neocloud.fleet.loader import load_fleet
    from neocloud.sim.engine import simulate
    from neocloud.sim.traces import load_trace

    reports = request.app.state.twin_reports
    if trace not in _traces() or fleet_file not in _fleets():
        return _page(request, "twin.html", who, status=422, reports=reports,
                     error="pick a trace and a fleet from the lists", traces=_traces(), fleets=_fleets())
    try:
        with TWIN_LOCK:  # one replay at a time: it is CPU-bound
            with as_file(EXAMPLES / "fleets" / fleet_file) as fleet_path, \
                    as_file(EXAMPLES / "traces" / trace) as trace_path:
                report = simulate(load_fleet(fleet_path), load_trace(trace_path), policy=policy,
                                  placement=placement).to_dict()
    except NeocloudError as e:
        return _page(request, "twin.html", who, status=422, reports=reports, error=_message(e), traces=_traces(),
                     fleets=_fleets())
    reports.append({"trace": trace, "fleet": fleet_file, **report})
    del reports[:-2]
    return RedirectResponse("/ui/twin", status_code=303)


def _traces() -> list[str]:
    return _examples("traces", ".csv")


def _fleets() -> list[str]:
    return _examples("fleets", ".yaml")


def _examples(kind: str, suffix: str) -> list[str]:
    """The names of the shipped examples of one kind (a folder of examples/)."""
    folder = EXAMPLES / kind
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(suffix) and p.is_file()) if folder.is_dir() else []
