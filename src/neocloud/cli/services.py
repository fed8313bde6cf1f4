"""Services: list, show, update, scale and stop them (`neocloud submit` creates one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from neocloud.cli.main import console, err
from neocloud.cli.options import (
    Json,
    ProfileName,
    Server,
    Token,
    describe_service,
    print_json,
    services_app,
    tokens_table,
    when,
)
from neocloud.cli.options import client as _client
from neocloud.cli.submission import read_submission, with_code

Tenant = Annotated[Optional[str], typer.Option(help="Whose service (admin token).")]


@services_app.callback()
def services_list(ctx: typer.Context, as_json: Json = False, tenant: Tenant = None, server: Server = None,
                  token: Token = None, profile: ProfileName = None) -> None:
    """The services running, their replicas and endpoints."""
    if ctx.invoked_subcommand is not None:
        return
    found = _client(server, token, profile).services(tenant)
    if as_json:
        print_json(found)
        return
    table = Table("service", "tenant", "ready", "wanted", "generation", "model", "endpoint")
    for s in found:
        table.add_row(s["name"], s["tenant"], str(s["ready"]), str(s["replicas"]), str(s["generation"]),
                      escape(s["model"] or ""), s["endpoint"])
    console.print(table)


@services_app.command("show")
def services_show(name: str, as_json: Json = False, tenant: Tenant = None, server: Server = None,
                  token: Token = None, profile: ProfileName = None) -> None:
    """A service and each of its replicas (its job, node, readiness, requests in flight)."""
    _print(_client(server, token, profile).service(name, tenant), as_json)


@services_app.command("update")
def services_update(spec: Annotated[Path, typer.Argument(help="The service's new spec (kind: service).")],
                    tenant: Tenant = None, as_json: Json = False, server: Server = None, token: Token = None,
                    profile: ProfileName = None) -> None:
    """Roll the service to a new spec: new replicas ready before the old ones stop."""
    body, code_dir, _ = read_submission(spec)
    c = _client(server, token, profile)
    body = with_code(body, code_dir, lambda archive: c.upload_code(archive, tenant))
    _print(c.update_service(body, tenant), as_json)


@services_app.command("scale")
def services_scale(name: str, replicas: Annotated[int, typer.Argument(min=0)], tenant: Tenant = None,
                   as_json: Json = False, server: Server = None, token: Token = None,
                   profile: ProfileName = None) -> None:
    """Set the number of replicas."""
    _print(_client(server, token, profile).scale_service(name, replicas, tenant), as_json)


@services_app.command("stop")
def services_stop(name: str, tenant: Tenant = None, as_json: Json = False, server: Server = None,
                  token: Token = None, profile: ProfileName = None) -> None:
    """Stop the service: its replicas finish the requests they carry, then stop."""
    _print(_client(server, token, profile).stop_service(name, tenant), as_json)


keys_app = typer.Typer(help="Service keys: tokens for those who call your services, and nothing else.",
                       no_args_is_help=True)
services_app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(service: Annotated[str, typer.Argument(help="The service it calls ('*': any of yours).")] = "*",
                label: Annotated[str, typer.Option(help="A note to tell keys apart.")] = "",
                expires_in: Annotated[Optional[str], typer.Option(
                    help="Stop working after this long: seconds, or 90s, 30m, 2h, 30d (default: never).")] = None,
                tenant: Tenant = None, as_json: Json = False, server: Server = None, token: Token = None,
                profile: ProfileName = None) -> None:
    """Make a key that calls the service through the gateway (and reaches nothing else of the API),
    and print it: it is shown only this once."""
    k = _client(server, token, profile).create_service_key(service, label, expires_in, tenant)
    if as_json:
        print_json(k)
        return
    err.print(f"service key {k['id']} of {k['tenant']} for {'any service' if service == '*' else service}, expires "
              f"{when(k['expires_at']) or 'never'}; send it as 'Authorization: Bearer KEY' to "
              f"/v1/services/{k['tenant']}/{'NAME' if service == '*' else service}/", highlight=False, markup=False)
    print(k["token"])


@keys_app.command("list")
def keys_list(tenant: Tenant = None, as_json: Json = False, server: Server = None, token: Token = None,
              profile: ProfileName = None) -> None:
    """Your service keys: id, service, label, when made, when they expire, revoked or not (never the secrets)."""
    found = _client(server, token, profile).service_keys(tenant)
    if as_json:
        print_json(found)
        return
    console.print(tokens_table(found))


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[int, typer.Argument(help="The key's id (neocloud services keys list).")],
                server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Revoke a key: the gateway refuses it from now on."""
    k = _client(server, token, profile).revoke_service_key(key_id)
    console.print(f"service key {k['id']} of {k['tenant']} revoked", highlight=False)


def _print(s: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(s)
        return
    console.print(describe_service(s), highlight=False, markup=False)
    if s["replica_list"]:
        table = Table("job", "state", "generation", "ready", "node", "address", "in flight")
        for r in s["replica_list"]:
            table.add_row(str(r["job"]), r["state"] + (" (draining)" if r["draining"] else ""), str(r["generation"]),
                          "yes" if r["ready"] else f"no: {r['problem']}" if r.get("problem") else "no", r["node"] or "",
                          r["address"] or "", str(r["in_flight"]))
        console.print(table)
