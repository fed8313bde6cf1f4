"""`neocloud capacity plan`: the buildout pipeline through the Monte Carlo, as tables, JSON, charts."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from neocloud.cli.main import _progress, app, console
from neocloud.errors import NeocloudError

capacity_app = typer.Typer(help="Capacity planning: megawatts, delays, and what a slip costs.", no_args_is_help=True)
app.add_typer(capacity_app, name="capacity")


@capacity_app.command("plan")
def capacity_plan(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML file (see docs/capacity.md).")],
    runs: Annotated[int, typer.Option(min=100, max=10_000_000, help="Scenarios.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Same seed, same scenarios.")] = 0,
    independent: Annotated[bool, typer.Option(help="Each project draws its own risks (no correlated shocks).")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Write the plan as JSON here.")] = None,
    html: Annotated[Optional[Path], typer.Option(help="Write an interactive HTML report here.")] = None,
    png: Annotated[Optional[Path], typer.Option(help="Write the fan chart as PNG here (needs neocloud[charts]).")] = None,
) -> None:
    """Play the pipeline's delays out: MW and GPUs live, the target, contracts at risk, capex."""
    from neocloud.capacity.montecarlo import simulate
    from neocloud.capacity.plan import summarise
    from neocloud.capacity.schema import load_pipeline

    for option, path in (("--out", out), ("--html", html), ("--png", png)):  # before the Monte Carlo, not after
        if path is not None:
            _can_write(option, path)
    if png:
        from neocloud.web.capacity import require_charts

        require_charts()
    p = load_pipeline(pipeline)
    with _progress("simulating") as bar:
        task = bar.add_task("", total=len(p.projects))
        scenarios = simulate(p, runs, seed, correlated=not independent,
                             progress=lambda done, total: bar.update(task, completed=done))
    plan = summarise(p, scenarios)
    _print(plan)
    if out:
        out.write_text(json.dumps(plan, indent=1) + "\n", encoding="utf-8")
        console.print(f"wrote {out}")
    if html:
        from neocloud.web.capacity import report_html

        html.write_text(report_html(plan), encoding="utf-8")
        console.print(f"wrote {html}")
    if png:
        from neocloud.web.capacity import fan_chart_png

        fan_chart_png(plan, png)
        console.print(f"wrote {png}")


def _can_write(option: str, path: Path) -> None:
    """An output the plan could not be written to, refused before the work rather than after it."""
    folder = path.parent
    if path.is_dir():
        raise NeocloudError(f"{option} {path}: is a directory; give a file name")
    if not folder.is_dir():
        raise NeocloudError(f"{option} {path}: there is no directory {folder}; create it or write elsewhere")
    if not os.access(folder, os.W_OK):
        raise NeocloudError(f"{option} {path}: the directory {folder} is not writable; write elsewhere")


def _print(plan: dict) -> None:
    t = plan["target"]
    console.print(f"[bold]{plan['live_mw_at_start']:,.0f} MW live[/bold] as of {plan['as_of']}, "
                  f"{plan['pipeline_mw']:,.0f} MW in the pipeline; {plan['runs']:,} scenarios")
    console.print(f"P({t['mw']:,.0f} MW by {t['by']}) = [bold]{100 * t['probability']:.1f}%[/bold]  "
                  f"(P10/P50/P90 then: {t['mw_at_date']['p10']:,.0f} / {t['mw_at_date']['p50']:,.0f} / "
                  f"{t['mw_at_date']['p90']:,.0f} MW)")
    for b in plan.get("backtest", []):
        console.print(f"backtest: {b['reported_mw']:,.0f} MW reported for {b['date']} is the plan's "
                      f"P{100 * b['percentile_of_reported']:.0f}; {100 * b['probability_at_least_reported']:.1f}% "
                      f"of scenarios reach it ({b['source']})")
    table = Table("quarter", "MW P10", "MW P50", "MW P90", "capex $M", "revenue $M", "DSCR",
                  title="By quarter (capex and revenue expected)")
    for q, f in zip(plan["quarterly"], plan["finance"]):
        table.add_row(q["quarter"], *(f"{q['mw'][k]:,.0f}" for k in ("p10", "p50", "p90")),
                      f"{f['capex'] / 1e6:,.0f}", f"{f['revenue'] / 1e6:,.0f}", "—" if f["dscr"] is None else f"{f['dscr']:.2f}")
    console.print(table)
    table = Table("customer", "MW", "start", "short at start", "revenue at risk $M (mean)", title="Contracts")
    for c in plan["contracts"]:
        table.add_row(c["customer"], f"{c['mw']:,.0f}", c["start"], f"{100 * c['short_at_start']:.0f}%",
                      f"{c['revenue_at_risk_mean'] / 1e6:,.0f}")
    console.print(table)
