"""Client commands for jobs: submit and follow them, their logs and events, the queue. Thin: each
is one or two API calls through `neocloud.client` (nodes.py and tenants.py hold the others)."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from neocloud.cli.main import app, console, err
from neocloud.cli.options import Json, ProfileName, Server, Token, describe_service, print_json
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
    if body.get("kind") == "service" and (wait or follow):
        raise NeocloudError("a service runs until stopped: drop --wait/--follow (`neocloud services show NAME` "
                            "follows its replicas)")
    job = c.submit(body, dry_run=dry_run)
    if as_json and not wait:
        print_json(job)
        return
    if body.get("kind") == "service":
        console.print(describe_service(job), highlight=False, markup=False)
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
    if job.get("array_tasks"):
        console.print(f"{job['name']} is an array of {job['array_tasks']} tasks; its first:", highlight=False)
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
    if job.get("array_job") is not None:
        return _see_array_through(c, job["array_job"], follow, as_json)
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


def _see_array_through(c: Client, array: int, follow: bool, as_json: bool) -> int:
    """Every task of an array to its end (each one's output in index order, with --follow); the
    status of the first that did not complete, or 0."""
    try:
        if follow:
            for task in c.array_tasks(array):
                for text in c.follow(task["id"]):
                    sys.stdout.write(text)
                    sys.stdout.flush()
        pause, tasks = 0.2, c.array_tasks(array)
        while any(t["state"] in ACTIVE for t in tasks):
            time.sleep(pause)
            pause, tasks = min(pause * 1.5, 2.0), c.array_tasks(array)
    except KeyboardInterrupt:
        err.print(f"stopped waiting; array {array} goes on (`neocloud cancel {array}` stops it)",
                  highlight=False, markup=False)
        return 130
    failed = next((t for t in tasks if t["state"] != "COMPLETED"), None)
    status = 0 if failed is None else exit_status(failed)
    if as_json:
        print_json(tasks)
        return status
    counts = ", ".join(f"{n} {state}" for state, n in sorted(Counter(t["state"] for t in tasks).items()))
    line = f"array {array} ({tasks[0]['name']}): {len(tasks)} tasks, {counts}"
    if failed is not None:
        line += (f"; task {failed['array_index']} (job {failed['id']}) {failed['state']}: "
                 f"{failed['reason'] or 'no reason given'}; exit status {status}")
    (err if follow or status else console).print(line, highlight=False, markup=False)
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
             profile: ProfileName = None,
             metrics: Annotated[bool, typer.Option(
                 "--metrics", help="The job's run in its MLflow experiment instead: each metric's points, "
                                   "last, lowest and highest value.")] = False) -> None:
    """Show one job and what happened to it; for a failed one, why: its reason, exit code, and the
    end of the failed rank's standard error."""
    c = _client(server, token, profile)
    if metrics:
        _show_metrics(c.metrics(job_id), as_json)
        return
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


def _show_metrics(m: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(m)
        return
    console.print(f"[bold]job {m['job_id']}: run {m['run_id']}[/bold] ({m['status']}) in experiment "
                  f"{m['experiment_id']}" + (f", {m['url']}" if m.get("url") else ""), highlight=False, soft_wrap=True)
    table = Table("metric", "points", "last", "lowest", "highest", "last step")
    for key, points in m["metrics"].items():
        if points:
            values = [p["value"] for p in points]
            table.add_row(escape(key), str(len(points)), f"{values[-1]:.6g}", f"{min(values):.6g}", f"{max(values):.6g}",
                          str(points[-1]["step"]))
    console.print(table)


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
