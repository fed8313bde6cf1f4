"""From scenarios to a plan a person can act on: what is live when, whether the target is met,
which contracts a slip puts at risk and what it costs, and how the money flows.

Percentiles are of megawatts (or GPUs) live: P10 is the pessimistic figure (nine scenarios in ten
do better), P90 the optimistic one. Contracts are served from the whole fleet in the order they
start, so a shortfall falls on the latest contracts first.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from neocloud.capacity.montecarlo import WEEK, Scenarios
from neocloud.capacity.pipeline import Actual, Pipeline, gpus_for_mw

QUARTER_WEEKS = 13


def slip_share(slip_mw: float, fleet_mw: float, weeks: float = 1.0, period_weeks: float = QUARTER_WEEKS) -> float:
    """The denominator effect: `slip_mw` dark for `weeks`, as a share of a fleet's MW-weeks over a
    period. The same slip is a smaller share of a bigger fleet."""
    return slip_mw * weeks / (fleet_mw * period_weeks) if fleet_mw > 0 else math.inf


def _quarter_ends(pipeline: Pipeline) -> list[dt.date]:
    ends: list[dt.date] = []
    year, q = pipeline.as_of.year, (pipeline.as_of.month - 1) // 3
    while True:
        q += 1
        if q > 4:
            year, q = year + 1, 1
        first_of_next = dt.date(year + (q == 4), 1 if q == 4 else 3 * q + 1, 1)
        end = first_of_next - dt.timedelta(days=1)
        if pipeline.day(end) > pipeline.horizon:
            return ends
        if end > pipeline.as_of:
            ends.append(end)


def _label(end: dt.date) -> str:
    return f"{end.year}Q{(end.month - 1) // 3 + 1}"


def summarise(pipeline: Pipeline, sc: Scenarios) -> dict[str, Any]:
    """The plan as plain data (JSON-ready)."""
    runs, weeks = sc.runs, int(pipeline.horizon // WEEK)
    mw = np.array([p.mw for p in pipeline.projects])
    gpus = np.array([gpus_for_mw(p.mw, p.gpu, pipeline.overhead) for p in pipeline.projects])
    base_gpus = sum(gpus_for_mw(s.live_mw, s.gpu, pipeline.overhead) for s in pipeline.sites)
    # Week w counts what is live by its end (day 7w); a project live later than the horizon adds nothing.
    week_of = np.clip(np.ceil(sc.live / WEEK), 0, weeks + 1).astype(np.int64)
    rows = np.arange(runs)
    mw_live = np.zeros((runs, weeks + 2), dtype=np.float32)
    gpus_live = np.zeros((runs, weeks + 2), dtype=np.float32)
    for i in range(len(pipeline.projects)):
        mw_live[rows, week_of[:, i]] += mw[i]
        gpus_live[rows, week_of[:, i]] += gpus[i]
    mw_live = pipeline.live_mw + np.cumsum(mw_live, axis=1)[:, : weeks + 1]
    gpus_live = base_gpus + np.cumsum(gpus_live, axis=1)[:, : weeks + 1]
    mw_pct = np.percentile(mw_live, [10, 50, 90], axis=0)
    gpu_pct = np.percentile(gpus_live, [10, 50, 90], axis=0)
    dates = [pipeline.as_of + dt.timedelta(days=7 * w) for w in range(weeks + 1)]
    weekly = [{"week": w, "date": dates[w].isoformat(),
               "mw": {"p10": mw_pct[0, w], "p50": mw_pct[1, w], "p90": mw_pct[2, w]},
               "gpus": {"p10": int(gpu_pct[0, w]), "p50": int(gpu_pct[1, w]), "p90": int(gpu_pct[2, w])}}
              for w in range(weeks + 1)]

    def live_at(day: float) -> np.ndarray:
        return np.asarray(pipeline.live_mw + (sc.live <= day) @ mw, dtype=np.float64)

    quarter_ends = _quarter_ends(pipeline)
    quarterly: list[dict[str, Any]] = []
    fleet_p50: list[float] = []  # MW live at each quarter's end, P50: the denominator below
    for end in quarter_ends:
        at = live_at(pipeline.day(end))
        p10, p50, p90 = np.percentile(at, [10, 50, 90])
        fleet_p50.append(float(p50))
        quarterly.append({"quarter": _label(end), "end": end.isoformat(), "mw": {"p10": p10, "p50": p50, "p90": p90}})
    at_target = live_at(pipeline.target_by)
    target = {"mw": pipeline.target_mw, "by": pipeline.date(pipeline.target_by).isoformat(),
              "probability": float(np.mean(at_target >= pipeline.target_mw)),
              "mw_at_date": dict(zip(("p10", "p50", "p90"), np.percentile(at_target, [10, 50, 90]).tolist()))}

    contracts, revenue_week = _contracts(pipeline, mw_live)
    price = _blended_price(pipeline)
    projects = []
    for i, p in enumerate(pipeline.projects):
        slip = (sc.live[:, i] - p.planned_live) / WEEK
        p50, p90 = np.percentile(sc.live[:, i], [50, 90])
        projects.append({
            "project": p.name, "site": p.site, "mw": p.mw, "gpu": p.gpu, "gpus": int(gpus[i]),
            "planned_live": pipeline.date(p.planned_live).isoformat(),
            "live_p50": pipeline.date(p50).isoformat(), "live_p90": pipeline.date(p90).isoformat(),
            "slip_weeks_mean": float(np.mean(np.maximum(slip, 0))),
            "on_time": float(np.mean(slip <= 0)),
            "revenue_per_week_of_delay": p.mw * price / 52,
        })
    slip_mw = float(np.median(mw)) if len(mw) else 0.0
    denominator = [{"quarter": _label(end), "fleet_mw_p50": fleet, "slip_mw": slip_mw,
                    "share_of_fleet": slip_mw / fleet if fleet else None,
                    "share_of_quarter": slip_share(slip_mw, fleet) if fleet else None}
                   for end, fleet in zip(quarter_ends, fleet_p50)]
    finance = _finance(pipeline, sc, gpus, quarter_ends, revenue_week)
    out = {
        "as_of": pipeline.as_of.isoformat(), "runs": runs, "seed": sc.seed, "correlated": sc.correlated,
        "live_mw_at_start": pipeline.live_mw, "pipeline_mw": float(mw.sum()),
        "target": target, "weekly": weekly, "quarterly": quarterly, "projects": projects,
        "contracts": contracts, "contracted_mw": [_owed(pipeline, 7 * w) for w in range(weeks + 1)],
        "denominator": denominator, "finance": finance,
    }
    if pipeline.actuals:
        out["backtest"] = [_backtest(pipeline, live_at, a) for a in pipeline.actuals]
    return out


def _owed(pipeline: Pipeline, day: float) -> float:
    return sum(c.mw for c in pipeline.contracts if c.start <= day < c.end)


def _blended_price(pipeline: Pipeline) -> float:
    """Dollars per MW-year of the book, weighted by MW: what a megawatt earns once sold."""
    total = sum(c.mw for c in pipeline.contracts)
    return sum(c.mw * c.usd_per_mw_year for c in pipeline.contracts) / total if total else 0.0


def _contracts(pipeline: Pipeline, mw_live: np.ndarray) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Each contract's shortfall (MW owed but not live), served in start order from the whole fleet;
    and the revenue earned per week, averaged over scenarios."""
    runs, weeks = mw_live.shape
    days = 7.0 * np.arange(weeks)
    before = np.zeros(weeks, dtype=np.float32)  # MW owed to contracts that started earlier
    revenue = np.zeros(weeks)
    out = []
    for c in sorted(pipeline.contracts, key=lambda c: (c.start, c.customer)):
        active = np.flatnonzero((days >= c.start) & (days < c.end))
        short_weeks = np.zeros(runs)
        short_at_start = 0.0
        if len(active):
            a, b = active[0], active[-1] + 1  # weeks in force: one run of them
            served = np.clip(mw_live[:, a:b] - before[a:b], 0, c.mw)
            revenue[a:b] += served.mean(axis=0) * c.usd_per_mw_year / 52
            short_weeks = c.mw * (b - a) - served.sum(axis=1, dtype=np.float64)  # MW-weeks
            short_at_start = float(np.mean(served[:, 0] < c.mw - 1e-6))
            before[a:b] += c.mw
        out.append({
            "customer": c.customer, "mw": c.mw, "start": pipeline.date(c.start).isoformat(),
            "end": pipeline.date(c.end).isoformat(), "usd_per_mw_year": c.usd_per_mw_year,
            "short_at_start": short_at_start,
            "short_mw_weeks_mean": float(short_weeks.mean()),
            "revenue_at_risk_mean": float(short_weeks.mean() * c.usd_per_mw_year / 52),
            "revenue_at_risk_p90": float(np.percentile(short_weeks, 90) * c.usd_per_mw_year / 52),
        })
    return out, revenue


def _finance(pipeline: Pipeline, sc: Scenarios, gpus: np.ndarray, quarter_ends: list[dt.date],
             revenue_week: np.ndarray) -> list[dict[str, Any]]:
    """Expected capex, its funding and the debt it services, per quarter."""
    f = pipeline.finance
    bounds = np.array([pipeline.day(e) for e in quarter_ends])
    nq = len(bounds)
    capex = np.zeros(nq + 1)
    owned = {s.name for s in pipeline.sites if s.kind == "owned"}
    for i, p in enumerate(pipeline.projects):
        hw = gpus[i] * f.gpu_capex.get(p.gpu, 0.0)
        capex += np.bincount(np.searchsorted(bounds, sc.hardware[:, i]), minlength=nq + 1)[: nq + 1] * hw / sc.runs
        if p.site in owned:
            facility = p.mw * f.facility_capex_per_mw
            capex += np.bincount(np.searchsorted(bounds, sc.building[:, i]), minlength=nq + 1)[: nq + 1] * facility / sc.runs
    week_quarter = np.searchsorted(bounds, 7.0 * np.arange(len(revenue_week)))
    revenue = np.bincount(week_quarter, weights=revenue_week, minlength=nq + 1)
    out: list[dict[str, Any]] = []
    outstanding = 0.0
    draws: list[float] = []
    term = max(round(f.debt_years * 4), 1)  # quarters over which each draw is repaid, from the next one
    for q, end in enumerate(quarter_ends):
        debt = capex[q] * f.debt_share
        interest = outstanding * f.debt_rate / 4
        repaid = sum(d / term for d in draws[-term:])
        outstanding += debt - repaid
        draws.append(debt)
        service = interest + repaid
        out.append({"quarter": _label(end), "capex": capex[q], "debt_drawn": debt, "equity": capex[q] - debt,
                    "debt_outstanding": outstanding, "debt_service": service, "revenue": revenue[q],
                    "dscr": revenue[q] * f.ebitda_margin / service if service else None})
    return out


def _backtest(pipeline: Pipeline, live_at: Callable[[float], np.ndarray], actual: Actual) -> dict[str, Any]:
    at = live_at(actual.day)
    return {"date": pipeline.date(actual.day).isoformat(), "reported_mw": actual.mw, "source": actual.source,
            "plan_mw": dict(zip(("p10", "p50", "p90"), np.percentile(at, [10, 50, 90]).tolist())),
            "probability_at_least_reported": float(np.mean(at >= actual.mw)),
            "percentile_of_reported": float(np.mean(at < actual.mw))}
