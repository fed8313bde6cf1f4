"""What the client commands share: the server, token, profile and --json options, the client they
make, and the command groups they hang in. Imports nothing of the commands, so any of them can be
imported alone."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from neocloud.cli.profiles import Credentials, resolve
from neocloud.client import ApiError, Client
from neocloud.errors import NeocloudError

node_app = typer.Typer(help="Operate on nodes: cordon, drain, move through their lifecycle, signal, check.",
                       no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants and their tokens (admin).", no_args_is_help=True)
services_app = typer.Typer(help="Services: long-running replicas behind the gateway (`neocloud submit` creates "
                                "one from a spec with kind: service).", invoke_without_command=True)

Server = Annotated[Optional[str], typer.Option("--server", help="API URL, or several, comma-separated, of "
                                                                 "servers sharing one database: the one that "
                                                                 "leads is followed (default: NEOCLOUD_SERVER, "
                                                                 "the profile's, or http://127.0.0.1:8420).")]
Token = Annotated[Optional[str], typer.Option("--token", help="API token (default: NEOCLOUD_TOKEN, the profile's, "
                                                               "or the local admin token).")]
ProfileName = Annotated[Optional[str], typer.Option("--profile", help="Use this saved login (default: "
                                                                      "NEOCLOUD_PROFILE, or the one `neocloud "
                                                                      "login` made current).")]
Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON and nothing else.")]

GET_A_TOKEN = ("run `neocloud login --token T`, set NEOCLOUD_TOKEN, or ask your operator for one "
               "(`neocloud tenants token TENANT` as admin)")


class CliClient(Client):
    """A client that knows where its server and token came from, so that a refused token is told
    with its source and the ways to get a good one."""

    def __init__(self, creds: Credentials) -> None:
        super().__init__(creds.servers, creds.token or "")
        if not creds.token:  # the plain client would look in the environment again: nothing is sent
            self.http.headers.pop("Authorization", None)
        self.creds = creds

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            return super()._call(method, path, **kw)
        except ApiError as e:
            if e.status != 401:
                raise
            raise ApiError(401, unauthorized(self.creds)) from None
        except NeocloudError as e:
            if not str(e).startswith("cannot reach") or self.creds.server_from == "--server":
                raise
            raise NeocloudError(f"{e} (server from {self.creds.server_from}; `neocloud whoami` says what is "
                                "in use)") from None


def unauthorized(creds: Credentials) -> str:
    """What a 401 means for this command, and how to fix it."""
    if not creds.token:
        return f"no token for {creds.server}: {GET_A_TOKEN}"
    return (f"{creds.server} refused the token from {creds.token_from} (unknown, expired or revoked): "
            f"{GET_A_TOKEN}")


def credentials(server: str | None, token: str | None, profile: str | None = None) -> Credentials:
    return resolve(server, token, profile)


def client(server: str | None, token: str | None, profile: str | None = None) -> CliClient:
    return CliClient(resolve(server, token, profile))


def print_json(data: Any) -> None:
    """The API's JSON on stdout, alone: no colour, no wrapping, one document."""
    print(json.dumps(data, indent=2))


def when(t: float | None) -> str:
    return "" if t is None else dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def tokens_table(found: list[dict[str, Any]]) -> Table:
    """Tokens or service keys as the API lists them: never their secrets."""
    keys = any(t.get("service") for t in found)
    table = Table("id", "tenant", *(["service"] if keys else []), "label", "created", "expires", "state")
    for t in found:
        table.add_row(str(t["id"]), t["tenant"], *([t["service"]] if keys else []), escape(t["label"]),
                      when(t["created_at"]), when(t["expires_at"]) or "never",
                      t["state"] if t["revoked_at"] is None else f"revoked {when(t['revoked_at'])}")
    return table


def describe_service(s: dict[str, Any]) -> str:
    """A service in one line, as the API answers it."""
    return (f"service {s['name']} ({s['tenant']}) {s['state']}: {s['ready']} of {s['replicas']} replica(s) ready, "
            f"generation {s['generation']}; endpoint {s['endpoint']}")
