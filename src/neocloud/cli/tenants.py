"""Tenants, their tokens, and the audit log (admin)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from neocloud.cli.main import app, console, err
from neocloud.cli.options import Json, ProfileName, Server, Token, print_json, tenant_app, tokens_table
from neocloud.cli.options import client as _client
from neocloud.cli.options import when as _when


@tenant_app.command("list")
def tenants_list(as_json: Json = False, server: Server = None, token: Token = None,
                 profile: ProfileName = None) -> None:
    """Tenants, their tokens and active jobs."""
    found = _client(server, token, profile).tenants()
    if as_json:
        print_json(found)
        return
    table = Table("tenant", "created", "tokens", "active jobs")
    for t in found:
        table.add_row(t["name"], _when(t["created_at"]), str(t["tokens"]), str(t["jobs_active"]))
    console.print(table)


@tenant_app.command("create")
def tenants_create(name: str, server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Create a tenant."""
    _client(server, token, profile).create_tenant(name)
    console.print(f"tenant {name} created; make it a token with `neocloud tenants token {name}`")


@tenant_app.command("token")
def tenants_token(name: str, label: Annotated[str, typer.Option(help="A note to tell tokens apart.")] = "",
                  expires_in: Annotated[Optional[str], typer.Option(
                      help="Stop working after this long: seconds, or 90s, 30m, 2h, 30d (default: never).")] = None,
                  as_json: Json = False, server: Server = None, token: Token = None,
                  profile: ProfileName = None) -> None:
    """Make an API token for a tenant and print it (it is shown only this once); the tenant's user
    takes it with `neocloud login --token TOKEN`."""
    t = _client(server, token, profile).issue_token(name, label, expires_in)
    if as_json:
        print_json(t)
        return
    err.print(f"token {t['id']} for {name}, expires {_when(t['expires_at']) or 'never'}; its user saves it with "
              "`neocloud login --token TOKEN`", highlight=False, markup=False)
    print(t["token"])


@tenant_app.command("tokens")
def tenants_tokens(name: Annotated[Optional[str], typer.Argument(
                       help="The tenant (admin); default: the token's own tenant's.")] = None,
                   as_json: Json = False, server: Server = None, token: Token = None,
                   profile: ProfileName = None) -> None:
    """A tenant's tokens: id, label, when made, when they expire, revoked or not (never the secrets)."""
    found = _client(server, token, profile).tokens(name)
    if as_json:
        print_json(found)
        return
    console.print(tokens_table(found))


@tenant_app.command("revoke")
def tenants_revoke(token_id: Annotated[int, typer.Argument(help="The token's id (neocloud tenants tokens NAME).")],
                   server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Revoke a token: refused from now on."""
    t = _client(server, token, profile).revoke_token(token_id)
    console.print(f"token {t['id']} of {t['tenant']} revoked", highlight=False)


@app.command()
def audit(limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 100,
          as_json: Json = False, server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """The audit log, newest first: who called what, from where, and the answer (admin)."""
    found = _client(server, token, profile).audit(limit)
    if as_json:
        print_json(found)
        return
    table = Table("id", "when", "actor", "method", "path", "client", "status", "detail")
    for a in found:
        table.add_row(str(a["id"]), _when(a["at"]), a["actor"], a["method"], escape(a["path"]), a["client"],
                      str(a["status"]), escape(a["detail"]))
    console.print(table)
