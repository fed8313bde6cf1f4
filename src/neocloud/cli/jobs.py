"""Client commands: submit and follow jobs, see nodes and the queue, manage tenants. Thin: each
is one or two API calls through `neocloud.client`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from neocloud.cli.main import app, console, err
from neocloud.cli.options import Json, ProfileName, Server, Token, node_app, print_json, tenant_app
from neocloud.cli.options import client as _client
from neocloud.cli.options import when as _when
from neocloud.cli.submission import read_submission, with_code
from neocloud.client import ACTIVE, Client
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
def submit(spec: Annotated[Path, typer.Argument(help="Job spec (YAML or JSON), or a Slurm batch script "
                                                    "(#SBATCH lines).")],
           tenant: Annotated[Optional[str], typer.Option(help="Submit for this tenant (admin token).")] = None,
           workdir: Annotated[Optional[Path], typer.Option(help="Send this directory as the job's code (default: "
                                                                "the spec's workdir; a script's own directory).")] = None,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="Say when and where it would start, by the live "
                                                                  "forecast, and queue nothing.")] = False,
           wait: Annotated[bool, typer.Option("--wait", help="Wait until the job ends and exit with its status: 0 "
                                                            "if it completed, its exit code if it failed, "
                                                            "non-zero if it ended otherwise.")] = False,
           follow: Annotated[bool, typer.Option("--follow", "-f", help="Print rank 0's output as it comes, then "
                                                                      "exit as --wait does.")] = False,
           as_json: Json = False, server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Submit a job; print its id (with --wait or --follow, see it through to the end)."""
    if dry_run and (wait or follow):
        raise NeocloudError("--dry-run queues nothing to wait for: drop --wait/--follow, or --dry-run")
    if as_json and follow:
        raise NeocloudError("--follow prints the job's output on stdout, --json its record: choose one")
    body, code_dir, notes = read_submission(spec, workdir)
    for note in notes:
        err.print(f"{spec}: {note}", highlight=False, markup=False)
    if tenant:
        body["tenant"] = tenant
    c = _client(server, token, profile)
    body = with_code(body, code_dir, lambda archive: c.upload_code(archive, body.get("tenant")))
    job = c.submit(body, dry_run=dry_run)
    if as_json and not wait:
        print_json(job)
        return
    if dry_run:
        _print_dry_run(job)
        return
    if not as_json:
        (err if follow else console).print(f"job {job['id']} ({job['name']}) submitted: {job['state']}",
                                           highlight=False, markup=False)
    if wait or follow:
        raise typer.Exit(_see_through(c, job, follow, as_json))


def _print_dry_run(job: dict[str, Any]) -> None:
    if job["expected_start"] is None:
        console.print(f"{job['name']} would not start within 30 days: {job['reason']} (nothing was queued)")
        return
    console.print(f"{job['name']} would start {_eta(job['expected_start'])} on {_placement(job['placement'])}"
                  + (f", and end {_eta(job['expected_end'])}" if job["expected_end"] else "")
                  + (f"; until then: {job['reason']}" if job["reason"] else "") + " (nothing was queued)")


def exit_status(job: dict[str, Any]) -> int:
    """The shell status a job's end maps to: 0 only if it COMPLETED; its exit code if it has one
    (a signal N as 128+N), else 1."""
    if job["state"] == "COMPLETED":
        return 0
    code = job.get("exit_code")
    if isinstance(code, int) and 0 < code < 256:
        return code
    if isinstance(code, int) and -128 < code < 0:
        return 128 - code
    return 1


def _see_through(c: Client, job: dict[str, Any], follow: bool, as_json: bool) -> int:
    """Follow or wait for a submitted job to its end, in whichever end state; say how it ended."""
    try:
        wrote = False
        if follow:
            for text in c.follow(job["id"]):
                sys.stdout.write(text)
                sys.stdout.flush()
                wrote = True
            if not wrote:
                _hint_stderr(c, job["id"], 0)
        done = c.wait(job["id"], timeout=None, poll_s=0.2, max_poll_s=2.0)
    except KeyboardInterrupt:
        err.print(f"stopped waiting; job {job['id']} goes on (`neocloud cancel {job['id']}` stops it)",
                  highlight=False, markup=False)
        return 130
    status = exit_status(done)
    if as_json:
        print_json(done)
        return status
    out = err if follow or status else console
    line = f"job {done['id']} ({done['name']}) {done['state']}"
    if status:
        line += f": {done['reason'] or 'no reason given'}; exit status {status} (`neocloud job {done['id']}` says more)"
    out.print(line, highlight=False, markup=False)
    return status


@app.command("jobs")
def list_jobs(state: Annotated[Optional[str], typer.Option(help="Only jobs in this state.")] = None,
              limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
              as_json: Json = False, server: Server = None, token: Token = None,
              profile: ProfileName = None) -> None:
    """List jobs, newest first."""
    found = _client(server, token, profile).jobs(state=state, limit=limit)
    if as_json:
        print_json(found)
        return
    table = Table("id", "name", "tenant", "state", "GPUs", "submitted", "placement")
    for j in found:
        table.add_row(str(j["id"]), j["name"], j["tenant"], j["state"], f"{j['gpus']:g}", _when(j["submitted_at"]),
                      _placement(j["placement"]))
    console.print(table)


@app.command("job")
def show_job(job_id: int, as_json: Json = False, server: Server = None, token: Token = None,
             profile: ProfileName = None) -> None:
    """Show one job and what happened to it; for a failed one, why: its reason, exit code, and the
    end of the failed rank's standard error."""
    c = _client(server, token, profile)
    j = c.job(job_id)
    if as_json:
        print_json(j)
        return
    console.print(f"[bold]job {j['id']}: {escape(j['name'])}[/bold]", highlight=False)
    table = Table(show_header=False)
    for key in ("tenant", "state", "priority", "gpus", "attempts", "exit_code", "reason"):
        table.add_row(key, escape(str(j[key])))
    table.add_row("command", escape(j["command"] if isinstance(j["command"], str) else " ".join(j["command"])))
    table.add_row("placement", _placement(j["placement"]))
    for key in ("submitted_at", "started_at", "ended_at"):
        table.add_row(key.removesuffix("_at"), _when(j[key]))
    for key in ("expected_start", "expected_end"):
        if j.get(key) is not None:
            table.add_row(key.replace("_", " "), _eta(j[key]))
    console.print(table)
    events = Table("when", "event", "detail", title="events")
    for e in c.events(job_id):
        events.add_row(_when(e["at"]), e["kind"], escape(e["message"]))
    console.print(events)
    if j["state"] not in (*ACTIVE, "COMPLETED", "CANCELLED"):
        _why_it_failed(c, j)


def failed_rank(job: dict[str, Any]) -> int:
    """The rank to look at for why a job failed, by the reason's 'exit status per node': the first
    that exited with an error of its own (1 to 127; 128+N is a signal N, as when the rest of a gang
    is stopped because one rank failed), else the first non-zero, else rank 0."""
    _, found, codes = str(job.get("reason") or "").partition("exit status per node:")
    if not found:
        return 0
    seen = [c.strip() for c in codes.split(",")]
    for wanted in (lambda c: c.isdigit() and 0 < int(c) < 128, lambda c: c != "0"):
        for rank, code in enumerate(seen):
            if wanted(code):
                return rank
    return 0


def _why_it_failed(c: Client, j: dict[str, Any]) -> None:
    rank = failed_rank(j)
    ranks = len(j["placement"] or []) or 1
    rank = rank if rank < ranks else 0
    console.print(f"[bold red]{j['state']}[/bold red]: {escape(j['reason'] or 'no reason given')}; exit code "
                  f"{j['exit_code'] if j['exit_code'] is not None else '-'}", highlight=False)
    tail = c.tail(j["id"], rank, "stderr", lines=20)
    logs = f"neocloud logs {j['id']}" + (f" --rank {rank}" if rank else "")
    if not tail:
        console.print(f"rank {rank} wrote nothing to stderr; its output: `{logs}`", highlight=False, markup=False)
        return
    console.print(f"last lines of rank {rank}'s stderr (all of it: `{logs} --stderr`):", highlight=False,
                  markup=False)
    sys.stdout.write(tail + "\n")


@app.command()
def events(job_id: int, as_json: Json = False, server: Server = None, token: Token = None,
           profile: ProfileName = None) -> None:
    """A job's events, oldest first: queued, started, requeued, ended, and why."""
    found = _client(server, token, profile).events(job_id)
    if as_json:
        print_json(found)
        return
    table = Table("when", "event", "detail", title=f"job {job_id}: events")
    for e in found:
        table.add_row(_when(e["at"]), e["kind"], escape(e["message"]))
    console.print(table)


@app.command()
def logs(job_id: int,
         follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")] = False,
         rank: Annotated[int, typer.Option(min=0, help="Which node of a multi-node job (0 first).")] = 0,
         stderr: Annotated[bool, typer.Option("--stderr", help="Standard error instead of standard output.")] = False,
         server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Print a job's output."""
    c = _client(server, token, profile)
    j = c.job(job_id)
    _check_rank(j, rank, follow)
    stream = "stderr" if stderr else "stdout"
    wrote = False
    if follow:
        for text in c.follow(job_id, rank, stream):
            sys.stdout.write(text)
            sys.stdout.flush()
            wrote = True
    else:
        offset = 0
        while True:
            chunk = c.logs(job_id, offset, rank, stream)
            sys.stdout.write(chunk["text"])
            wrote = wrote or bool(chunk["text"])
            if chunk["next_offset"] == offset:
                break
            offset = chunk["next_offset"]
    if not wrote and not stderr:
        _hint_stderr(c, job_id, rank)


def _hint_stderr(c: Client, job_id: int, rank: int) -> None:
    """Nothing came on stdout: if the rank wrote to stderr, say where its output went."""
    if c.logs(job_id, 0, rank, "stderr", limit=4)["text"]:
        more = f" --rank {rank}" if rank else ""
        err.print(f"(nothing on stdout; rank {rank} wrote to stderr: `neocloud logs {job_id}{more} --stderr`)",
                  highlight=False, markup=False)


def _check_rank(j: dict[str, Any], rank: int, follow: bool) -> None:
    """Refuse a rank the job does not have, and logs of a job that has not run (a follow waits)."""
    placement = j["placement"]
    if not placement:
        if j["attempts"]:
            return  # requeued: an earlier attempt's logs are there, its ranks no longer known
        if j["state"] in ACTIVE:
            if follow:
                return
            raise NeocloudError(f"job {j['id']} has not started ({j['state']}"
                                + (f": {j['reason']}" if j["reason"] else "") + "), so it has no output yet; "
                                f"`neocloud logs {j['id']} --follow` waits for it")
        raise NeocloudError(f"job {j['id']} never ran ({j['state']}" + (f": {j['reason']}" if j["reason"] else "")
                            + "), so it has no output")
    if rank >= len(placement):
        ranks = "rank 0" if len(placement) == 1 else f"ranks 0 to {len(placement) - 1}"
        raise NeocloudError(f"job {j['id']} has {ranks} (one per node: {_placement(placement)}); "
                            f"--rank {rank} is not one of them")


@app.command()
def cancel(job_id: int, server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Cancel a job: a pending one at once, a running one once its processes stop."""
    j = _client(server, token, profile).cancel(job_id)
    console.print(f"job {j['id']}: {'cancelling' if j['state'] == 'RUNNING' else j['state']}")


@app.command()
def queue(as_json: Json = False, server: Server = None, token: Token = None, profile: ProfileName = None) -> None:
    """Pending jobs in the order the scheduler will try them, and why each waits."""
    found = _client(server, token, profile).queue()
    if as_json:
        print_json(found)
        return
    table = Table("#", "id", "name", "tenant", "priority", "GPUs", "waiting", "expected start", "why")
    for q in found:
        table.add_row(str(q["position"]), str(q["id"]), q["name"], q["tenant"], q["priority"], f"{q['gpus']:g}",
                      f"{q['waiting_s']:.0f} s", _eta(q.get("expected_start")), escape(q.get("reason", "")))
    console.print(table)


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
    table = Table("id", "tenant", "label", "created", "expires", "state")
    for t in found:
        table.add_row(str(t["id"]), t["tenant"], escape(t["label"]), _when(t["created_at"]), _when(t["expires_at"]) or "never",
                      t["state"] if t["revoked_at"] is None else f"revoked {_when(t['revoked_at'])}")
    console.print(table)


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
