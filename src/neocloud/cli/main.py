"""`neocloud`: the command line. Parses, calls the core or the twin, renders; decides nothing."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from neocloud.cli import options
from neocloud.errors import NeocloudError

app = typer.Typer(help="neocloud: an open control plane for GPU clouds.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
fleet_app = typer.Typer(help="Fleets: sites, fabrics, leaves, nodes.", no_args_is_help=True)
trace_app = typer.Typer(help="Workload traces for the twin.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks of the core.", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")
app.add_typer(trace_app, name="trace")
app.add_typer(bench_app, name="bench")
OFF_TERMINAL_WIDTH = 1 << 16  # piped or redirected: a line as long as it needs, never cut to a screen


def _console(stderr: bool = False) -> Console:
    """Rich at the terminal's width; off a terminal (a pipe, a file, CI) where Rich would assume 80
    columns and cut tables with ellipses, wide enough that every cell shows whole (COLUMNS, if set,
    still rules)."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    wide = not tty and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=OFF_TERMINAL_WIDTH if wide else None)


console = _console()
err = _console(stderr=True)


def main() -> None:
    """Entry point: user errors print as one line that says what to fix, never a traceback."""
    try:
        app()
    except NeocloudError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise SystemExit(2) from None


def _progress(label: str) -> Progress:
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


PLAIN_EVERY_S = 5.0  # off a terminal: a progress line this often


@contextmanager
def _ticking(label: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A progress callback, `tick(done, total)`: Rich's bar on a terminal; off one (a pipe, a log,
    CI), where a bar shows nothing, a plain line with the rate every PLAIN_EVERY_S seconds."""
    if err.is_terminal:
        with _progress(label) as bar:
            task = bar.add_task(label, total=None)
            yield lambda done, total: bar.update(task, completed=done, total=total)
        return
    start = last = time.monotonic()

    def tick(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PLAIN_EVERY_S:
            last = now
            rate = done / max(now - start, 1e-9)
            err.print(f"{label}: {done:,} of {total:,} {unit} ({done / max(total, 1):.0%}), {rate:,.0f} {unit}/s, "
                      f"{now - start:.0f} s", highlight=False)

    yield tick


@fleet_app.command("show")
def fleet_show(fleet: Annotated[Path, typer.Argument(help="Fleet YAML file, or an openb node list CSV.")]) -> None:
    """Print the fleet: sites and MW, fabrics and leaves, GPUs by type, power drawn."""
    from neocloud.cli.fleet_view import fleet_summary
    from neocloud.fleet.loader import load_fleet

    console.print(fleet_summary(load_fleet(fleet)))


@trace_app.command("synth")
def trace_synth(
    out: Annotated[Path, typer.Option(help="Where to write the trace (.csv or .jsonl, native format).")],
    jobs: Annotated[int, typer.Option(help="Number of jobs.")] = 10_000,
    profile: Annotated[str, typer.Option(help="philly, llm or mixed.")] = "philly",
    seed: Annotated[int, typer.Option()] = 0,
    fleet_gpus: Annotated[int, typer.Option(help="GPUs of the fleet the load is sized for.")] = 10_000,
    load: Annotated[float, typer.Option(help="Offered load, GPU-time asked over GPU-time available.")] = 0.8,
    gpus_per_node: Annotated[int, typer.Option()] = 8,
) -> None:
    """Write a synthetic trace calibrated on published cluster statistics (see docs/traces.md)."""
    from neocloud.sim.synth import synthesize
    from neocloud.sim.traces import write_native

    trace = synthesize(jobs, seed=seed, profile=profile, fleet_gpus=fleet_gpus, load=load,
                       gpus_per_node=gpus_per_node)
    write_native(trace, out)
    console.print(f"wrote {len(trace):,} jobs ({profile}, seed {seed}) to {out}")


@app.command()
def simulate(
    fleet: Annotated[Path, typer.Option(help="Fleet YAML file, or an openb node list CSV.")],
    trace: Annotated[Path, typer.Option(help="Trace file.")],
    trace_format: Annotated[Optional[str], typer.Option(help="openb, gavel, tiresias or native (guessed if unset).")] = None,
    policy: Annotated[str, typer.Option(help="Queue policy: neocloud, fifo, sjf, las, fair.")] = "neocloud",
    placement: Annotated[str, typer.Option(help="Placement: neocloud, fgd, topo, bestfit, random.")] = "neocloud",
    backfill: Annotated[bool, typer.Option(help="EASY backfill behind the blocked head job.")] = True,
    seed: Annotated[int, typer.Option()] = 0,
    estimates: Annotated[str, typer.Option(help="Users' run-time estimates: noisy (log-normal error, as real ones), perfect, none or trace.")] = "noisy",
    arrival_scale: Annotated[float, typer.Option(help="Multiply arrival times (< 1 adds load).")] = 1.0,
    inflate: Annotated[Optional[float], typer.Option(help="Fragmentation experiment: fill to X x GPU capacity, no departures.")] = None,
    contracts: Annotated[Optional[Path], typer.Option(help="A contract book (YAML): each tenant's contracted GPUs "
                                                           "are its guarantee throughout the replay.")] = None,
    borrowing: Annotated[bool, typer.Option(help="Lend idle guaranteed GPUs (taken back by preemption).")] = True,
    failures: Annotated[str, typer.Option(help="Node and component failures over every node: llama3 (Llama 3's "
                                               "published rates), none, or a YAML/JSON file of causes.")] = "none",
    spares_per_fabric: Annotated[int, typer.Option(min=0, help="Hot spares the health policy holds in each fabric "
                                                               "(with --failures).")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Write the report as JSON here.")] = None,
) -> None:
    """Replay a trace through the scheduler on a simulated clock and report JCT, waits, utilisation;
    with --failures, nodes fail and the production health policy stops, requeues and restarts jobs."""
    from neocloud.fleet.loader import load_fleet
    from neocloud.sim.faults import FailureModel, causes_named
    from neocloud.sim.traces import load_trace

    model = None if failures == "none" else \
        FailureModel(causes_named(failures), name=failures if failures == "llama3" else Path(failures).name,
                     spares_per_fabric=spares_per_fabric)
    if model is not None and inflate is not None:
        raise NeocloudError("--inflate has no clock for failures to happen on; drop --failures or --inflate")
    the_fleet = load_fleet(fleet)
    the_trace = load_trace(trace, trace_format)
    err.print(f"replaying {len(the_trace):,} jobs on {the_fleet.total_gpus:,} GPUs "
              f"(queue {policy}, placement {placement}) ...", highlight=False)
    with _ticking("simulating", "jobs") as tick:
        if inflate is not None:
            report = _inflate(the_fleet, the_trace, policy, placement, seed, inflate, tick)
        else:
            from neocloud.sim.engine import simulate as run
            from neocloud.sim.engine import with_arrival_scale

            quotas: dict[str, float] | None = None
            if contracts is not None:
                from neocloud.cli.billing import read_book

                quotas = {}
                for c in read_book(contracts)[0]:
                    quotas[c.tenant] = quotas.get(c.tenant, 0) + c.gpus
            report = run(the_fleet, with_arrival_scale(the_trace, arrival_scale), policy=policy,
                         placement=placement, backfill=backfill, seed=seed, estimates=estimates,
                         progress=tick, quotas=quotas, borrowing=borrowing, failures=model).to_dict()
            report["arrival_scale"] = arrival_scale
    _print_report(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {out}")


@app.command()
def failures(
    scenario: Annotated[str, typer.Option(help="plain (10-minute timeout, no spares, hourly checkpoints), neocloud "
                                               "(health checks, hot spares, Daly's interval), async (+ asynchronous "
                                               "checkpoints) or peers (+ in-memory checkpoints on peers).")] = "neocloud",
    seeds: Annotated[int, typer.Option(min=1, max=10_000, help="Runs, seeds 0 to N-1.")] = 3,
    gpus: Annotated[Optional[int], typer.Option(help="GPUs of the job (default 16,384, as Llama 3).")] = None,
    days: Annotated[Optional[float], typer.Option(help="Length of the run (default 54 days).")] = None,
    checkpoint_s: Annotated[Optional[float], typer.Option(help="Blocking cost of one checkpoint save, s.")] = None,
    restart_s: Annotated[Optional[float], typer.Option(help="Restart once the nodes are ready, s.")] = None,
    interval: Annotated[Optional[str], typer.Option(help="Checkpoint interval in seconds, or 'auto' (Daly).")] = None,
    spares: Annotated[Optional[int], typer.Option(min=0, help="Hot spare nodes in the job's fabric.")] = None,
    failures: Annotated[str, typer.Option("--failures", help="llama3 (Llama 3's rates) or a YAML/JSON file of "
                                                             "causes.")] = "llama3",
) -> None:
    """Play one large training job against failures on the twin's engine and the production health
    policy; ETTR beside the first-order model, and what was lost, by cause."""
    from neocloud.sim.failures import LOSSES, SCENARIOS, run
    from neocloud.sim.faults import causes_named

    if scenario not in SCENARIOS:
        raise NeocloudError(f"unknown scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}")
    given: dict[str, object] = {"gpus": gpus, "days": days, "checkpoint_s": checkpoint_s, "restart_s": restart_s,
                                "spares": spares}
    if interval is not None:
        try:
            given["interval_s"] = interval if interval == "auto" else float(interval)
        except ValueError:
            raise NeocloudError(f"--interval takes seconds or 'auto', got {interval!r}") from None
    if failures != "llama3":
        given["causes"] = causes_named(failures)
    s = SCENARIOS[scenario](**{k: v for k, v in given.items() if v is not None})
    with _progress("runs") as bar:
        task = bar.add_task("runs", total=seeds)
        outcomes = []
        for seed in range(seeds):
            outcomes.append(run(s, seed))
            bar.update(task, completed=seed + 1)
    ettr = [o.ettr for o in outcomes]
    table = Table(title=f"{s.name}: {s.gpus:,} GPUs for {s.days:g} days, {seeds} run(s)", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("ETTR (twin, mean)", f"{100 * sum(ettr) / len(ettr):.2f}%")
    table.add_row("ETTR (first-order model)", f"{100 * s.analytic():.2f}%")
    table.add_row("interruptions per run", f"{sum(o.interruptions for o in outcomes) / seeds:.1f}")
    table.add_row("restarts in place per run", f"{sum(o.restarts_in_place for o in outcomes) / seeds:.1f}")
    table.add_row("checkpoint interval", f"{sum(o.mean_interval_s for o in outcomes) / seeds / 60:.1f} min")
    for what in LOSSES:
        table.add_row(f"lost to {what}", f"{sum(o.lost[what] for o in outcomes) / seeds / 3600:,.1f} h")
    for stage in ("triage", "repair", "burn-in", "hot spare"):
        table.add_row(f"node-hours in {stage}", f"{sum(o.node_h.get(stage, 0.0) for o in outcomes) / seeds:,.0f}")
    console.print(table)


@bench_app.command("scheduler")
def bench_scheduler(
    nodes: Annotated[int, typer.Option(help="Nodes in the fleet (leaves of 32, fabrics of 64 leaves).")] = 12_500,
    gpus_per_node: Annotated[int, typer.Option(help="GPUs on each node.")] = 8,
    pending: Annotated[int, typer.Option(help="Pending jobs (gangs of 1-512 GPUs) to place.")] = 10_000,
    fill: Annotated[float, typer.Option(help="Share of GPUs held by running jobs before measuring.")] = 0.85,
    step: Annotated[Optional[float], typer.Option(
        help="Free this share of GPUs before each pass, keeping the fleet saturated (default: back to --fill).")] = None,
    placement: Annotated[str, typer.Option(help="Placement: neocloud, fgd, topo, bestfit, random.")] = "neocloud",
    policy: Annotated[str, typer.Option(help="Queue policy: neocloud, fifo, sjf, las, fair.")] = "neocloud",
    backfill: Annotated[bool, typer.Option(help="EASY backfill behind the blocked head job.")] = True,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Write the results as JSON here.")] = None,
) -> None:
    """Fill a fleet to a realistic mix, then time every placement decision and scheduling pass."""
    from neocloud.sim.schedbench import run_scheduler_bench

    with _progress("benchmarking") as bar:
        tasks: dict[str, TaskID] = {}

        def tick(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total, description=phase)

        result = run_scheduler_bench(nodes, gpus_per_node, pending, seed=seed, placement=placement,
                                     policy=policy, backfill=backfill, fill=fill, step=step, progress=tick)
    table = Table(title=f"scheduler: {result['gpus']:,} GPUs, {pending:,} pending, {placement}/{policy}",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in result.items():
        if key == "per_gang_size":
            continue
        if isinstance(value, float):
            value = f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
        table.add_row(key, str(value))
    console.print(table)
    sizes = Table(title="decision latency by gang size (GPUs, rounded up to a power of two)")
    for col in ("GPUs", "decisions", "p50 ms", "p99 ms", "max ms"):
        sizes.add_column(col, justify="right")
    for size, row in result["per_gang_size"].items():
        sizes.add_row(size, f"{row['decisions']:,}", f"{row['p50_ms']:.3f}", f"{row['p99_ms']:.3f}",
                      f"{row['max_ms']:.3f}")
    console.print(sizes)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"results written to {out}")


def _inflate(fleet, trace, policy: str, placement: str, seed: int, inflate: float, tick) -> dict:
    from neocloud.sched.placements import placement as placement_named
    from neocloud.sim.inflate import run_inflate

    if inflate <= 0:
        raise NeocloudError(f"--inflate must be above 0, got {inflate:g}")
    res = run_inflate(fleet, [tj.job for tj in trace.jobs], placement_named(placement), inflate=inflate,
                      seed=seed, progress=tick)
    return {
        "policy": policy, "placement": placement, "seed": seed, "trace": trace.name, "fleet": fleet.name,
        "inflate": inflate, "jobs_submitted": res.pods_arrived, "jobs_completed": res.pods_placed,
        "jobs_dropped": res.pods_arrived - res.pods_placed,
        "avg_jct_s": None, "p50_jct_s": None, "p99_jct_s": None, "avg_wait_s": None, "p99_wait_s": None,
        "makespan_s": None, "gpu_utilization": res.final / 100, "wall_s": res.wall_s,
        "events": res.pods_arrived, "allocation_at": res.allocation_at,
    }


def _print_report(report: dict) -> None:
    table = Table(title=f"{report['trace']} on {report['fleet']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in report.items():
        if key == "failures":
            continue
        if key == "allocation_at":
            marks = [k for k in ("50", "80", "100", "110", "120", "130") if k in value]
            value = "  ".join(f"{k}%→{value[k]:.2f}%" for k in marks)
        elif key == "guarantees":
            value = "  ".join(f"{t}: {100 * g['delivered_share']:.2f}% of {g['owed_gpu_h']:,.0f} GPU-h owed"
                              for t, g in value.items())
        elif isinstance(value, float):
            value = f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
        table.add_row(key, str(value))
    console.print(table)
    if "failures" in report:
        _print_failures(report["failures"])


def _print_failures(f: dict) -> None:
    """What failures cost: goodput, lost GPU-hours by cause, node-hours by stage, by job size."""
    table = Table(title=f"failures: {f['failures']} ({f['per_1000_gpu_days']:g} per 1,000 GPU-days)",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key in ("faults", "interruptions", "restarts_in_place", "restart_capped"):
        table.add_row(key, f"{f[key]:,}")
    table.add_row("goodput", f"{100 * f['goodput']:.2f}%")
    table.add_row("ETTR", f"{100 * f['ettr']:.2f}%")
    for what, gpu_h in f["lost_gpu_h"].items():
        table.add_row(f"lost GPU-h: {what}", f"{gpu_h:,.1f}")
    for stage, node_h in f["node_h"].items():
        table.add_row(f"node-h: {stage}", f"{node_h:,.1f}")
    console.print(table)
    sizes = Table(title="by job size")
    for col in ("GPUs", "jobs", "goodput", "ETTR", "interruptions", "restart capped"):
        sizes.add_column(col, justify="right")
    for label, row in f["by_size"].items():
        sizes.add_row(label, f"{row['jobs']:,}", f"{100 * row['goodput']:.2f}%", f"{100 * row['ettr']:.2f}%",
                      f"{row['interruptions']:,}", f"{row['restart_capped']:,}")
    console.print(sizes)


app.add_typer(options.node_app, name="node")
app.add_typer(options.tenant_app, name="tenants")
app.add_typer(options.services_app, name="services")

# These modules add their commands to `app`.
from neocloud.cli import billing as _billing, capacity as _capacity, check as _check, jobs as _jobs, login as _login, nodes as _nodes, service as _service, services as _services, tenants as _tenants  # noqa: E402, F401, I001
