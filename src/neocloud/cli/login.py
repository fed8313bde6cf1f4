"""`neocloud login`, `logout` and `whoami`: save a server and token once (after checking them
with a real call), and say which server, tenant and token a command would use, and from where."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import urlsplit

import typer

from neocloud.cli import profiles
from neocloud.cli.main import app, console
from neocloud.cli.options import GET_A_TOKEN, CliClient, Json, ProfileName, Server, Token, print_json
from neocloud.cli.profiles import Credentials
from neocloud.client import DEFAULT_SERVER, ApiError, Client, local_admin_token_path
from neocloud.errors import NeocloudError


def identify(c: Client) -> str | None:
    """Whose the client's token is: None for the admin, else its tenant (a 401 raises). Two
    reads any token may make: the tenant list answers only the admin, the token list a tenant."""
    try:
        c._call("GET", "/v1/tenants", params={"limit": 1})
        return None
    except ApiError as e:
        if e.status != 403:
            raise
    own = c._call("GET", "/v1/tokens", params={"limit": 1})
    if not own:
        raise NeocloudError(f"{c.server} took the token but lists no token of its tenant; is it a neocloud "
                            "server?")
    return str(own[0]["tenant"])


def _on_this_machine(servers: str) -> bool:
    """Whether every server named is this machine (loopback, or its own host name): only to such
    a server is the local admin token offered."""
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()}
    hosts = [urlsplit(u.strip()).hostname or "" for u in servers.split(",") if u.strip()]
    return bool(hosts) and all(h in names or h.startswith("127.") for h in hosts)


def _login_credentials(server: str | None, token: str | None, saved: profiles.Profile | None,
                       current: profiles.Profile | None, data_dir: Path | None = None) -> Credentials:
    """The server and token to log in with: the flags, the environment, the profile being logged
    into again (a new one: the current profile's server), and for a server on this machine, its
    admin token."""
    base = saved or current
    if server:
        servers, server_from = server, "--server"
    elif os.environ.get("NEOCLOUD_SERVER"):
        servers, server_from = os.environ["NEOCLOUD_SERVER"], "NEOCLOUD_SERVER"
    elif base:
        servers, server_from = base.server, f"profile {base.name!r}"
    else:
        servers, server_from = DEFAULT_SERVER, "the default"
    if token == "-":
        token = sys.stdin.readline().strip()
        if not token:
            raise NeocloudError("--token -: no token on standard input")
        found, token_from = token, "standard input"
    elif token:
        found, token_from = token, "--token"
    elif os.environ.get("NEOCLOUD_TOKEN"):
        found, token_from = os.environ["NEOCLOUD_TOKEN"], "NEOCLOUD_TOKEN"
    elif saved and saved.token and profiles.same_server(saved.server, servers):
        found, token_from = saved.token, f"profile {saved.name!r}"
    elif data_dir is not None:
        found, token_from = profiles.local_admin_token(data_dir)
        if not found:
            raise NeocloudError(f"no admin token in {local_admin_token_path(data_dir)}: is {data_dir} the data "
                                "directory `neocloud up` was given (its admin.token is readable by its user alone)?")
    elif _on_this_machine(servers) and profiles.local_admin_token()[0]:
        found, token_from = profiles.local_admin_token()
    else:
        raise NeocloudError(f"no token to log in to {servers.split(',')[0]} with: give --token T (or --token - to "
                            "read it from standard input), or on the server's machine --data-dir with its data "
                            "directory; a tenant's token comes from its operator (`neocloud tenants token TENANT` "
                            "as admin)")
    return Credentials(servers, server_from, found, token_from, saved.name if saved else None)


@app.command()
def login(server: Server = None,
          token: Annotated[Optional[str], typer.Option(
              "--token", help="The API token ('-' reads it from standard input; default: NEOCLOUD_TOKEN, the "
                              "profile's, or on the server's own machine its admin token).")] = None,
          profile: Annotated[Optional[str], typer.Option(
              "--profile", help="Save it under this name (default: NEOCLOUD_PROFILE, the current profile, "
                                "or 'default').")] = None,
          data_dir: Annotated[Optional[Path], typer.Option(
              help="On the server's machine, with no --token: take the admin token from this data directory "
                   "(the one `neocloud up --data-dir` was given; default: NEOCLOUD_DATA_DIR or ~/.neocloud).")]
          = None,
          show: Annotated[bool, typer.Option("--show", help="Only say what is in use (as `neocloud whoami`).")]
          = False) -> None:
    """Check a server and token with a real call, save them as a profile in the user's config
    directory (readable by the user alone) and make it current: later commands need no flag or
    NEOCLOUD_* variable."""
    if show:
        whoami(None, None, profile, False)
        return
    config = profiles.load()
    name = profiles.check_name(profile or os.environ.get("NEOCLOUD_PROFILE") or config.current
                               or profiles.DEFAULT_PROFILE)
    current = config.profiles.get(config.current) if config.current else None
    creds = _login_credentials(server, token, config.profiles.get(name), current, data_dir)
    try:
        with CliClient(creds) as c:
            tenant = identify(c)
    except ApiError as e:
        if e.status != 401:
            raise
        raise NeocloudError(f"{creds.server} refused the token from {creds.token_from} (unknown, expired or revoked), "
                            "so nothing was saved: a tenant's token comes from its operator (`neocloud tenants "
                            "token TENANT` as admin)") from None
    config.profiles[name] = profiles.Profile(name, creds.servers, creds.token or "")
    config.current = name
    path = profiles.save(config)
    who = "the admin" if tenant is None else f"tenant {tenant}"
    console.print(f"logged in to {creds.server} as {who} (token from {creds.token_from}); saved as profile "
                  f"{name!r} in {path}, now the current one", highlight=False, markup=False)


@app.command()
def logout(profile: Annotated[Optional[str], typer.Option(
               "--profile", help="Forget this profile (default: NEOCLOUD_PROFILE, or the current one).")] = None
           ) -> None:
    """Forget a saved login (the token stays valid on the server: `neocloud tenants revoke ID` ends it)."""
    config = profiles.load()
    name = profile or os.environ.get("NEOCLOUD_PROFILE") or config.current
    if name is None or name not in config.profiles:
        what = f"no profile {name!r}" if name else "no current profile"
        console.print(f"{what} in {profiles.config_path()}: nothing to forget", highlight=False, markup=False)
        return
    gone = config.profiles.pop(name)
    if config.current == name:
        config.current = None
    profiles.save(config)
    left = f"; profiles left: {', '.join(sorted(config.profiles))} (`neocloud login --profile NAME` picks one)" \
        if config.profiles else ""
    console.print(f"forgot profile {name!r} ({gone.server}){left}", highlight=False, markup=False)


@app.command()
def whoami(server: Server = None, token: Token = None, profile: ProfileName = None, as_json: Json = False) -> None:
    """Which server and tenant commands use, and where the server and the token come from (a flag,
    the environment, a profile, the local admin token)."""
    creds = profiles.resolve(server, token, profile)
    tenant: str | None = None
    refused = ""
    try:
        if not creds.token:
            refused = f"no token: {GET_A_TOKEN}"
        else:
            with CliClient(creds) as c:
                tenant = identify(c)
    except ApiError as e:
        if e.status != 401:
            raise
        refused = str(e)
    except NeocloudError as e:  # unreachable: what would be used is still worth saying
        refused = str(e)
    if as_json:
        print_json({"server": creds.server, "servers": creds.servers, "server_from": creds.server_from,
                    "token_from": creds.token_from, "profile": creds.profile,
                    "admin": None if refused else tenant is None, "tenant": tenant, "error": refused or None})
    else:
        console.print(f"server  {creds.servers} (from {creds.server_from})", highlight=False, markup=False)
        source = creds.token_from if creds.token_from.startswith("none") else f"from {creds.token_from}"
        console.print(f"token   {source}", highlight=False, markup=False)
        console.print(f"as      {refused or ('the admin' if tenant is None else f'tenant {tenant}')}",
                      highlight=False, markup=False)
    if refused:
        raise typer.Exit(1)
