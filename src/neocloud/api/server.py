"""`neocloud up`: the data directory, the store, the backend, the controller and the HTTP API."""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import shutil
import socket
import subprocess
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker

from neocloud.api import admin, billing, capacity, goodput, jobs, nodes
from neocloud.web import dashboard
from neocloud.api.auth import holder, identify
from neocloud.backends import Backend, make_backend
from neocloud.control.controller import Conflict, Controller, NotFound, digest
from neocloud.errors import NeocloudError, SchedulingError
from neocloud.fleet.loader import default_fleet, load_fleet
from neocloud.model.catalog import gpu_type
from neocloud.model.fleet import Fabric, Fleet, Leaf, Node, Site
from neocloud.store.database import connect, database_url, hold, sessions

log = logging.getLogger("neocloud.server")
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass
class Service:
    data_dir: Path
    fleet: Fleet
    sessions: sessionmaker[Session]
    backend: Backend
    controller: Controller
    admin_digest: str
    lock: IO[str]  # the data directory's
    db_lock: Connection | None  # the database's, on PostgreSQL


def open_service(data_dir: Path, *, database: str | None = None, fleet_path: Path | None = None,
                 backend: str = "local", spares_per_fabric: int = 0, check_every_s: float = 0.0,
                 check_command: str | None = None) -> Service:
    """Everything but the HTTP server: ready to serve once its controller starts."""
    data_dir = data_dir.expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(data_dir)
    the_backend = make_backend(backend, data_dir)
    if fleet_path:
        fleet = load_fleet(fleet_path)
    else:
        fleet = the_backend.inventory() if hasattr(the_backend, "inventory") else local_fleet()
    engine = connect(database_url(data_dir, database))
    db_lock = hold(engine)
    factory = sessions(engine)
    controller = Controller(fleet, factory, the_backend, spares_per_fabric=spares_per_fabric,
                            checkpoints=data_dir / "checkpoints", check_every_s=check_every_s,
                            **({"check_command": check_command} if check_command else {}))
    return Service(data_dir, fleet, factory, the_backend, controller, digest(admin_token(data_dir)), lock, db_lock)


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
    async def lifespan(app: FastAPI):  # noqa: ANN202
        service.controller.start()
        try:
            yield
        finally:
            service.controller.stop()

    app = FastAPI(title="neocloud", version="0.1.0", lifespan=lifespan,
                  description="The control plane of a GPU cloud: jobs, nodes, tenants.")
    app.state.service = service
    app.state.twin_reports = []  # the dashboard's last two twin runs, side by side
    for router in (jobs.router, goodput.router, nodes.router, nodes.rules_router, billing.router, capacity.router,
                   admin.router, dashboard.router):
        app.include_router(router)
    app.add_exception_handler(dashboard.Login, dashboard.login_redirect)

    @app.get("/healthz", tags=["service"])
    def healthz() -> JSONResponse:
        failed = service.controller.failed
        body = {"status": "failed" if failed else "ok", "reason": failed or "", "fleet": service.fleet.name,
                "gpus": service.fleet.total_gpus, "backend": service.backend.name}
        return JSONResponse(body, status_code=503 if failed else 200)

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(service.controller.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(NeocloudError)
    async def neocloud_error(request: Request, e: NeocloudError) -> JSONResponse:
        status = 404 if isinstance(e, NotFound) else 409 if isinstance(e, Conflict) else \
            422 if isinstance(e, SchedulingError) else 400
        return JSONResponse({"detail": str(e)}, status_code=status)

    app.add_middleware(AuditLog, service=service)
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
        if who is None and request.url.path.startswith("/ui/"):  # the dashboard's own forms
            who = holder(request, request.cookies.get(dashboard.COOKIE, ""))
        entry = {"actor": who.name if who else "anonymous", "method": request.method,
                 "path": request.url.path[:2048], "client": request.client.host if request.client else "",
                 "status": status, "detail": ""}
        self.service.controller.audit(entry).add_done_callback(
            lambda f: f.exception() and log.error("audit entry not recorded: %s", entry))


def serve(service: Service, host: str, port: int) -> None:
    import uvicorn

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise NeocloudError(f"cannot listen on {host}:{port} ({e.strerror}); is another server there? "
                            "choose another --port or --host") from None

    uvicorn.run(create_app(service), host=host, port=port, log_level="warning", access_log=False)
