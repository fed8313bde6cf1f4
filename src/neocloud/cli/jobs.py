"""Client commands: submit and follow jobs, see nodes and the queue, manage tenants. Thin: each
is one or two API calls through `neocloud.client`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from neocloud.cli.main import app, console, err
from neocloud.cli.options import Server, Token, node_app, tenant_app
from neocloud.cli.options import client as _client
from neocloud.cli.options import when as _when
from neocloud.client import read_spec
from neocloud.errors import NeocloudError


def _eta(at: float | None) -> str:
    """A time to come, as a date and how far off it is: '2026-12-01 20:31:05 (in 4m 10s)'."""
    if at is None:
        return "-"
    left = max(at - time.time(), 0.0)
    h, rest = divmod(int(left), 3600)
    off = f"{h}h {rest // 60:02d}m" if h else f"{rest // 60}m {rest % 60:02d}s" if rest >= 60 else f"{rest}s"
    return f"{_when(at)} (in {off})"


def _placement(p: list[dict[str, Any]] | None) -> str:
    return " ".join(f"{x['node']}[{','.join(map(str, x['gpus']))}]" for x in p or [])


@app.command()
def submit(spec: Annotated[Path, typer.Argument(help="Job spec, YAML or JSON.")],
           tenant: Annotated[Optional[str], typer.Option(help="Submit for this tenant (admin token).")] = None,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="Say when and where it would start, by the live "
                                                                  "forecast, and queue nothing.")] = False,
           server: Server = None, token: Token = None) -> None:
    """Submit a job; print its id."""
    body = read_spec(spec)
    if tenant:
        body["tenant"] = tenant
    job = _client(server, token).submit(body, dry_run=dry_run)
    if not dry_run:
        console.print(f"job {job['id']} ({job['name']}) submitted: {job['state']}")
        return
    if job["expected_start"] is None:
        console.print(f"{job['name']} would not start within 30 days: {job['reason']} (nothing was queued)")
        return
    console.print(f"{job['name']} would start {_eta(job['expected_start'])} on {_placement(job['placement'])}"
                  + (f", and end {_eta(job['expected_end'])}" if job["expected_end"] else "")
                  + (f"; until then: {job['reason']}" if job["reason"] else "") + " (nothing was queued)")


@app.command("jobs")
def list_jobs(state: Annotated[Optional[str], typer.Option(help="Only jobs in this state.")] = None,
              limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
              server: Server = None, token: Token = None) -> None:
    """List jobs, newest first."""
    table = Table("id", "name", "tenant", "state", "GPUs", "submitted", "placement")
    for j in _client(server, token).jobs(state=state, limit=limit):
        table.add_row(str(j["id"]), j["name"], j["tenant"], j["state"], f"{j['gpus']:g}", _when(j["submitted_at"]),
                      _placement(j["placement"]))
    console.print(table)


@app.command("job")
def show_job(job_id: int, server: Server = None, token: Token = None) -> None:
    """Show one job and what happened to it."""
    c = _client(server, token)
    j = c.job(job_id)
    table = Table(show_header=False, title=f"job {j['id']}: {j['name']}")
    for key in ("tenant", "state", "priority", "gpus", "attempts", "exit_code", "reason"):
        table.add_row(key, str(j[key]))
    table.add_row("command", j["command"] if isinstance(j["command"], str) else " ".join(j["command"]))
    table.add_row("placement", _placement(j["placement"]))
    for key in ("submitted_at", "started_at", "ended_at"):
        table.add_row(key.removesuffix("_at"), _when(j[key]))
    for key in ("expected_start", "expected_end"):
        if j.get(key) is not None:
            table.add_row(key.replace("_", " "), _eta(j[key]))
    console.print(table)
    events = Table("when", "event", "detail", title="events")
    for e in c.events(job_id):
        events.add_row(_when(e["at"]), e["kind"], e["message"])
    console.print(events)


@app.command()
def logs(job_id: int,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
         rank: Annotated[int, typer.Option(help="Which node of a multi-node job.")] = 0,
         stderr: Annotated[bool, typer.Option("--stderr", help="Standard error instead of standard output.")] = False,
         server: Server = None, token: Token = None) -> None:
    """Print a job's output."""
    c = _client(server, token)
    stream = "stderr" if stderr else "stdout"
    if follow:
        for text in c.follow(job_id, rank, stream):
            sys.stdout.write(text)
            sys.stdout.flush()
        return
    offset = 0
    while True:
        chunk = c.logs(job_id, offset, rank, stream)
        sys.stdout.write(chunk["text"])
        if chunk["next_offset"] == offset:
            break
        offset = chunk["next_offset"]


@app.command()
def cancel(job_id: int, server: Server = None, token: Token = None) -> None:
    """Cancel a job: a pending one at once, a running one once its processes stop."""
    j = _client(server, token).cancel(job_id)
    console.print(f"job {j['id']}: {'cancelling' if j['state'] == 'RUNNING' else j['state']}")


@app.command()
def queue(server: Server = None, token: Token = None) -> None:
    """Pending jobs in the order the scheduler will try them, and why each waits."""
    table = Table("#", "id", "name", "tenant", "priority", "GPUs", "waiting", "expected start", "why")
    for q in _client(server, token).queue():
        table.add_row(str(q["position"]), str(q["id"]), q["name"], q["tenant"], q["priority"], f"{q['gpus']:g}",
                      f"{q['waiting_s']:.0f} s", _eta(q.get("expected_start")), q.get("reason", ""))
    console.print(table)


@app.command()
def nodes(server: Server = None, token: Token = None) -> None:
    """Nodes, their GPUs and state."""
    table = Table("node", "site", "fabric", "leaf", "GPU", "free/total", "state", "stage", "jobs", "reason")
    for n in _client(server, token).nodes():
        table.add_row(n["name"], n["site"], n["fabric"], n["leaf"], n["gpu_type"] or "-", f"{n['gpus_free']}/{n['gpus']}",
                      n["state"], n["stage"], " ".join(map(str, n["jobs"])), n["reason"])
    console.print(table)


def _node_command(action: str, doc: str) -> None:
    def command(name: str, reason: Annotated[str, typer.Option(help="Why (kept with the node).")] = "",
                server: Server = None, token: Token = None) -> None:
        _client(server, token).node_action(name, action, reason)
        console.print(f"node {name}: {action} done")

    command.__doc__ = doc
    node_app.command(action)(command)


_node_command("cordon", "Stop placing new work on a node; what runs there stays.")
_node_command("uncordon", "Let a node take new work again.")
_node_command("drain", "Cordon a node and let its jobs finish: DRAINING, then DRAINED.")


@app.command()
def goodput(job: Annotated[Optional[int], typer.Argument(help="A job (default: every tenant's totals).")] = None,
            tenant: Annotated[Optional[str], typer.Option(help="Only this tenant (admin).")] = None,
            server: Server = None, token: Token = None) -> None:
    """Productive GPU-time against GPU-time allocated, what was lost to each cause, and ETTR."""
    c = _client(server, token)
    hours = lambda gpu_s: f"{gpu_s / 3600:,.2f}"
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
def node_show(name: str, server: Server = None, token: Token = None) -> None:
    """A node: its stage, its lifecycle history and the health signals about it."""
    n = _client(server, token).node(name)
    console.print(f"[bold]{n['name']}[/bold]  {n['gpus']} x {n['gpu_type'] or '-'}  {n['site']}/{n['fabric']}/"
                  f"{n['leaf']}  stage [bold]{n['stage']}[/bold]{' (hot spare)' if n['spare'] else ''}  "
                  f"state {n['state']}  jobs {' '.join(map(str, n['jobs'])) or '-'}", highlight=False)
    history = Table("when", "from", "to", "reason", title="lifecycle")
    for m in n["history"]:
        history.add_row(_when(m["at"]), m["from_stage"], m["to_stage"], m["reason"])
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
              server: Server = None, token: Token = None) -> None:
    """Move a node to another stage of its life, as the lifecycle allows (triage -> repair -> burn-in ...)."""
    _client(server, token).move_node(name, stage, reason)
    console.print(f"node {name}: now in {stage}")


@node_app.command("signal")
def node_signal(name: str, signal: Annotated[str, typer.Argument(
                    help='The signal as JSON, e.g. \'{"kind": "xid", "code": 79}\'.')],
                server: Server = None, token: Token = None) -> None:
    """Post a health signal about a node (what node agents and exporters do) and print what it set off."""
    import json

    try:
        body = json.loads(signal)
    except json.JSONDecodeError as e:
        raise NeocloudError(f"the signal is not JSON ({e.msg} at column {e.colno}); give e.g. "
                            '\'{"kind": "xid", "code": 79}\'') from None
    r = _client(server, token).signal(name, body)
    jobs = f"; jobs requeued: {' '.join(map(str, r['interrupted']))}" if r["interrupted"] else ""
    console.print(f"node {name}: {r['action']} ({r['rule']}); stage {r['stage']}{jobs}", highlight=False)


@tenant_app.command("list")
def tenants_list(server: Server = None, token: Token = None) -> None:
    """Tenants, their tokens and active jobs."""
    table = Table("tenant", "created", "tokens", "active jobs")
    for t in _client(server, token).tenants():
        table.add_row(t["name"], _when(t["created_at"]), str(t["tokens"]), str(t["jobs_active"]))
    console.print(table)


@tenant_app.command("create")
def tenants_create(name: str, server: Server = None, token: Token = None) -> None:
    """Create a tenant."""
    _client(server, token).create_tenant(name)
    console.print(f"tenant {name} created; make it a token with `neocloud tenants token {name}`")


@tenant_app.command("token")
def tenants_token(name: str, label: Annotated[str, typer.Option(help="A note to tell tokens apart.")] = "",
                  expires_in: Annotated[Optional[str], typer.Option(
                      help="Stop working after this long: seconds, or 90s, 30m, 2h, 30d (default: never).")] = None,
                  server: Server = None, token: Token = None) -> None:
    """Make an API token for a tenant and print it (it is shown only this once)."""
    t = _client(server, token).issue_token(name, label, expires_in)
    err.print(f"token {t['id']} for {name}, expires {_when(t['expires_at']) or 'never'}", highlight=False)
    print(t["token"])


@tenant_app.command("tokens")
def tenants_tokens(name: Annotated[Optional[str], typer.Argument(
                       help="The tenant (admin); default: the token's own tenant's.")] = None,
                   server: Server = None, token: Token = None) -> None:
    """A tenant's tokens: id, label, when made, when they expire, revoked or not (never the secrets)."""
    table = Table("id", "tenant", "label", "created", "expires", "state")
    for t in _client(server, token).tokens(name):
        table.add_row(str(t["id"]), t["tenant"], t["label"], _when(t["created_at"]), _when(t["expires_at"]) or "never",
                      t["state"] if t["revoked_at"] is None else f"revoked {_when(t['revoked_at'])}")
    console.print(table)


@tenant_app.command("revoke")
def tenants_revoke(token_id: Annotated[int, typer.Argument(help="The token's id (neocloud tenants tokens NAME).")],
                   server: Server = None, token: Token = None) -> None:
    """Revoke a token: refused from now on."""
    t = _client(server, token).revoke_token(token_id)
    console.print(f"token {t['id']} of {t['tenant']} revoked", highlight=False)
