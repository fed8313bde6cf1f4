"""Contracts, prices, invoices and the backlog: thin commands over the API (the backlog also offline)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from rich.markup import escape
from rich.table import Table

from neocloud.api.schemas import ContractIn, _instant
from neocloud.cli.main import app, console
from neocloud.cli.options import Json, ProfileName, Server, Token, print_json
from neocloud.cli.options import client as _client
from neocloud.cli.options import when as _when
from neocloud.errors import NeocloudError

contracts_app = typer.Typer(help="Reserved contracts: the GPUs each tenant is guaranteed (admin).", no_args_is_help=True)
prices_app = typer.Typer(help="On-demand and spot prices per GPU type.", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
app.add_typer(prices_app, name="prices")


def _money(x: Any) -> str:
    return f"${float(x):,.2f}"


@contracts_app.command("list")
def contracts_list(history: Annotated[bool, typer.Option(help="Every version, not only those in force.")] = False,
                   as_json: Json = False, server: Server = None, token: Token = None,
                   profile: ProfileName = None) -> None:
    """Contracts in force (or their whole history)."""
    found = _client(server, token, profile)._call("GET", "/v1/contracts", params={"history": history})
    if as_json:
        print_json(found)
        return
    table = Table("contract", "v", "tenant", "GPUs", "type", "start", "end", "$/GPU-h", "take-or-pay", "valid to", "note")
    for c in found:
        table.add_row(str(c["contract"]), str(c["version"]), c["tenant"], str(c["gpus"]), c["gpu_type"],
                      _when(c["start"]), _when(c["end"]), c["price_per_gpu_hour"], "yes" if c["take_or_pay"] else "no",
                      _when(c["valid_to"]) or "in force", c["note"])
    console.print(table)


@contracts_app.command("create")
def contracts_create(tenant: str, gpus: int, gpu_type: Annotated[str, typer.Option("--gpu-type")],
                     start: Annotated[str, typer.Option(help="ISO date or time, or epoch seconds.")],
                     end: Annotated[str, typer.Option(help="ISO date or time, or epoch seconds.")],
                     price: Annotated[str, typer.Option(help="Dollars per GPU-hour.")],
                     take_or_pay: Annotated[bool, typer.Option(help="Billed whether used or not.")] = True,
                     note: str = "", server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Reserve GPUs for a tenant for a term at a price: its guaranteed quota."""
    c = _client(server, token, profile)._call("POST", "/v1/contracts", json={
        "tenant": tenant, "gpu_type": gpu_type, "gpus": gpus, "start": start, "end": end, "price_per_gpu_hour": price,
        "take_or_pay": take_or_pay, "note": note})
    console.print(f"contract {c['contract']}: {c['gpus']} x {c['gpu_type']} for {tenant}")
    if c.get("warning"):
        console.print(f"[yellow]warning:[/yellow] {c['warning']}", highlight=False)


@contracts_app.command("amend")
def contracts_amend(contract: int, gpus: Optional[int] = None,
                    end: Annotated[Optional[str], typer.Option(help="New end: ISO date or epoch seconds.")] = None,
                    price: Annotated[Optional[str], typer.Option(help="New dollars per GPU-hour.")] = None,
                    note: str = "", server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """New terms from now on; the previous version is kept."""
    body = {k: v for k, v in (("gpus", gpus), ("end", end), ("price_per_gpu_hour", price)) if v is not None}
    c = _client(server, token, profile)._call("POST", f"/v1/contracts/{contract}/amend", json={**body, "note": note})
    console.print(f"contract {contract}: version {c['version']} in force")


@contracts_app.command("terminate")
def contracts_terminate(contract: int, at: Annotated[Optional[str], typer.Option(help="When (default: now).")] = None,
                        note: str = "", server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """End a contract early; its history stays."""
    body = {"note": note, **({"at": at} if at else {})}
    c = _client(server, token, profile)._call("POST", f"/v1/contracts/{contract}/terminate", json=body)
    console.print(f"contract {contract}: ends {_when(c['end'])} (version {c['version']})")


@prices_app.command("set")
def prices_set(gpu_type: str, usage_class: Annotated[str, typer.Argument(help="on-demand or spot")],
               price: Annotated[str, typer.Argument(help="Dollars per GPU-hour.")],
               server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Set the on-demand or spot price of a GPU type from now on."""
    _client(server, token, profile)._call("PUT", "/v1/prices", json={"gpu_type": gpu_type, "usage_class": usage_class,
                                                            "price_per_gpu_hour": price})
    console.print(f"{usage_class} {gpu_type}: ${price} per GPU-hour from now")


@prices_app.command("list")
def prices_list(as_json: Json = False, server: Server = None, token: Token = None,
                profile: ProfileName = None) -> None:
    """Prices, oldest first."""
    found = _client(server, token, profile)._call("GET", "/v1/prices")
    if as_json:
        print_json(found)
        return
    table = Table("GPU", "class", "$/GPU-h", "since")
    for p in found:
        table.add_row(p["gpu_type"], p["usage_class"], p["price_per_gpu_hour"], _when(p["since"]))
    console.print(table)


@app.command()
def invoice(tenant: str, month: Annotated[str, typer.Option(help="YYYY-MM (UTC).")],
            format: Annotated[str, typer.Option(help="table, json, csv or html.")] = "table",  # noqa: A002
            as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON (as --format json).")] = False,
            server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """A tenant's invoice for a month: reserved commitment, on-demand and spot usage, total."""
    format = "json" if as_json else format  # noqa: A001
    if format not in ("table", "json", "csv", "html"):
        raise NeocloudError(f"--format takes table, json, csv or html, not {format!r}")
    c = _client(server, token, profile)
    if format in ("csv", "html"):
        r = c.http.get(f"/v1/invoices/{tenant}", params={"month": month, "format": format})
        if r.status_code != 200:
            c._call("GET", f"/v1/invoices/{tenant}", params={"month": month})  # raises the API's error
        print(r.text, end="")
        return
    bill = c._call("GET", f"/v1/invoices/{tenant}", params={"month": month})
    if format == "json":
        print_json(bill)
        return
    table = Table("line", "GPU", "quantity", "price", "amount", title=f"{tenant}: {month}")
    for line in bill["lines"]:
        if "tokens" in line:  # a service's tokens, priced per million
            qty, unit = f"{line['tokens']:,} tokens", f"{line['price']}/M tokens"
        else:
            qty, unit = f"{float(line['gpu_hours']):,.4f} GPU-h", f"{line['price']}/GPU-h"
        table.add_row(escape(line["kind"]), line.get("gpu_type", ""), qty, "-" if line["price"] is None else unit,
                      _money(line["amount"]))
    table.add_row("[bold]total[/bold]", "", "", "", f"[bold]{_money(bill['total'])}[/bold]")
    console.print(table)


@app.command()
def revenue(month: Annotated[str, typer.Option(help="YYYY-MM (UTC).")], as_json: Json = False,
            server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Revenue recognised in a month: each tenant's invoice total, and the sum (admin)."""
    r = _client(server, token, profile)._call("GET", "/v1/revenue", params={"month": month})
    if as_json:
        print_json(r)
        return
    table = Table("tenant", "recognised", title=f"revenue, {month}")
    for tenant, amount in r["tenants"].items():
        table.add_row(tenant, _money(amount))
    table.add_row("[bold]total[/bold]", f"[bold]{_money(r['total'])}[/bold]")
    console.print(table)


class _Book(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_of: Any = None
    contracts: list[ContractIn]


def read_book(path: Path) -> tuple[list, float | None]:
    """An offline contract book (YAML): its contracts as the model's, and its `as_of` time if any."""
    from decimal import Decimal

    from neocloud.model.billing import Contract

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise NeocloudError(f"{path}: cannot read the contract book: {e}") from None
    try:
        book = _Book.model_validate(raw, from_attributes=False)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise NeocloudError(f"{path}: {where}: {first['msg']}") from None
    contracts = [Contract(i + 1, 1, c.tenant, c.gpu_type, c.gpus, c.start, c.end, Decimal(c.price_per_gpu_hour),
                          c.take_or_pay, c.start) for i, c in enumerate(book.contracts)]
    try:
        as_of = float(_instant(book.as_of)) if book.as_of is not None else None
    except ValueError as e:
        raise NeocloudError(f"{path}: as_of: {e}") from None
    return contracts, as_of


@app.command()
def backlog(book: Annotated[Optional[Path], typer.Option(help="A contract book (YAML) to read instead of the "
                                                               "server's contracts.")] = None,
            as_of: Annotated[Optional[str], typer.Option(help="Count from this time (default: the book's as_of, "
                                                              "else now).")] = None,
            as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
            server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Contracted value not yet delivered, by customer and quarter, and customer concentration."""
    from neocloud.model.billing import backlog as compute

    if book is not None:
        contracts, book_as_of = read_book(book)
        try:
            when = float(_instant(as_of)) if as_of else book_as_of or dt.datetime.now(dt.UTC).timestamp()
        except ValueError as e:
            raise NeocloudError(f"--as-of: {e}") from None
        result = json.loads(json.dumps(compute(contracts, when), default=str))
    else:
        result = _client(server, token, profile)._call("GET", "/v1/backlog")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    customers = result["customers"]
    millions = lambda x: f"{float(x) / 1e6:,.1f}"  # noqa: E731
    table = Table("quarter", *(c["tenant"] for c in customers), "total",
                  title=f"backlog as of {_when(result['as_of'])}, $M by quarter of delivery")
    for q, total in result["quarters"].items():
        table.add_row(q, *(millions(c["quarters"].get(q, 0)) for c in customers), millions(total))
    table.add_row("[bold]backlog[/bold]", *(f"[bold]{millions(c['total'])}[/bold]" for c in customers),
                  f"[bold]{millions(result['total'])}[/bold]")
    table.add_row("share", *(f"{100 * c['share']:.1f}%" for c in customers), "100%")
    console.print(table)
    console.print(f"largest customer {result['largest_customer']}: {100 * result['largest_share']:.1f}% of backlog; "
                  f"HHI {result['hhi']:,}; limit {100 * result['limit']:.0f}%", highlight=False)
    for t in result["over_limit"]:
        console.print(f"[yellow]warning:[/yellow] {t} is above the concentration limit", highlight=False)
