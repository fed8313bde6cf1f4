"""`neocloud up`: the data directory, the store, the backend, the controller and the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ExceptionHandler

from neocloud.api import (
    admin,
    auth,
    billing,
    capacity,
    code,
    gateway,
    goodput,
    guards,
    jobs,
    nodes,
    service_keys,
    services,
    tracking,
)
from neocloud.api.auth import MUTATING, FailureLimit, identify, unrecorded
from neocloud.backends import Backend, make_backend
from neocloud.backends.code import CodeStore
from neocloud.control.commands import Conflict, NotFound, Refused, digest
from neocloud.control.controller import CHECK_COMMAND, DEFAULT_TENANT, Controller, Unavailable
from neocloud.control.tracking import Tracker
from neocloud.errors import NeocloudError, SchedulingError
from neocloud.fleet.loader import default_fleet, load_fleet
from neocloud.model.catalog import gpu_type
from neocloud.model.fleet import Fabric, Fleet, Leaf, Node, Site
from neocloud.store.database import connect, database_url, sessions
from neocloud.store.leadership import Leadership
from neocloud.tracking.mlflow import Upstream
from neocloud.tracking.server import MLflowServer
from neocloud.web import apidocs, dashboard, services_page

log = logging.getLogger("neocloud.server")
TRACKING_UPLOAD = 1 << 30  # an artifact a job logs through /v1/tracking (a model's weights): 1 GiB at most


@dataclass
class Service:
    data_dir: Path
    fleet: Fleet
    sessions: sessionmaker[Session]
    backend: Backend
    controller: Controller
    admin_digest: str
    lock: IO[str]  # the data directory's
    tracking: MLflowServer | None = None  # the MLflow server this one started (--tracking), stopped with it
    max_body_bytes: int = guards.MAX_BODY_BYTES  # a larger request body is refused (413) unread


def open_service(data_dir: Path, *, database: str | None = None, fleet_path: Path | None = None,
                 backend: str = "local", spares_per_fabric: int = 0, check_every_s: float = 0.0,
                 check_command: str | None = None, only_tenant: str = DEFAULT_TENANT, trust_tenants: bool = False,
                 gpu_devices: Path | None = None, jobs_dir: Path | None = None, sandbox: bool = True,
                 tracking: bool = False, tracking_uri: str | None = None, tracking_ui: str | None = None) -> Service:
    """Everything but the HTTP server: ready to serve once its controller starts.

    A backend that cannot keep tenants apart serves `only_tenant`, unless they trust each other.
    Tracking: an MLflow server of its own (`tracking`), or the one at `tracking_uri`."""
    os.umask(0o077)  # the store, the token and the logs are the server's: private unless made otherwise
    data_dir = data_dir.expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(data_dir)
    files = (jobs_dir or data_dir).expanduser()
    files.mkdir(parents=True, exist_ok=True)
    the_backend = make_backend(backend, data_dir, files, gpu_devices=gpu_devices, sandbox=sandbox)
    if the_backend.isolation is not None:
        log.warning("the %s backend cannot keep tenants apart (%s): %s", backend, the_backend.isolation,
                    "its tenants trust each other (--trust-tenants)" if trust_tenants
                    else f"it serves tenant {only_tenant!r} only")
    if fleet_path:
        fleet = load_fleet(fleet_path)
    else:
        fleet = the_backend.inventory() if hasattr(the_backend, "inventory") else local_fleet()
    engine = connect(database_url(data_dir, database))
    factory = sessions(engine)
    admin = admin_token(data_dir)
    server = MLflowServer(data_dir) if tracking else None
    tracker = _tracker(server, tracking_uri, tracking_ui, admin)
    controller = Controller(fleet, factory, the_backend, spares_per_fabric=spares_per_fabric,
                            checkpoints=files / "checkpoints", code=CodeStore(data_dir / "code"),
                            check_every_s=check_every_s,
                            only_tenant=None if trust_tenants or the_backend.isolation is None else only_tenant,
                            leadership=Leadership(engine), check_command=check_command or CHECK_COMMAND,
                            tracker=tracker)
    return Service(data_dir, fleet, factory, the_backend, controller, digest(admin), lock, tracking=server)


def _tracker(server: MLflowServer | None, uri: str | None, ui: str | None, admin: str) -> Tracker | None:
    """The tracker of jobs' runs, on the MLflow server started here or the one at `uri`; its tokens
    are keyed by the admin token, so every server of a store (and a restarted one) takes them."""
    if server is not None and uri:
        raise NeocloudError("--tracking starts an MLflow server of neocloud's own; --tracking-uri names one "
                            "of yours: give one of them")
    if server is None and not uri:
        return None
    if uri and not uri.startswith(("http://", "https://")):
        raise NeocloudError(f"--tracking-uri must be the http:// or https:// URL of an MLflow server, got {uri!r}")
    upstream = server.start() if server is not None else Upstream(uri.rstrip("/") if uri else "")
    key = hashlib.sha256(b"neocloud tracking tokens\0" + admin.encode()).digest()
    return Tracker(upstream, key, ui=ui or (uri if server is None else None))


def admin_token(data_dir: Path) -> str:
    """NEOCLOUD_ADMIN_TOKEN, else the one in DATA_DIR/admin.token, made (mode 600) at first start."""
    token = os.environ.get("NEOCLOUD_ADMIN_TOKEN", "").strip()
    if token:
        return token
    path = data_dir / "admin.token"
    if path.exists():
        return path.read_text().strip()
    token = "nca_" + secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def local_fleet() -> Fleet:
    """This host as one node: its NVIDIA GPUs if it has any, else 8 emulated H100s."""
    names = _nvidia_gpus()
    if not names:
        return default_fleet()
    try:
        gpu = gpu_type(names[0])
    except NeocloudError:
        gpu = next((gpu_type(k) for k in ("B200", "H200", "H100", "A100", "L40S", "A10", "T4") if k in names[0]),
                   gpu_type("H100"))
    return Fleet(name="local", sites=[Site("local")], fabrics=[Fabric("local", "local")],
                 leaves=[Leaf("local-l0", 0)], nodes=[Node(0, "local-0", gpu, len(names), 0)])


def _nvidia_gpus() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip().upper().replace("NVIDIA ", "") for line in out.splitlines() if line.strip()]


def _lock(data_dir: Path) -> IO[str]:
    f = open(data_dir / "server.lock", "a+")  # noqa: SIM115 - held for the server's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        raise NeocloudError(f"another neocloud server is using {data_dir} (pid {f.read().strip() or '?'}); "
                            "stop it or give --data-dir another directory") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def create_app(service: Service) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Off the event loop: recovery reads the whole store, and stopping joins the controller's thread.
        await asyncio.to_thread(service.controller.start)
        app.state.gateway = gateway.Gateway()
        try:
            yield
        finally:
            await app.state.gateway.close()
            await tracking.close(app.state)
            await asyncio.to_thread(service.controller.stop)
            if service.tracking is not None:
                await asyncio.to_thread(service.tracking.stop)

    # The documentation pages are apidocs' own: their scripts come from this server, not a CDN.
    app = FastAPI(title="neocloud", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="The control plane of a GPU cloud: jobs, nodes, tenants.")
    app.state.service = service
    app.state.auth_failures = FailureLimit()
    app.state.twin_reports = []  # the dashboard's last two twin runs, side by side
    for router in (jobs.router, goodput.router, nodes.router, nodes.rules_router, billing.router, capacity.router,
                   admin.router, admin.tokens_router, dashboard.router, apidocs.router, code.router,
                   services.router, service_keys.router, gateway.router, services_page.router, tracking.router):
        app.include_router(router)
    app.add_exception_handler(dashboard.Login, cast(ExceptionHandler, dashboard.login_redirect))

    @app.get("/healthz", tags=["service"])
    def healthz() -> JSONResponse:
        """ok (200); degraded, with what fails and for how long (200 while the store answers: the
        server still takes work); standby (503: another server leads, send work there); unavailable
        (503: the store fails)."""
        c = service.controller
        degraded = c.degraded.reasons()
        status = "unavailable" if "store" in degraded else "standby" if c.standby else \
            "degraded" if degraded else "ok"
        body = {"status": status, "degraded": degraded, "fleet": service.fleet.name,
                "gpus": service.fleet.total_gpus, "backend": service.backend.name}
        if c.standby:
            body["leader"] = c.leader()
        return JSONResponse(body, status_code=503 if status in ("unavailable", "standby") else 200)

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse, dependencies=[Depends(auth.admin)],
             responses={401: {"description": "No or unknown token"}, 403: {"description": "Admin only"}})
    def metrics() -> PlainTextResponse:
        """Prometheus metrics, for the admin token (`authorization: credentials_file` in the scrape config)."""
        c = service.controller
        with contextlib.suppress(NeocloudError, TimeoutError):  # a standby or a failing store: the rest still
            c.view(c.metrics.observe).result(timeout=5)
        return PlainTextResponse(generate_latest(c.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(NeocloudError)
    async def neocloud_error(request: Request, e: NeocloudError) -> JSONResponse:
        status = 404 if isinstance(e, NotFound) else 409 if isinstance(e, Conflict) else \
            403 if isinstance(e, Refused) else 422 if isinstance(e, SchedulingError) else \
            503 if isinstance(e, Unavailable) else 400
        return JSONResponse({"detail": str(e)}, status_code=status, headers={"retry-after": "1"} if status == 503
                            else None)

    @app.exception_handler(DBAPIError)
    async def store_error(request: Request, e: DBAPIError) -> JSONResponse:
        """A read that reached the store while it fails: unavailable for now, not a server error."""
        log.warning("store error on %s: %s", request.url.path, e.orig)
        return JSONResponse({"detail": f"the store is unavailable ({type(e.orig).__name__}); try again shortly"},
                            status_code=503, headers={"retry-after": "1"})

    app.add_exception_handler(RequestValidationError, cast(ExceptionHandler, guards.validation_error))
    app.add_middleware(guards.BodyLimit, max_bytes=service.max_body_bytes, larger={"/v1/code": code.MAX_UPLOAD,
                                                                                "/v1/tracking/": TRACKING_UPLOAD})
    app.add_middleware(AuditLog, service=service)
    app.add_middleware(guards.SecurityHeaders)
    app.add_middleware(gateway.FastPath, max_bytes=service.max_body_bytes)  # outermost: before all the above
    return app


class AuditLog:
    """Record every state-changing call: who, what, from where, and the answer.

    The entry is queued to the controller and committed with its next turn (milliseconds after
    the answer, batched with other work), so auditing does not double each call's round trips.
    """

    def __init__(self, app, service: Service) -> None:  # noqa: ANN001 - an ASGI app
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            return await self.app(scope, receive, send)

        async def record(message: dict) -> None:
            if message["type"] == "http.response.start":
                self._record(Request(scope), message["status"])
            await send(message)

        await self.app(scope, receive, record)

    def _record(self, request: Request, status: int) -> None:
        who = identify(request)
        if who is None:  # the dashboard's own forms, by their session
            who = dashboard.audit_principal(request)
        entry = {"actor": who.name if who else "anonymous", "method": request.method,
                 "path": request.url.path[:2048], "client": request.client.host if request.client else "",
                 "status": status, "detail": ""}
        self.service.controller.audit(entry).add_done_callback(unrecorded(entry))


def serve(service: Service, host: str, port: int, public_url: str | None = None) -> None:
    """Serve the API on host:port. `public_url`: where jobs and clients reach it (default: that
    address, loopback's for a wildcard), as the MLFLOW_TRACKING_URI jobs are given."""
    import uvicorn

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise NeocloudError(f"cannot listen on {host}:{port} ({e.strerror}); is another server there? "
                            "choose another --port or --host") from None

    if service.controller.tracker is not None:
        here = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
        service.controller.tracker.url = f"{(public_url or here).rstrip('/')}/v1/tracking"
    if service.controller.leadership is not None:  # told to clients that reach a standby
        service.controller.leadership.url = f"http://{host}:{port}"
    # No proxy headers: X-Forwarded-For from a local client (a job, say) would forge the address that
    # failed logins are limited by and the audit log records.
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=False)
