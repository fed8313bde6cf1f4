"""`neocloud up`: start the control plane."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from neocloud.cli.main import app, err
from neocloud.client import DEFAULT_DATA_DIR, DEFAULT_SERVER
from neocloud.client import data_dir as default_data_dir


@app.command()
def up(
    data_dir: Annotated[Optional[Path], typer.Option(help="Where the database, logs and admin token live "
                                                        "(default: NEOCLOUD_DATA_DIR or ~/.neocloud).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8420,
    fleet: Annotated[Optional[Path], typer.Option(help="Fleet YAML (default: this host, or one emulated 8-GPU node).")] = None,
    backend: Annotated[str, typer.Option(help="Where jobs run: local (processes on this host), slurm (the cluster SLURM_CONF "
                                                     "names), ray (the cluster at RAY_ADDRESS) or emulated (nowhere: "
                                                     "each attempt of a job lasts its estimated_duration, default 60 s, "
                                                     "on the --fleet's nodes, then exits 0).")] = "local",
    spares_per_fabric: Annotated[int, typer.Option(
        min=0, help="Idle nodes held back in each fabric for jobs whose nodes fail.")] = 0,
    check_every: Annotated[float, typer.Option(
        min=0, help="Seconds between active checks of each idle node (0: only nodes in burn-in are checked).")] = 3600,
    check_command: Annotated[Optional[str], typer.Option(
        help="The active check run on a node (default: neocloud node check --quick --json).")] = None,
    only_tenant: Annotated[str, typer.Option(
        help="Where the backend cannot keep tenants apart (a Ray cluster; no root or no bubblewrap here), "
             "the one tenant it serves.")] = "default",
    trust_tenants: Annotated[bool, typer.Option(
        help="Serve every tenant even where the backend cannot keep them apart: they trust each other.")] = False,
    jobs_dir: Annotated[Optional[Path], typer.Option(
        help="Where jobs' logs, work and checkpoint directories live (default: the data directory); for "
             "Slurm, a filesystem every node mounts and every tenant's user can reach.")] = None,
    sandbox: Annotated[bool, typer.Option(
        help="Run each local job in its sandbox, as its tenant's user (--no-sandbox: plain processes of the "
             "server's user, for one tenant or tenants that trust each other).")] = True,
    gpu_devices: Annotated[Optional[Path], typer.Option(
        help="Where the GPUs' device files are, nvidia0... (default /dev): on this machine for the local "
             "backend, on every node for jobs in images on Slurm.")] = None,
    database_url: Annotated[Optional[str], typer.Option(
        help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: NEOCLOUD_DATABASE_URL, else SQLite "
             "in the data directory).")] = None,
    max_body_bytes: Annotated[int, typer.Option(
        min=1024, help="Largest request body accepted (default 2 MiB); a larger one is refused (413) unread.")]
        = 2 * 1024 * 1024,
    tracking: Annotated[bool, typer.Option(
        help="Run an MLflow tracking server (pip install 'neocloud[tracking]'), its store in the data directory: "
             "every job gets a run of its own in its tenant's experiment.")] = False,
    tracking_uri: Annotated[Optional[str], typer.Option(
        help="Track jobs on the MLflow server at this URL instead (one of yours, which only neocloud should reach).")]
        = None,
    tracking_ui: Annotated[Optional[str], typer.Option(
        help="Where people open the tracking server's UI, for links to a job's run (default: --tracking-uri).")]
        = None,
    public_url: Annotated[Optional[str], typer.Option(
        help="The URL jobs and clients reach this server at, e.g. behind TLS (default http://HOST:PORT): jobs "
             "get it as their MLFLOW_TRACKING_URI.")] = None,
) -> None:
    """Start the control plane: API, scheduler and backend, on SQLite and local processes by default."""
    from neocloud.api.server import open_service, serve

    directory = default_data_dir(data_dir)
    service = open_service(directory, database=database_url, fleet_path=fleet, backend=backend,
                           spares_per_fabric=spares_per_fabric, check_every_s=check_every,
                           check_command=check_command, only_tenant=only_tenant, trust_tenants=trust_tenants,
                           gpu_devices=gpu_devices, jobs_dir=jobs_dir, sandbox=sandbox, tracking=tracking,
                           tracking_uri=tracking_uri, tracking_ui=tracking_ui)
    service.max_body_bytes = max_body_bytes
    token = "NEOCLOUD_ADMIN_TOKEN" if os.environ.get("NEOCLOUD_ADMIN_TOKEN") else str(directory / "admin.token")
    err.print(f"neocloud up: http://{host}:{port} (dashboard at /ui, API docs at /docs) | fleet {service.fleet.name}: "
              f"{len(service.fleet.nodes)} node(s), {service.fleet.total_gpus} GPU(s) | backend {backend} | "
              f"data {directory} | admin token in {token}", highlight=False, markup=False)
    if service.controller.tracker is not None:
        where = f"MLflow in {directory / 'tracking'}" if tracking else f"MLflow at {tracking_uri}"
        err.print(f"tracking: {where}; every job gets a run, reached through {public_url or f'http://{host}:{port}'}"
                  "/v1/tracking", highlight=False, markup=False, soft_wrap=True)
    err.print(f"log in from any shell: {_login_hint(host, port, directory, token)}", highlight=False, markup=False,
              soft_wrap=True)  # one line, to copy whole, however narrow the terminal
    try:
        serve(service, host, port, public_url)
    finally:  # the MLflow server it started, whatever stopped this one
        if service.tracking is not None:
            service.tracking.stop()


def _login_hint(host: str, port: int, directory: Path, token: str) -> str:
    """The `neocloud login` that saves this server and its admin token for later commands."""
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{f'[{local}]' if ':' in local else local}:{port}"
    args = "" if url == DEFAULT_SERVER else f" --server {url}"
    if token == "NEOCLOUD_ADMIN_TOKEN":
        return f"neocloud login{args} --token \"$NEOCLOUD_ADMIN_TOKEN\""
    if directory != DEFAULT_DATA_DIR.expanduser():  # another shell looks there (without NEOCLOUD_DATA_DIR)
        args += f" --data-dir {directory}"
    return f"neocloud login{args}"
