"""MLflow through neocloud: `/v1/tracking` is a tenant's MLFLOW_TRACKING_URI, where its own token
(or, inside a job, the job's MLFLOW_TRACKING_TOKEN) reaches its own experiment's runs and nothing
else (tracking/access.py says what passes); and a job's metrics, as its page and `neocloud job ID
--metrics` show them."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from neocloud.api.auth import Principal, authenticate, check_rate, note_failure
from neocloud.api.jobs import Caller, JobId, own_job
from neocloud.api.schemas import JobMetrics, MetricPoint
from neocloud.control.tracking import TOKEN, Tracker
from neocloud.tracking.access import Call, Denied, read
from neocloud.tracking.mlflow import TrackingError, experiment_name

router = APIRouter(tags=["tracking"])
METHODS = ["GET", "POST", "PUT", "DELETE"]
PASSED_HEADERS = ("content-type", "accept", "content-encoding")  # never the caller's credentials
ANSWER_HEADERS = ("content-type", "content-encoding", "content-disposition", "cache-control", "etag", "last-modified")
KEYS_SHOWN = 20  # a job's metrics shown at most


def tracker(request: Request) -> Tracker:
    found: Tracker | None = request.app.state.service.controller.tracker
    if found is None:
        raise HTTPException(404, "experiment tracking is off on this server: its operator starts it with "
                                 "`neocloud up --tracking` (or --tracking-uri URL)")
    return found


def _denied(e: Denied) -> JSONResponse:
    return JSONResponse({"error_code": e.code, "message": str(e)}, status_code=e.status)


def _caller(request: Request, found: Tracker) -> Principal:
    """The tenant calling: by its token, or by a running job's tracking token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token.startswith(TOKEN):
        job = found.job_of(token)
        running = None if job is None else request.app.state.service.controller.sched.running.get(str(job))
        if running is None:
            check_rate(request)
            note_failure(request)
            raise HTTPException(401, "this tracking token's job is not running: a job's MLFLOW_TRACKING_TOKEN "
                                     "holds while it runs; from elsewhere, use your tenant's token",
                                headers={"WWW-Authenticate": "Bearer"})
        return Principal(running.job.tenant)
    return authenticate(request, None)


class Runs:
    """Which experiment each run is in (runs never move), asked of the tracking server once."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._of: OrderedDict[str, str] = OrderedDict()

    async def experiment(self, http: httpx.AsyncClient, run: str) -> str | None:
        if (found := self._of.get(run)) is not None:
            return found
        r = await http.get("api/2.0/mlflow/runs/get", params={"run_id": run})
        if r.status_code != 200:
            return None
        found = str(r.json()["run"]["info"]["experiment_id"])
        self._of[run] = found
        while len(self._of) > self.size:
            self._of.popitem(last=False)
        return found


async def _check(request: Request, found: Tracker, who: Principal, call: Call) -> None:
    """Denied unless everything the call names is the tenant's (the admin's may name anything)."""
    if who.tenant is None:
        return
    name = experiment_name(who.tenant)
    if call.names - {name}:
        raise Denied(f"no experiment {sorted(call.names - {name})[0]!r}: yours is {name!r}",
                     "RESOURCE_DOES_NOT_EXIST", 404)
    try:
        own = await asyncio.to_thread(found.experiment, who.tenant)
    except TrackingError as e:
        raise Denied(str(e), "TEMPORARILY_UNAVAILABLE", 503) from None
    if call.experiments - {own}:
        raise Denied(f"no experiment {sorted(call.experiments - {own})[0]}: yours is {own} ({name})",
                     "RESOURCE_DOES_NOT_EXIST", 404)
    http, runs = _http(request, found)
    for run in sorted(call.runs):
        try:
            found_in = await runs.experiment(http, run)
        except httpx.HTTPError as e:
            raise Denied(f"the tracking server did not answer ({type(e).__name__})", "TEMPORARILY_UNAVAILABLE",
                         503) from None
        if found_in != own:
            raise Denied(f"no run {run[:64]!r} in your experiment", "RESOURCE_DOES_NOT_EXIST", 404)


def _http(request: Request, found: Tracker) -> tuple[httpx.AsyncClient, Runs]:
    state = request.app.state
    if getattr(state, "tracking_http", None) is None:
        state.tracking_http, state.tracking_runs = found.upstream.async_client(), Runs()
    return state.tracking_http, state.tracking_runs


async def close(state: Any) -> None:
    """Close the proxy's connections (at the server's stop)."""
    if (http := getattr(state, "tracking_http", None)) is not None:
        with contextlib.suppress(Exception):
            await http.aclose()


async def _small(request: Request) -> bytes:
    """A call's JSON body, read whole: only an artifact's bytes may be larger than the API's limit."""
    limit = request.app.state.service.max_body_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Denied(f"a tracking call's body may hold {limit} bytes at most; log fewer metrics at a time",
                         "RESOURCE_LIMIT_EXCEEDED", 413)
    return bytes(body)


@router.api_route("/v1/tracking/{path:path}", methods=METHODS, include_in_schema=False)
async def proxy(path: str, request: Request) -> Response:
    found = tracker(request)
    who = _caller(request, found)
    try:
        body = b"" if request.method in ("PUT", "GET", "DELETE") else await _small(request)
        call = read(request.method, path, request.url.query, body)
        await _check(request, found, who, call)
    except Denied as e:
        return _denied(e)
    http, _ = _http(request, found)
    headers = {k: v for k, v in request.headers.items() if k.lower() in PASSED_HEADERS}
    sent = request.stream() if call.body is None else call.body
    upstream = http.build_request(request.method, call.path, params=call.query, content=sent, headers=headers)
    try:
        answer = await http.send(upstream, stream=True)
    except httpx.HTTPError as e:
        return _denied(Denied(f"the tracking server did not answer ({type(e).__name__})", "TEMPORARILY_UNAVAILABLE",
                              503))
    return StreamingResponse(answer.aiter_raw(), status_code=answer.status_code,
                             headers={k: v for k, v in answer.headers.items() if k.lower() in ANSWER_HEADERS},
                             background=BackgroundTask(answer.aclose))


@router.get("/v1/jobs/{job_id}/metrics", response_model=JobMetrics,
            responses={404: {"description": "No such job, no tracking, or no run yet"}})
def job_metrics(job_id: JobId, request: Request, who: Caller) -> JobMetrics:
    """The job's run in its tenant's MLflow experiment: each metric's points, and a link to the run."""
    row = own_job(request, who, job_id)
    found = tracker(request)
    if row.tracking_run is None:
        raise HTTPException(404, f"job {job_id} has no run yet: it is made when the job first starts")
    try:
        return run_metrics(found, row.id, row.tracking_run)
    except TrackingError as e:
        raise HTTPException(503, f"{e}; try again shortly") from None


def run_metrics(found: Tracker, job_id: int, run_id: str) -> JobMetrics:
    """A job's run as the tracking server has it: its tags and every point of its metrics."""
    run = found.mlflow.run(run_id)
    data = run.get("data", {})
    keys = sorted({m["key"] for m in data.get("metrics", [])}, key=lambda k: (k.startswith("neocloud."), k))
    metrics = {k: [MetricPoint(step=int(p.get("step", 0)), value=float(p["value"]), timestamp=int(p["timestamp"]) / 1000)
                   for p in found.mlflow.history(run_id, k)] for k in keys[:KEYS_SHOWN]}
    info = run["info"]
    experiment = str(info["experiment_id"])
    return JobMetrics(job_id=job_id, run_id=info["run_id"], experiment_id=experiment, status=info.get("status", ""),
                      url=found.run_url(experiment, info["run_id"]), metrics=metrics,
                      tags={t["key"]: t["value"] for t in data.get("tags", []) if not t["key"].startswith("mlflow.")})
