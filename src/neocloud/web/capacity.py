"""The buildout plan as pictures: an interactive HTML report (self-contained: the chart library is
inlined from the package, so it opens offline) and a PNG fan chart."""

from __future__ import annotations

import datetime as dt
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

from neocloud.errors import NeocloudError
from neocloud.web import templates


def chart_js() -> str:
    return files("neocloud.web").joinpath("static/chart.umd.min.js").read_text(encoding="utf-8")


def fan_chart_js() -> str:
    """The fan chart's script, the dashboard's static file, inlined into the self-contained report."""
    return files("neocloud.web").joinpath("static/fan_chart.js").read_text(encoding="utf-8")


def chart_data(plan: dict[str, Any]) -> str:
    """What the fan chart draws, as JSON safe inside a <script> element."""
    return json.dumps({k: plan[k] for k in ("weekly", "contracted_mw", "target")}).replace("</", "<\\/")


def report_html(plan: dict[str, Any]) -> str:
    risk = sum(c["revenue_at_risk_mean"] for c in plan["contracts"])
    data = chart_data(plan)
    return templates.get_template("capacity.html").render(plan=plan, revenue_at_risk=risk, data=data, chartjs=chart_js(),
                                                        fan_chart=fan_chart_js())


CHARTS_MISSING = ("PNG charts need matplotlib, which the charts extra installs: pip install 'neocloud[charts]' "
                  "(in a checkout: .venv/bin/pip install -e '.[charts]')")


def require_charts() -> None:
    """Fail at once, before any work, where the PNG chart could not be drawn (no matplotlib)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise NeocloudError(CHARTS_MISSING) from None


def fan_chart_png(plan: dict[str, Any], path: Path) -> None:
    """MW live (P10-P90 band, P50) against the target and the contracted power; GPUs live below."""
    require_charts()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    weeks = plan["weekly"]
    dates = [dt.date.fromisoformat(w["date"]) for w in weeks]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True, height_ratios=(3, 2))
    for ax, key, unit in ((top, "mw", "MW of IT power"), (bottom, "gpus", "GPUs")):
        ax.fill_between(dates, [w[key]["p10"] for w in weeks], [w[key]["p90"] for w in weeks], color="#2563eb",
                        alpha=0.18, linewidth=0, label="P10-P90")
        ax.plot(dates, [w[key]["p50"] for w in weeks], color="#2563eb", linewidth=2, label="P50")
        ax.set_ylabel(unit)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.grid(alpha=0.3)
    top.step(dates, plan["contracted_mw"], where="post", color="#b3261e", linestyle="--", label="contracted")
    target = plan["target"]
    top.scatter([dt.date.fromisoformat(target["by"])], [target["mw"]], color="#16a34a", zorder=5,
                label=f"target {target['mw']:,.0f} MW ({100 * target['probability']:.0f}%)")
    for b in plan.get("backtest", []):
        top.scatter([dt.date.fromisoformat(b["date"])], [b["reported_mw"]], marker="x", color="black", zorder=6,
                    label=f"reported {b['reported_mw']:,.0f} MW (P{100 * b['percentile_of_reported']:.0f})")
    top.set_title(f"Buildout as of {plan['as_of']}: {plan['runs']:,} scenarios")
    top.legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
