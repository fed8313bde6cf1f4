"""What the client commands share: the server and token options, the client they make, and the
command groups they hang in. Imports nothing of the commands, so any of them can be imported alone."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Optional

import typer

from neocloud.client import Client

node_app = typer.Typer(help="Operate on nodes: cordon, drain, move through their lifecycle, signal, check.",
                       no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants and their tokens (admin).", no_args_is_help=True)

Server = Annotated[Optional[str], typer.Option("--server", help="API URL, or several, comma-separated, of "
                                                                 "servers sharing one database: the one that "
                                                                 "leads is followed (default: NEOCLOUD_SERVER or "
                                                                 "http://127.0.0.1:8420).")]
Token = Annotated[Optional[str], typer.Option("--token", help="API token (default: NEOCLOUD_TOKEN, or the local "
                                                               "admin token).")]


def client(server: str | None, token: str | None) -> Client:
    return Client(server, token)


def when(t: float | None) -> str:
    return "" if t is None else dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
