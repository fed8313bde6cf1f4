"""Nodes and goodput: the fleet as operators see it, and move it through its lifecycle."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from neocloud.cli.main import app, console
from neocloud.cli.options import Json, ProfileName, Server, Token, node_app, print_json
from neocloud.cli.options import client as _client
from neocloud.cli.options import when as _when
from neocloud.errors import NeocloudError


@app.command()
def nodes(as_json: Json = False, server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Nodes, their GPUs and state."""
    found = _client(server, token, profile).nodes()
    if as_json:
        print_json(found)
        return
    table = Table("node", "site", "fabric", "leaf", "GPU", "free/total", "state", "stage", "jobs", "reason")
    for n in found:
        table.add_row(n["name"], n["site"], n["fabric"], n["leaf"], n["gpu_type"] or "-", f"{n['gpus_free']}/{n['gpus']}",
                      n["state"], n["stage"], " ".join(map(str, n["jobs"])), escape(n["reason"]))
    console.print(table)


def _node_command(action: str, doc: str) -> None:
    def command(name: str, reason: Annotated[str, typer.Option(help="Why (kept with the node).")] = "",
                server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
        _client(server, token, profile).node_action(name, action, reason)
        console.print(f"node {name}: {action} done")

    command.__doc__ = doc
    node_app.command(action)(command)


_node_command("cordon", "Stop placing new work on a node; what runs there stays.")
_node_command("uncordon", "Let a node take new work again.")
_node_command("drain", "Cordon a node and let its jobs finish: DRAINING, then DRAINED.")


@app.command()
def goodput(job: Annotated[Optional[int], typer.Argument(help="A job (default: every tenant's totals).")] = None,
            tenant: Annotated[Optional[str], typer.Option(help="Only this tenant (admin).")] = None,
            as_json: Json = False, server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Productive GPU-time against GPU-time allocated, what was lost to each cause, and ETTR."""
    c = _client(server, token, profile)
    hours = lambda gpu_s: f"{gpu_s / 3600:,.2f}"  # noqa: E731
    if as_json:
        print_json(c.goodput(job) if job is not None else c.goodput(tenant=tenant))
        return
    if job is not None:
        g = c.goodput(job)
        table = Table(title=f"job {job}: {g['interruptions']} interruption(s)", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("allocated GPU-h", hours(g["allocated_gpu_s"]))
        table.add_row("productive GPU-h", hours(g["productive_gpu_s"]))
        for cause, lost in g["lost_gpu_s"].items():
            table.add_row(f"lost to {cause}, GPU-h", hours(lost))
        table.add_row("waiting after failures", f"{g['queueing_after_failure_s']:,.0f} s")
        table.add_row("ETTR", "-" if g["ettr"] is None else f"{100 * g['ettr']:.1f}%")
        console.print(table)
        return
    table = Table("tenant", "jobs", "interruptions", "allocated GPU-h", "productive GPU-h", "lost GPU-h", "goodput")
    for t in c.goodput(tenant=tenant):
        table.add_row(t["tenant"], str(t["jobs"]), str(t["interruptions"]), hours(t["allocated_gpu_s"]),
                      hours(t["productive_gpu_s"]), hours(sum(t["lost_gpu_s"].values())),
                      "-" if t["goodput"] is None else f"{100 * t['goodput']:.1f}%")
    console.print(table)


@node_app.command("show")
def node_show(name: str, as_json: Json = False, server: Server = None, token: Token = None,
              profile: ProfileName = None) -> None:
    """A node: its stage, its lifecycle history and the health signals about it."""
    n = _client(server, token, profile).node(name)
    if as_json:
        print_json(n)
        return
    console.print(f"[bold]{n['name']}[/bold]  {n['gpus']} x {n['gpu_type'] or '-'}  {n['site']}/{n['fabric']}/"
                  f"{n['leaf']}  stage [bold]{n['stage']}[/bold]{' (hot spare)' if n['spare'] else ''}  "
                  f"state {n['state']}  jobs {' '.join(map(str, n['jobs'])) or '-'}", highlight=False)
    history = Table("when", "from", "to", "reason", title="lifecycle")
    for m in n["history"]:
        history.add_row(_when(m["at"]), m["from_stage"], m["to_stage"], escape(m["reason"]))
    console.print(history)
    signals = Table("received", "observed", "kind", "signal", "rule", "action", title="health signals")
    for h in n["signals"]:
        detail = " ".join(f"{k}={v}" for k, v in h["payload"].items() if k not in ("kind", "report"))
        signals.add_row(_when(h["at"]), _when(h["observed_at"]), h["kind"], detail, h["rule"], h["action"])
    console.print(signals)


@node_app.command("move")
def node_move(name: str, stage: Annotated[str, typer.Argument(help="onboarding, burn-in, production, cordoned, "
                                                                      "draining, triage, repair or rma.")],
              reason: Annotated[str, typer.Option(help="Why (kept in the node's history).")] = "",
              server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Move a node to another stage of its life, as the lifecycle allows (triage -> repair -> burn-in ...)."""
    _client(server, token, profile).move_node(name, stage, reason)
    console.print(f"node {name}: now in {stage}")


@node_app.command("signal")
def node_signal(name: str, signal: Annotated[str, typer.Argument(
                    help='The signal as JSON, e.g. \'{"kind": "xid", "code": 79}\'.')],
                server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Post a health signal about a node (what node agents and exporters do) and print what it set off."""
    import json

    try:
        body = json.loads(signal)
    except json.JSONDecodeError as e:
        raise NeocloudError(f"the signal is not JSON ({e.msg} at column {e.colno}); give e.g. "
                            '\'{"kind": "xid", "code": 79}\'') from None
    r = _client(server, token, profile).signal(name, body)
    jobs = f"; jobs requeued: {' '.join(map(str, r['interrupted']))}" if r["interrupted"] else ""
    console.print(f"node {name}: {r['action']} ({r['rule']}); stage {r['stage']}{jobs}", highlight=False)
