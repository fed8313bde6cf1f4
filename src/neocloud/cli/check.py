"""`neocloud node check`: the burn-in and active health check, run on the node it checks."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from neocloud.cli.main import _progress, console
from neocloud.cli.options import ProfileName, Server, Token, node_app
from neocloud.cli.options import client as _client


@node_app.command("check")
def node_check(
    quick: Annotated[bool, typer.Option("--quick", help="Seconds rather than minutes: smaller sizes, shorter runs.")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    gpu: Annotated[Optional[str], typer.Option(help="Compare with this catalog GPU (default: the one found).")] = None,
    expect_tflops: Annotated[Optional[float], typer.Option(help="Dense matmul TFLOPS each device should reach at "
                                                                "datasheet (overrides the catalog).")] = None,
    expect_memory_gbps: Annotated[Optional[float], typer.Option(help="Memory bandwidth, GB/s, at datasheet.")] = None,
    post: Annotated[Optional[str], typer.Option(help="Post the verdict as this node's active_check signal.")] = None,
    server: Server = None,
    token: Token = None,
    profile: ProfileName = None,
) -> None:
    """Measure what this node delivers (matmul, memory, GPU-to-GPU, all-reduce, NVML health) against its
    GPUs' datasheet; exit 1 if it fails. Without a GPU it runs the same code on the CPU."""
    from neocloud.agent.check import run_check

    with _progress("checking") as bar:
        task = bar.add_task("checking", total=None)
        report = run_check(quick=quick, gpu=gpu, expect_tflops=expect_tflops, expect_memory_gbps=expect_memory_gbps,
                           progress=lambda what: bar.update(task, description=what))
    body = report.to_dict()
    if as_json:
        print(json.dumps(body, indent=2))
    else:
        table = Table("check", "measured", "unit", "datasheet", "needed", "verdict",
                      title=f"{report.node}: {report.device}, {'quick' if quick else 'full'} check in "
                            f"{report.seconds:.1f} s")
        for c in report.checks:
            verdict = "-" if c.ok is None else "[green]pass[/green]" if c.ok else "[red]FAIL[/red]"
            table.add_row(c.name, "-" if c.value is None else f"{c.value:,.4g}", c.unit,
                          "-" if c.expected is None else f"{c.expected:,.4g}",
                          "-" if c.needed is None else f"{c.needed:,.4g}", verdict + (f" ({c.note})" if c.note else ""))
        console.print(table)
        console.print("[green]PASSED[/green]" if report.passed else "[red]FAILED[/red]")
    if post:
        r = _client(server, token, profile).signal(post, {"kind": "active_check", "passed": report.passed, "report": body})
        console.print(f"posted to node {post}: stage {r['stage']}", highlight=False)
    raise typer.Exit(0 if report.passed else 1)
